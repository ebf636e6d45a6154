"""Simulated clock and the API's timestamp format.

The emulator never reads the wall clock for API-visible times: "now" only moves when a test calls
``advance``, so activity windows, "today" and report timestamps are reproducible.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2025, 3, 20, 10, 0, 0, tzinfo=UTC)
"""Where the simulated clock starts unless ``Fleet.generate(start=...)`` says otherwise."""


def iso_ms(moment: datetime) -> str:
    """Format as the reference does: UTC, millisecond precision, trailing ``Z``."""
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    # isoformat is C code (this is on the hot path of every listing row); drop its "+00:00".
    return utc.isoformat(timespec="milliseconds")[:-6] + "Z"


def ensure_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC so callers cannot mix naive and aware values by accident."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class SimClock:
    """A thread-safe, manually advanced clock (UTC, tz-aware)."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self._now = ensure_utc(start)
        self._lock = threading.Lock()

    @property
    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward (or backward, for negative values) and return the new time."""
        with self._lock:
            self._now = self._now + timedelta(seconds=seconds)
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = ensure_utc(moment)
