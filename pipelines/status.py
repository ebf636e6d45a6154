"""`pump-portal status`: the last runs, the data's freshness, and an exit code a monitor can use.

The last runs come from the deployment's run journal, which every run writes however it ends
(a locked destination or a signal included), merged with `sync_runs` in the warehouse. The
data's freshness comes from the warehouse: on DuckDB the published copy (or the working file)
read-only, so status never takes the lock a running sync needs; on other destinations the
pipeline's SQL client.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pendulum
from dlt.destinations.sql_client import SqlClientBase

from .console import say
from .deployment import SyncSettings
from .run_journal import RunJournal
from .runner import make_pipeline
from .warehouse import working_file

EXIT_OK, EXIT_STALE = 0, 11

logger = logging.getLogger(__name__)

RUN_COLUMNS = (
    "run_id",
    "started_at",
    "finished_at",
    "duration_s",
    "outcome",
    "failed_step",
    "error",
    "pumps_listed",
    "pumps_changed",
    "detail_calls",
    "items_skipped",
    "requests",
    "rate_limited_429s",
)
LAST_RUNS = "select {columns} from {dataset}.sync_runs order by started_at desc limit 20"
FRESHNESS = """
select (select max(last_seen) from {dataset}.controllers),
       (select max(snapshot_at) from {dataset}.fleet_snapshots)
"""
GOOD = ("success", "partial")


def command_status(args: argparse.Namespace) -> int:
    settings = SyncSettings.from_config()
    pipeline = make_pipeline()
    threshold = args.max_age_minutes
    if threshold is None:
        threshold = settings.max_staleness_minutes
    try:
        with open_warehouse(pipeline, settings) as warehouse:
            fresh = read_freshness(pipeline, warehouse, threshold)
    except Exception as error:  # noqa: BLE001 - no warehouse yet is a state, not a crash
        logger.debug("no warehouse to read yet", exc_info=error)
        fresh = read_freshness(pipeline, None, threshold)
    runs = fresh.runs
    if not runs:
        say("no sync has been recorded yet")
        return EXIT_STALE
    say("last runs (newest first):")
    say(
        "  started_at                  secs  outcome      listed changed details skipped "
        "requests 429s"
    )
    for run in runs[:5]:
        say(
            f"  {format_time(run.get('started_at')):<26} {run.get('duration_s') or 0:>6.1f}  "
            f"{run.get('outcome') or '?':<11} {run.get('pumps_listed') or 0:>6} "
            f"{run.get('pumps_changed') or 0:>7} {run.get('detail_calls') or 0:>7} "
            f"{run.get('items_skipped') or 0:>7} {run.get('requests') or 0:>8} "
            f"{run.get('rate_limited_429s') or 0:>4}"
        )
    say(f"latest last_seen:        {format_time(fresh.latest_seen)}")
    say(f"latest fleet snapshot:   {format_time(fresh.latest_snapshot)}")
    say(f"last successful run end: {format_time(fresh.last_good)}")
    if fresh.problems:
        say("STALE: " + "; ".join(fresh.problems))
        return EXIT_STALE
    say(f"fresh (threshold {threshold:g} minutes)")
    return EXIT_OK


@dataclass(frozen=True)
class Warehouse:
    """The warehouse opened for reading: `rows(sql)` runs a select; `duckdb_file` is the DuckDB
    file read (None on other destinations)."""

    rows: Callable[[str], list[tuple[Any, ...]]]
    duckdb_file: Path | None


@contextmanager
def open_warehouse(pipeline: dlt.Pipeline, settings: SyncSettings) -> Iterator[Warehouse]:
    """On DuckDB the published copy (or the working file) read-only, so a reader never takes the
    lock a running sync needs; on other destinations the pipeline's SQL client."""
    working = working_file(pipeline)
    if working is not None:
        published = Path(settings.publish_to) if settings.publish_to else None
        path = published if published is not None and published.exists() else working
        logger.debug("reading the warehouse %s", path)
        with duckdb.connect(str(path), read_only=True) as connection:
            yield Warehouse(lambda sql: connection.execute(sql).fetchall(), path)
    else:
        logger.debug("reading the warehouse on %s", pipeline.destination.destination_name)
        with pipeline.sql_client() as client:
            yield Warehouse(lambda sql: [tuple(row) for row in _select(client, sql)], None)


