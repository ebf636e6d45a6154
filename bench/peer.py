"""The peer: what a competent dlt user would write for this API, to compare our job against.

Issue #13 asks how our sync compares with "the peer a competent dlt user would write". That peer
is dlt's generic `rest_api` source, configured declaratively from the API reference and nothing
else: an explicit `page_number` paginator
(auto-detection guesses `base_page=0` on this API), bearer auth, `limit=50`, the six endpoints
as resources, the per-pump and per-user endpoints as dependent resources, and
`response_actions` ignoring 404 (pumps that never reported have no metadata/summary), so it
finishes like our job does. No custom code: no pacing, no incremental state, no type hints.

Two modes, as a dlt user would try them:
  sequential  dlt's defaults: no resource parallelized, `[extract] workers` left at its default.
  tuned       (`--parallel`) every resource `parallelized: True` and `[extract] workers = N`
              (`EXTRACT__WORKERS`). dlt runs at most min(workers, max_parallel_items = 20)
              child calls at once; max_parallel_items is left at its default.

One run = one full sync into a fresh DuckDB file, pipelines_dir under the work folder (nothing
touches /var/dlt or ~/.dlt):

    .venv/bin/python -m bench.peer --url URL --key KEY --workdir DIR --workers 16 --parallel \
        --out DIR/peer.json

Write dispositions (the reference is silent; a sync that runs again must not duplicate): the
per-pump tables merge on `pump_id`, delegated users on `user_id`, user-pump links on the user id
(`include_from_parent`) and `pump_id`; `stats` is appended, one fleet snapshot per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dlt
    from dlt.extract.source import DltSource
    from dlt.sources.rest_api.typing import ResponseAction, RESTAPIConfig

PIPELINE_NAME = "pump_portal_peer"
DATASET_NAME = "pump_portal"
DUCKDB_FILE = "peer.duckdb"
PAGE_LIMIT = 50
# Pumps that never reported answer 404 on metadata and summary: skip them, as our job does.
IGNORE_404: list[ResponseAction] = [{"status_code": 404, "action": "ignore"}]


def build_config(url: str, key: str, *, parallel: bool) -> RESTAPIConfig:
    """The declarative rest_api configuration; `parallel` sets `parallelized` on every resource."""
    config: RESTAPIConfig = {
        "client": {
            "base_url": url.rstrip("/") + "/v1/",
            "auth": {"type": "bearer", "token": key},
            "paginator": {
                "type": "page_number",
                "base_page": 1,
                "page_param": "page",
                "total_path": "pagination.pages",
            },
        },
        "resource_defaults": {"parallelized": parallel},
        "resources": [
            {
                "name": "pumps",
                "endpoint": {
                    "path": "pumps",
                    "params": {"limit": PAGE_LIMIT},
                    "data_selector": "controllers",
                },
                "primary_key": "pump_id",
                "write_disposition": "merge",
            },
            {
                "name": "pump_metadata",
                "endpoint": {
                    "path": "pumps/{resources.pumps.pump_id}/metadata",
                    "paginator": "single_page",
                    # The "metadata" object: it carries pump_id; the envelope adds only
                    # api_version and pump_id again.
                    "data_selector": "metadata",
                    "response_actions": IGNORE_404,
                },
                "primary_key": "pump_id",
                "write_disposition": "merge",
            },
            {
                "name": "pump_summaries",
                "endpoint": {
                    "path": "pumps/{resources.pumps.pump_id}/summary",
                    "paginator": "single_page",
                    # The whole body. Without a selector dlt "detects" the first list in it
                    # (recent_alarms.alarms or week_trends.daily_summaries) and loads only that.
                    "data_selector": "$",
                    "response_actions": IGNORE_404,
                },
                "primary_key": "pump_id",
                "write_disposition": "merge",
            },
            {
                "name": "stats",
                "endpoint": {
                    "path": "stats",
                    "paginator": "single_page",
                    "data_selector": "statistics",
                },
                "write_disposition": "append",
            },
            {
                "name": "delegated_users",
                "endpoint": {
                    "path": "delegated-users",
                    "paginator": "single_page",
                    "data_selector": "delegated_users",
                },
                "primary_key": "user_id",
                "write_disposition": "merge",
            },
            {
                "name": "user_pump_links",
                "endpoint": {
                    "path": "users/{resources.delegated_users.user_id}/summary",
                    "params": {"limit": PAGE_LIMIT},
                    "data_selector": "controllers",
                },
                # adds `_delegated_users_user_id`: the controllers rows do not carry the user
                "include_from_parent": ["user_id"],
                "primary_key": ["_delegated_users_user_id", "pump_id"],
                "write_disposition": "merge",
            },
        ],
    }
    return config


def peer_source(url: str, key: str, *, parallel: bool) -> DltSource:
    from dlt.sources.rest_api import rest_api_source

    return rest_api_source(build_config(url, key, parallel=parallel), name="pump_portal_peer")


def make_pipeline(workdir: Path) -> dlt.Pipeline:
    """A pipeline whose DuckDB file and working folder are both under `workdir`, both new."""
    import dlt

    database = workdir / DUCKDB_FILE
    folder = workdir / "pipelines"
    for path in (database, folder / PIPELINE_NAME):
        if path.exists():
            raise SystemExit(f"{path} exists: the peer runs into a fresh work folder")
    workdir.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name=DATASET_NAME,
        pipelines_dir=str(folder),
    )


def table_rows(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Rows per table of the dataset, dlt's own `_dlt_*` tables left out."""
    with pipeline.sql_client() as client:
        names = [
            row[0]
            for row in client.execute_sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "ORDER BY table_name",
                pipeline.dataset_name,
            )
            or []
            if not row[0].startswith("_dlt")
        ]
        rows: dict[str, int] = {}
        for name in names:
            result = client.execute_sql(
                f"SELECT count(*) FROM {client.make_qualified_table_name(name)}"
            )
            rows[name] = int(result[0][0]) if result else 0
    return rows


