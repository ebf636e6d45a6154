"""`python -m bench.day`: a simulated day of scheduled runs after a full sync (issue #13).

Details (metadata, summary) must be refreshed within `details_max_age_hours` (24 h) of their
fetch; refreshing each pump when it expires made one run a day refetch the whole fleet, because
the first sync fetched it all at once. This runs the real sync (`pipelines.runner.run_sync`, one
DuckDB file, one pipelines folder) against the emulator in this process: a full sync, then 96
runs 15 minutes apart with 2% of the pumps reporting before each. Per run it records the
requests made and, before the run, the oldest details' age (from each detail resource's
`fetched` state); it prints the largest run against the mean and the oldest age seen.

    .venv/bin/python -m bench.day [--pumps 2000] [--users 50] [--runs 96] [--out FILE.json]

Figures only; `tests/test_detail_refresh.py` holds the assertions.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEED = 7
DETAIL_RESOURCES = ("pump_metadata", "pump_summaries")


def oldest_details_hours(pipeline: Any, now: float) -> float:
    """The age in hours of the oldest details any detail resource holds, at `now`."""
    resources = pipeline.state.get("sources", {}).get("pump_portal", {}).get("resources", {})
    fetched_at = [
        entry[0]
        for name in DETAIL_RESOURCES
        for entry in resources.get(name, {}).get("fetched", {}).values()
    ]
    return max((now - at for at in fetched_at), default=0.0) / 3600


def simulate(pumps: int, users: int, runs: int, every_minutes: float, reporting: float) -> dict:
    import dlt

    from pipelines.runner import make_pipeline, run_sync
    from tests.portal_emulator import Fleet, PortalEmulator

    logging.disable(logging.WARNING)
    fleet = Fleet.generate(pumps=pumps, users=users, seed=SEED)
    emu = PortalEmulator(fleet, keep_records=False)
    url = emu.start()
    rng = random.Random(SEED)
    workdir = Path(tempfile.mkdtemp(prefix="pump-portal-day-"))
    pipeline = make_pipeline(
        destination=dlt.destinations.duckdb(str(workdir / "day.duckdb")),
        dataset_name="pump_portal",
        pipelines_dir=str(workdir / "pipelines"),
        progress=False,
    )
    per_run: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for n in range(runs + 1):
            if n:
                emu.advance(every_minutes * 60)
                emu.report(rng.sample(fleet.pump_ids(), round(pumps * reporting)))
            oldest = oldest_details_hours(pipeline, emu.now.timestamp()) if n else 0.0
            result = run_sync(pipeline, base_url=url, api_key=emu.keys.full, run_at=emu.now)
            stats = result.report.client_stats
            per_run.append(
                {
                    "run": n,
                    "outcome": result.outcome,
                    "requests": stats.total_requests if stats else 0,
                    "detail_calls": result.report.detail_calls,
                    "pumps_changed": result.report.pumps_changed,
                    "oldest_details_h": oldest,
                }
            )
            if n % 12 == 0:
                print(
                    f"run {n}: {per_run[-1]['requests']} requests, "
                    f"{per_run[-1]['detail_calls']} detail calls, oldest details {oldest:.2f} h",
                    flush=True,
                )
    finally:
        emu.stop()
    scheduled = per_run[1:]
    requests = [r["requests"] for r in scheduled]
    mean = statistics.fmean(requests)
    return {
        "pumps": pumps,
        "users": users,
        "runs": runs,
        "every_minutes": every_minutes,
        "reporting": reporting,
        "full_sync_requests": per_run[0]["requests"],
        "mean_requests": mean,
        "max_requests": max(requests),
        "min_requests": min(requests),
        "max_over_mean": max(requests) / mean,
        "oldest_details_h": max(r["oldest_details_h"] for r in scheduled),
        "failed_runs": sum(1 for r in per_run if r["outcome"] not in ("success", "partial")),
        "seconds": time.perf_counter() - started,
        "per_run": per_run,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.day", description=__doc__)
    parser.add_argument("--pumps", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--runs", type=int, default=96)
    parser.add_argument("--every-minutes", type=float, default=15.0)
    parser.add_argument("--reporting", type=float, default=0.02)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    figures = simulate(args.pumps, args.users, args.runs, args.every_minutes, args.reporting)
    print(
        f"{figures['runs']} runs after a full sync of {figures['pumps']} pumps "
        f"({figures['full_sync_requests']} requests): {figures['mean_requests']:.0f} requests a "
        f"run on average, at most {figures['max_requests']} "
        f"({figures['max_over_mean']:.2f}x the mean; target <= 1.5x); oldest details "
        f"{figures['oldest_details_h']:.2f} h (target <= 24 h); {figures['seconds']:.0f} s"
    )
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
