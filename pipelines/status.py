"""`pump-portal status`: the last runs, the data's freshness, and an exit code a monitor can use.

On DuckDB it reads the published copy (or the working file) read-only, so it never takes the
lock a running sync needs; on other destinations it queries through the pipeline's SQL client.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pendulum

from .console import say
from .deployment import SyncSettings
from .runner import make_pipeline
from .warehouse import working_file

EXIT_OK, EXIT_STALE = 0, 11

logger = logging.getLogger(__name__)

LAST_RUNS = """
select started_at, duration_s, outcome, pumps_listed, pumps_changed, detail_calls,
       items_skipped, requests, rate_limited_429s
from {dataset}.sync_runs order by started_at desc limit 5
"""
FRESHNESS = """
select (select max(last_seen) from {dataset}.controllers),
       (select max(snapshot_at) from {dataset}.fleet_snapshots),
       (select max(finished_at) from {dataset}.sync_runs where outcome in ('success', 'partial'))
"""


def command_status(args: argparse.Namespace) -> int:
    settings = SyncSettings.from_config()
    pipeline = make_pipeline()
    dataset = pipeline.dataset_name
    threshold = args.max_age_minutes
    if threshold is None:
        threshold = settings.max_staleness_minutes
    try:
        runs, freshness = _query(pipeline, dataset, settings)
    except Exception as error:  # noqa: BLE001 - no tables yet is a state, not a crash
        logger.debug("no runs to read", exc_info=error)
        first_line = (str(error).strip().splitlines() or [""])[0]
        say(f"no sync has been recorded yet ({type(error).__name__}: {first_line[:120]})")
        return EXIT_STALE
    say("last runs (newest first):")
    say("  started_at                  secs  outcome  listed changed details skipped requests 429s")
    for started, secs, outcome, listed, changed, details, skipped, requests, limited in runs:
        say(
            f"  {_fmt(started):<26} {secs or 0:>6.1f}  {outcome:<8} {listed or 0:>6} "
            f"{changed or 0:>7} {details or 0:>7} {skipped or 0:>7} {requests or 0:>8} "
            f"{limited or 0:>4}"
        )
    latest_seen, latest_snapshot, last_good = freshness
    now = pendulum.now("UTC")
    say(f"latest last_seen:        {_fmt(latest_seen)}")
    say(f"latest fleet snapshot:   {_fmt(latest_snapshot)}")
    say(f"last successful run end: {_fmt(last_good)}")
    problems = []
    if not runs or runs[0][2] == "failed":
        problems.append("the last run failed" if runs else "no run recorded")
    if last_good is None or (now - _aware(last_good)).total_seconds() > threshold * 60:
        problems.append(f"no successful run in the last {threshold:g} minutes")
    if problems:
        say("STALE: " + "; ".join(problems))
        return EXIT_STALE
    say(f"fresh (threshold {threshold:g} minutes)")
    return EXIT_OK


def _query(
    pipeline: dlt.Pipeline, dataset: str, settings: SyncSettings
) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    working = working_file(pipeline)
    if working is not None:
        published = Path(settings.publish_to) if settings.publish_to else None
        path = published if published is not None and published.exists() else working
        logger.debug("reading the last runs from %s", path)
        with duckdb.connect(str(path), read_only=True) as connection:
            runs = connection.execute(LAST_RUNS.format(dataset=dataset)).fetchall()
            fresh = connection.execute(FRESHNESS.format(dataset=dataset)).fetchone()
        return runs, fresh
    logger.debug("reading the last runs from %s", pipeline.destination.destination_name)
    with pipeline.sql_client() as client:
        runs = [tuple(r) for r in client.execute_sql(LAST_RUNS.format(dataset=dataset))]
        fresh = tuple(client.execute_sql(FRESHNESS.format(dataset=dataset))[0])
    return runs, fresh


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _fmt(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return _aware(value).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "never" if value is None else str(value)