@dataclass(frozen=True)
class Freshness:
    """The last runs (newest first; the journal merged with `sync_runs`), the data's latest
    times, and why it counts as stale (no problems: fresh)."""

    runs: list[dict[str, Any]]
    latest_seen: Any
    latest_snapshot: Any
    last_good: dt.datetime | None
    threshold_minutes: float
    problems: tuple[str, ...]


def read_freshness(
    pipeline: dlt.Pipeline, warehouse: Warehouse | None, threshold_minutes: float
) -> Freshness:
    """What `status` judges: `warehouse` None (or without tables yet) leaves the journal alone."""
    journal = RunJournal.beside(pipeline.pipelines_dir, pipeline.pipeline_name)
    stored: list[dict[str, Any]] = []
    latest_seen = latest_snapshot = None
    if warehouse is not None:
        try:
            stored, (latest_seen, latest_snapshot) = _query(pipeline, warehouse)
        except Exception as error:  # noqa: BLE001 - no tables yet is a state, not a crash
            logger.debug("nothing to read in the warehouse yet", exc_info=error)
    runs = _merge(journal.runs(), stored)
    good = [_time(run.get("finished_at")) for run in runs if run.get("outcome") in GOOD]
    last_good = max((t for t in good if t is not None), default=None)
    problems = []
    if not runs:
        problems.append("no sync has been recorded yet")
    else:
        last = runs[0]
        if last.get("outcome") not in GOOD:
            step = last.get("failed_step") or "?"
            problems.append(
                f"the last run {last.get('outcome')} ({step}: {last.get('error') or ''})"
            )
        now = pendulum.now("UTC")
        age = None if last_good is None else (now - pendulum.instance(last_good)).total_seconds()
        if age is None or age > threshold_minutes * 60:
            problems.append(f"no successful run in the last {threshold_minutes:g} minutes")
    return Freshness(
        runs, latest_seen, latest_snapshot, last_good, threshold_minutes, tuple(problems)
    )


def _merge(journal: list[dict[str, Any]], stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs by `run_id`, newest first; the journal's later lines win (a failed publish rewrites
    the row of a run the warehouse holds as a success)."""
    by_id = {run["run_id"]: run for run in stored}
    by_id.update({run["run_id"]: run for run in journal})
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(
        by_id.values(), key=lambda run: _time(run.get("started_at")) or epoch, reverse=True
    )


def _query(
    pipeline: dlt.Pipeline, warehouse: Warehouse
) -> tuple[list[dict[str, Any]], tuple[Any, ...]]:
    dataset = pipeline.dataset_name
    fresh = warehouse.rows(FRESHNESS.format(dataset=dataset))
    rows = warehouse.rows(LAST_RUNS.format(columns=", ".join(RUN_COLUMNS), dataset=dataset))
    return (
        [dict(zip(RUN_COLUMNS, row, strict=True)) for row in rows],
        tuple(fresh[0]) if fresh else (None, None),
    )


def _select(client: SqlClientBase[Any], sql: str) -> Sequence[Sequence[Any]]:
    """The rows of a select (dlt's `execute_sql` returns None only for statements without any)."""
    rows = client.execute_sql(sql)
    if rows is None:
        raise RuntimeError(f"the warehouse returned no result set for: {sql.strip()}")
    return rows


def _time(value: Any) -> dt.datetime | None:
    """A run's timestamp, from the warehouse (datetime) or the journal (ISO text)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def format_time(value: Any) -> str:
    """A run's or a reading's time as `status` and the report show it, in UTC."""
    moment = _time(value)
    if moment is not None:
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "never" if value is None else str(value)