def step_seconds(pipeline: dlt.Pipeline) -> dict[str, float]:
    trace = pipeline.last_trace
    if trace is None:
        return {}
    return {
        step.step: (step.finished_at - step.started_at).total_seconds()
        for step in trace.steps
        if step.finished_at is not None
    }


def run_peer(url: str, key: str, workdir: Path, *, workers: int, parallel: bool) -> dict[str, Any]:
    """One full sync; returns the figures. `workers` applies to the tuned mode only."""
    if parallel:
        os.environ["EXTRACT__WORKERS"] = str(workers)
    else:
        os.environ.pop("EXTRACT__WORKERS", None)
    pipeline = make_pipeline(workdir)
    source = peer_source(url, key, parallel=parallel)
    outcome, error, failed_step = "ok", None, None
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        info = pipeline.run(source)
        if info.has_failed_jobs:
            outcome = "failed_jobs"
    except Exception as exc:  # the figures are still written; the exit code says it failed
        outcome, error = "failed", f"{type(exc).__name__}: {exc}"
        failed_step = getattr(exc, "step", None)
    wall = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        rows = table_rows(pipeline)
    except Exception:  # nothing was loaded: no dataset yet
        rows = {}
    return {
        "mode": "tuned" if parallel else "sequential",
        "workers": workers if parallel else None,
        "wall_s": wall,
        "cpu_s": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
        "peak_rss_mb": usage1.ru_maxrss / 1024,
        "outcome": outcome,
        "error": error,
        "failed_step": failed_step,
        "steps": step_seconds(pipeline),
        "rows": rows,
        "rows_total": sum(rows.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", required=True, help="portal origin; the peer adds /v1/")
    parser.add_argument("--key", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=16, help="[extract] workers (tuned only)")
    parser.add_argument("--parallel", action="store_true", help="tuned: parallelize resources")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    # Not a tuning knob: keeps dlt's telemetry calls out of the timing.
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    figures = run_peer(
        args.url, args.key, args.workdir, workers=args.workers, parallel=args.parallel
    )
    args.out.write_text(json.dumps(figures, indent=1, default=str))
    return 0 if figures["outcome"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
