"""Per-pump detail calls (GET /v1/pumps/:pumpId/metadata and /summary): which pumps are due, and
the fan-out that fetches them.

Each detail resource keeps its own `fetched` state (pump_id -> [epoch seconds fetched, the
`last_seen` it was fetched at]), so a resource loaded alone or reset by `drop` decides for
itself what to fetch.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any

from .controllers import PumpListing
from .errors import InsufficientScope, ItemForbidden, ItemNotFound, NoDelegatedUsers
from .fan_out import FailureStreak, FanOut
from .progress import Progress
from .report import RunReport
from .state import FETCHED_AT, FETCHED_SEEN

logger = logging.getLogger(__name__)

# Rows go to dlt in lists: dlt handles a list as one item.
BATCH_SIZE = 100


def pumps_due(
    listing: PumpListing,
    fetched: dict[str, list[Any]],
    run_at: dt.datetime,
    max_age: dt.timedelta,
) -> list[str]:
    """Listed pumps never fetched, fetched at another `last_seen` (the pump reported since), or
    fetched longer ago than `max_age`."""
    oldest = (run_at - max_age).timestamp()
    due = []
    for pump_id in listing.rows:
        entry = fetched.get(pump_id)
        if (
            entry is None
            or entry[FETCHED_AT] <= oldest
            or entry[FETCHED_SEEN] != listing.seen(pump_id)
        ):
            due.append(pump_id)
    return due


def fetch_details(
    resource: str,
    due: list[str],
    listing: PumpListing,
    fetched: dict[str, list[Any]],
    fetch_row: Callable[[str], dict[str, Any]],
    *,
    run_at: dt.datetime,
    fan_out: FanOut,
    failures: FailureStreak,
    report: RunReport,
    progress: Progress,
) -> Iterator[list[dict[str, Any]]]:
    """Fetch the `due` pumps' rows (`fetch_row` runs in the pool: HTTP and coercion); 403/404
    skip that pump and the run goes on. `fetched` records when, and at which `last_seen`, each
    pump was fetched; a pump whose call failed after its retries is left unfetched."""
    # Epoch seconds: compared for every pump on every run, parsed never.
    stamp = int(run_at.timestamp())
    logger.info("%s: %d detail calls due", resource, len(due))
    done = 0
    batch: list[dict[str, Any]] = []
    for pump_id, outcome in fan_out.map_unordered(fetch_row, due):
        done += 1
        report.detail_calls += 1
        if isinstance(outcome, ItemNotFound):
            # The reference's 404 on a pump's details: "no metadata/summary for that pump", the
            # normal state of a pump that has never reported, not a failure.
            report.no_data_yet(resource, pump_id, outcome)
            fetched[pump_id] = [stamp, listing.seen(pump_id)]
            continue
        if isinstance(outcome, ItemForbidden):
            report.skip_item(resource, "pump", pump_id, outcome)
            fetched[pump_id] = [stamp, listing.seen(pump_id)]
            continue
        if isinstance(outcome, InsufficientScope | NoDelegatedUsers):
            report.skip_resource(resource, outcome, "the API key cannot read it")
            return
        if failures.skips(outcome):
            report.skip_item(resource, "pump", pump_id, outcome)
            fetched.pop(pump_id, None)  # never fetched, as far as the next run knows
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        failures.succeeded()
        fetched[pump_id] = [stamp, listing.seen(pump_id)]
        batch.append(outcome)
        if len(batch) >= BATCH_SIZE:
            yield batch
            batch = []
        progress(
            "%s: %d of %d detail calls done, %d rate-limit waits",
            resource,
            done,
            len(due),
            report.client_stats.rate_limited if report.client_stats else 0,
        )
    if batch:
        yield batch
    progress("%s: %d of %d detail calls done", resource, done, len(due), force=True)
