"""GET /v1/pumps read once per run, and the controllers' diff against what was loaded.

A per-pump map (the `controllers` resource's `pumps` state, layout in `state.py`) instead of one
high-water mark on `last_seen`: a pump missed by a shifting listing, a clock reset that moves
`last_seen` backwards, and pumps sharing one `last_seen` are then all exact. dlt commits state
only when the whole extract succeeds and ships it in the same load package as the rows, so the
map never gets ahead of the data that reached the destination.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from . import records
from .client import PortalClient
from .errors import InsufficientScope
from .pagination import Listing
from .progress import Progress
from .report import RunReport
from .state import FINGERPRINT, LAST_SEEN, VISIBLE

logger = logging.getLogger(__name__)


@dataclass
class PumpListing:
    """GET /v1/pumps as read this run, before any diff: every resource that needs the pumps
    compares it with its own state."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # pump_id -> the raw row
    complete: bool = False
    problems: list[str] = field(default_factory=list)
    statistics: dict[str, Any] | None = None
    readable: bool = True
    _seen: dict[str, str | None] = field(default_factory=dict, repr=False)

    def seen(self, pump_id: str) -> str | None:
        """The pump's `last_seen` as state stores it (ISO 8601, UTC); parsed once per run, for
        whichever resources ask."""
        if pump_id not in self._seen:
            stamp = records.to_timestamp(self.rows[pump_id].get("last_seen"))
            self._seen[pump_id] = records.iso(stamp)
        return self._seen[pump_id]


@dataclass
class ListingChanges:
    """The controllers listing diffed against the `controllers` resource's state."""

    changed: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    visibility: list[dict[str, Any]] = field(default_factory=list)


def read_pump_listing(client: PortalClient, report: RunReport, progress: Progress) -> PumpListing:
    """Every page of GET /v1/pumps, walked again while it moves under the walk (new pumps at its
    front, removals): the first walk that saw it hold still, else the union of the walks,
    flagged incomplete."""
    result = PumpListing()
    read = client.pump_listing()
    statistics_walk = 0
    try:
        for page in read.pages:
            statistics = page.body.get("statistics")
            if isinstance(statistics, dict) and page.walk > statistics_walk:
                # The first statistics of each walk; the last walk's are the listing's.
                result.statistics, statistics_walk = statistics, page.walk
            listed, total = read.listed()
            progress(
                "controllers: page %d (walk %d), %d pumps listed of %s",
                page.number,
                page.walk,
                listed,
                total,
            )
    except InsufficientScope as error:
        report.skip_resource(
            "controllers", error, "the API key cannot read GET /v1/pumps (needs read:pumps)"
        )
        result.readable = False
        return result
    for raw in read.rows():
        pump_id = records.to_text(raw.get("pump_id"))
        if pump_id is None or not pump_id.strip():
            report.warn(f"a listing row without pump_id was ignored: {raw!r:.200}")
            continue
        # A pump seen twice (one shifting walk, or the union of walks): the later copy wins.
        result.rows[pump_id] = raw
    walk: Listing = read.listing
    if walk.walks > 1:
        logger.info("GET /v1/pumps took %d walks (it moved while paged)", walk.walks)
    result.complete, result.problems = walk.complete, list(walk.problems)
    report.listing_complete = walk.complete
    report.pumps_listed = len(result.rows)
    return result


def controller_changes(
    listing: PumpListing, pumps: dict[str, list[Any]], run_at: dt.datetime, report: RunReport
) -> ListingChanges:
    """Diff the listing against `pumps` (the controllers resource's state) and update it: rows
    that changed, new `last_seen` observations, pumps that appeared, vanished or came back."""
    result = ListingChanges()
    reported = 0
    for pump_id, raw in listing.rows.items():
        known = pumps.get(pump_id)
        # The raw row's hash first: an unchanged pump (most of them, most runs) costs one hash
        # and no coercion.
        mark = records.fingerprint(raw)
        if known is not None and known[FINGERPRINT] == mark and known[VISIBLE]:
            continue
        row = records.coerce(raw, records.CONTROLLER_FIELDS)
        row["pump_id"] = pump_id
        seen = listing.seen(pump_id)
        if known is None or known[LAST_SEEN] != seen:
            reported += 1
            if row.get("last_seen") is not None:
                observation = {k: row[k] for k in records.OBSERVATION_FIELDS if k in row}
                observation["observed_at"] = run_at
                result.observations.append(observation)
        if known is None or known[FINGERPRINT] != mark:
            result.changed.append({**row, "listed_at": run_at})
        if known is None or not known[VISIBLE]:
            result.visibility.append(_visibility_row(pump_id, True, run_at))
            if known is not None:
                report.pumps_returned += 1
        pumps[pump_id] = [seen, mark, True]
    if listing.complete:
        for pump_id, known in pumps.items():
            if known[VISIBLE] and pump_id not in listing.rows:
                known[VISIBLE] = False
                result.visibility.append(_visibility_row(pump_id, False, run_at))
                report.pumps_vanished += 1
    elif listing.problems:
        report.warn(
            "controllers listing was not complete, so no pump is marked vanished this run: "
            + "; ".join(listing.problems)
        )
    report.pumps_changed = reported
    report.controllers_updated = len(result.changed)
    return result


def _visibility_row(pump_id: str, visible: bool, run_at: dt.datetime) -> dict[str, Any]:
    return {"pump_id": pump_id, "changed_at": run_at, "is_visible": visible}
