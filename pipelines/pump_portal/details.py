"""Per-pump detail calls (GET /v1/pumps/:pumpId/metadata and /summary): which pumps are due, and
the fan-out that fetches them.

Each detail resource keeps its own `fetched` state (pump_id -> [epoch seconds fetched, the
`last_seen` it was fetched at]), so a resource loaded alone or reset by `drop` decides for
itself what to fetch.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import statistics
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


# Run times a detail resource remembers, to know how often it runs.
RUNS_KEPT = 8


def pumps_due(
    listing: PumpListing,
    fetched: dict[str, list[Any]],
    run_at: dt.datetime,
    max_age: dt.timedelta,
    pace: dict[str, Any] | None = None,
) -> list[str]:
    """Listed pumps never fetched or fetched at another `last_seen` (the pump reported since),
    then those of the rest whose turn it is to be refreshed, oldest first.

    Refreshing every pump when its details reach `max_age` refetched the whole fleet in one run
    a day (the first sync fetched them all at once) while the runs around it made a few calls.
    Instead each run refreshes the oldest `refresh_share` of the others: the slowest steady pace
    that still refreshes each pump before its details pass `max_age`, as long as the runs keep
    their schedule (a run late by some minutes may find details that many minutes past the
    maximum, as before). `pace` is the resource's state for it: its
    last run times (`runs`, epoch seconds) and the fraction of a pump owed (`carry`); updated."""
    pace = pace if pace is not None else {}
    now = run_at.timestamp()
    due: list[str] = []
    waiting: list[tuple[float, str]] = []
    for pump_id in listing.rows:
        entry = fetched.get(pump_id)
        if entry is None or entry[FETCHED_SEEN] != listing.seen(pump_id):
            due.append(pump_id)
        else:
            waiting.append((entry[FETCHED_AT], pump_id))
    waiting.sort()
    runs: list[float] = pace.get("runs") or []
    turn, pace["carry"] = refresh_share(
        [now - at for at, _ in waiting],
        *run_intervals(runs, now),
        max_age.total_seconds(),
        carry=float(pace.get("carry") or 0.0),
    )
    pace["runs"] = sorted({*runs, now})[-RUNS_KEPT:]
    return due + [pump_id for _, pump_id in waiting[:turn]]


def refresh_share(
    ages: list[float], elapsed: float, interval: float, max_age: float, carry: float = 0.0
) -> tuple[int, float]:
    """How many of the pumps of `ages` (seconds since their details were fetched, oldest first)
    to refresh in a run `elapsed` seconds after the last one, on a schedule of one run every
    `interval`, and the fraction of a pump still owed after it.

    A pump of age `a` can wait `(max_age - a) // interval` more runs and still be refreshed at
    most `max_age` old; the pump of rank r (0 = oldest) needs r + 1 refreshes to fit in those
    runs and this one, so the pace is the largest (r + 1) / (runs left + 1), in pumps per run.
    A run sooner than the schedule (started by hand, or twice at one instant) owes its part of
    that; a fraction of a pump is carried to the next run rather than rounded up every run. A
    pump that cannot wait a run goes now. With no interval known yet (the second run) only what
    has reached `max_age` is due."""
    if interval <= 0:
        return sum(1 for age in ages if age >= max_age), 0.0
    pace, urgent = 0.0, 0
    for rank, age in enumerate(ages):
        runs_left = math.floor((max_age - age) / interval)
        if runs_left <= 0:
            urgent = rank + 1
        else:
            pace = max(pace, (rank + 1) / (runs_left + 1))
    owed = pace * min(elapsed, interval) / interval + carry
    turn = max(urgent, math.floor(owed + 1e-9))
    # What the urgent pumps took beyond the pace pays the fraction owed.
    return turn, (max(owed - turn, 0.0) if ages else 0.0)


def run_intervals(runs: list[float], now: float) -> tuple[float, float]:
    """(seconds since the last run, seconds between runs as the schedule keeps them): the median
    gap between the last `RUNS_KEPT` runs and this one, so that neither a run started by hand
    between two scheduled ones nor a day the job did not run changes the pace. (0, 0) on the
    first run."""
    times = sorted(t for t in runs if t <= now) + [now]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return (gaps[-1], statistics.median(gaps)) if gaps else (0.0, 0.0)


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
