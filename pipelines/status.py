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
from collections.abc import Sequence
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
    journal = RunJournal.beside(pipeline.pipelines_dir, pipeline.pipeline_name)
    try:
        stored, (latest_seen, latest_snapshot) = _query(pipeline, settings)
    except Exception as error:  # noqa: BLE001 - no tables yet is a state, not a crash
        logger.debug("nothing to read in the warehouse yet", exc_info=error)
        stored, latest_seen, latest_snapshot = [], None, None
    runs = _merge(journal.runs(), stored)
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
            f"  {_fmt(run.get('started_at')):<26} {run.get('duration_s') or 0:>6.1f}  "
            f"{run.get('outcome') or '?':<11} {run.get('pumps_listed') or 0:>6} "
            f"{run.get('pumps_changed') or 0:>7} {run.get('detail_calls') or 0:>7} "
            f"{run.get('items_skipped') or 0:>7} {run.get('requests') or 0:>8} "
            f"{run.get('rate_limited_429s') or 0:>4}"
        )
    good = [_time(run.get("finished_at")) for run in runs if run.get("outcome") in GOOD]
    last_good = max((t for t in good if t is not None), default=None)
    say(f"latest last_seen:        {_fmt(latest_seen)}")
    say(f"latest fleet snapshot:   {_fmt(latest_snapshot)}")
    say(f"last successful run end: {_fmt(last_good)}")
    problems = []
    last = runs[0]
    if last.get("outcome") not in GOOD:
        step = last.get("failed_step") or "?"
        problems.append(f"the last run {last.get('outcome')} ({step}: {last.get('error') or ''})")
    now = pendulum.now("UTC")
    if last_good is None or (now - pendulum.instance(last_good)).total_seconds() > threshold * 60:
        problems.append(f"no successful run in the last {threshold:g} minutes")
    if problems:
        say("STALE: " + "; ".join(problems))
        return EXIT_STALE
    say(f"fresh (threshold {threshold:g} minutes)")
    return EXIT_OK


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
    pipeline: dlt.Pipeline, settings: SyncSettings
) -> tuple[list[dict[str, Any]], tuple[Any, ...]]:
    dataset = pipeline.dataset_name
    runs_sql = LAST_RUNS.format(columns=", ".join(RUN_COLUMNS), dataset=dataset)
    fresh_sql = FRESHNESS.format(dataset=dataset)
    working = working_file(pipeline)
    if working is not None:
        published = Path(settings.publish_to) if settings.publish_to else None
        path = published if published is not None and published.exists() else working
        logger.debug("reading the warehouse %s", path)
        with duckdb.connect(str(path), read_only=True) as connection:
            fresh = connection.execute(fresh_sql).fetchone()
            rows = connection.execute(runs_sql).fetchall()
    else:
        logger.debug("reading the warehouse on %s", pipeline.destination.destination_name)
        with pipeline.sql_client() as client:
            fresh = tuple(_select(client, fresh_sql)[0])
            rows = [tuple(row) for row in _select(client, runs_sql)]
    return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in rows], tuple(fresh or (None, None))


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


def _fmt(value: Any) -> str:
    moment = _time(value)
    if moment is not None:
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "never" if value is None else str(value)
