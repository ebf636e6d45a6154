"""Cache of JSON-encoded listing rows, so repeated listing pages skip rendering and encoding.

Encoding dominates a 100-row page (~1 ms of floats and strings), so each row's encoded form is
kept per (pump id, is_owner) and reused while the pump's revision and derived status are unchanged
(the status is the only part of a row that depends on the simulated now).
"""

from __future__ import annotations

import json
from datetime import datetime

from . import render
from .model import Pump


class RowCache:
    """Not locked itself: ``Fleet`` uses it under ``Fleet.lock``."""

    def __init__(self) -> None:
        self._revisions: dict[str, int] = {}
        self._rows: dict[tuple[str, bool], tuple[tuple[int, str], str]] = {}

    def bump(self, pump_id: str) -> None:
        """The pump changed: its cached rows are stale."""
        self._revisions[pump_id] = self._revisions.get(pump_id, 0) + 1

    def clear(self) -> None:
        self._rows.clear()

    def encoded_row(self, pump: Pump, is_owner: bool, now: datetime) -> str:
        stamp = (self._revisions.get(pump.pump_id, 0), render.listing_status(pump, now))
        key = (pump.pump_id, is_owner)
        hit = self._rows.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        row = render.listing_row(pump, is_owner, now)
        text = json.dumps(row, separators=(",", ":"), ensure_ascii=False)
        self._rows[key] = (stamp, text)
        return text
