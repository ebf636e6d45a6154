"""`python -m bench.sync` (`make bench-sync`): the sync against the emulated portal, per scenario.

    .venv/bin/python -m bench.sync [--only full,incremental,...] [--full-baseline] [--profile]
    BENCH_SCALE=0.02 .venv/bin/python -m bench.sync      # every fleet shrunk: a smoke run, ~1 min
    .venv/bin/python -m bench.sync --render bench/RESULTS.md   # re-render the kept figures

Every sync runs in a fresh process (`python -m bench.sync sync ...`) with its own DuckDB file and
pipelines_dir, so peak RSS (`ru_maxrss` of that process) is per scenario. The emulator runs in
another process (`python -m bench.sync serve ...`), so its CPU does not share the sync's GIL; the
orchestrator drives it (counters, simulated clock, pump reports) over the serve process's
stdin/stdout, one JSON object per line. One full sync is also run with the emulator inside the
sync's process, to show what sharing the GIL costs.

Scenarios (figures, ratios and targets: see `TARGETS` and the printed table):
  full         5,000 pumps, 100 users, 20 ms latency, concurrency 16 (the default) and 8
  incremental  the same pipeline after `advance(600)` and a report from 2% of the pumps
  baseline     concurrency 1 on 500 pumps / 10 users (same latency), extrapolated per request
               to the full sync's request count (`--full-baseline`: measure it on 5,000 pumps)
  rate_limit   1,000 pumps, 20 users, 20 ms, portal limit 50 requests per 1 s window, concurrency
               16, budget configured (50/1 s) and learned from 429s only
  rate_limited 1,000 pumps, 20 users, 20 ms, portal limit 30 requests per 1 s window, the default
               concurrency, learned and configured: wall / (requests / rate), 429s per window
  memory       20,000 pumps, 100 users, no latency: peak RSS
  what_if      full and memory again loading DuckDB from parquet, when pyarrow is importable
               and the sync does not load from parquet already

It prints the table and writes the figures into bench/RESULTS.md: the machine, the method, the
scenario table with its targets, where the time and memory go, requests per endpoint, profiles and
the raw figures (JSON). It replaces only the text between the `MEASURED_START` and `MEASURED_END`
markers; the findings outside them are written by hand and never touched. A file without the
markers gets the measured section appended. Figures only: nothing here interprets them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import glob
import gzip
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.pump_portal import settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
# bench/RESULTS.md: the run replaces only the text between these; the findings around them are
# written by hand.
MEASURED_START = "<!-- measured: written by make bench-sync -->"
MEASURED_END = "<!-- end measured -->"

# BENCH_SCALE (default 1) shrinks every fleet, for a quick smoke run of the bench itself.
SCALE = float(os.environ.get("BENCH_SCALE", "1"))


def _fleet(pumps: int, users: int, **extra: float) -> dict[str, Any]:
    return {"pumps": max(20, round(pumps * SCALE)), "users": max(2, round(users * SCALE)), **extra}


FULL = _fleet(5_000, 100, latency_ms=20.0)
BASELINE = _fleet(500, 10, latency_ms=20.0)
RATE = _fleet(1_000, 20, latency_ms=20.0, limit=50, window=1.0)
MEMORY = _fleet(20_000, 100, latency_ms=0.0)
# `rate_limited`: the pacer's own targets, at the default concurrency (row names, limit, targets).
RATE30 = _fleet(1_000, 20, latency_ms=20.0, limit=30, window=1.0)
RATE30_ROWS = (
    ("rate30_learned", "rate limit 30/1 s, budget learned, default concurrency", False, 1.2),
    ("rate30_configured", "rate limit 30/1 s, budget configured, default concurrency", True, 1.1),
)
CONCURRENCY = 16
DEFAULT_CONCURRENCY = settings.DEFAULT_CONCURRENCY
INCREMENTAL_FRACTION = 0.02
SEED = 7

TARGETS = {
    "speedup": 8.0,  # full sync at least 8x faster than sequential
    "ideal": 2.0,  # ... and within 2x of requests x latency / concurrency
    "incremental": 0.10,  # 2% incremental under 10% of the full sync's wall time
    "rate_ideal": 1.2,  # rate-limited within 1.2x of requests / rate
    "rate_429_per_window": 1,
    "rss_mb": 500.0,  # at 20,000 pumps
}

ENV_PREFIXES = ("SOURCES__", "DESTINATION__", "PIPELINES__", "NORMALIZE__", "LOAD__", "EXTRACT__")


# =============================================================================================
# serve: the emulator as its own process, driven over stdin/stdout
# =============================================================================================


def serve(args: argparse.Namespace) -> int:
    from tests.portal_emulator import Fleet, PortalEmulator, RateLimit

    fleet = Fleet.generate(pumps=args.pumps, users=args.users, seed=args.seed)
    emu = PortalEmulator(
        fleet,
        latency=args.latency_ms / 1000.0,
        rate_limit=RateLimit.parse(args.rate_limit) if args.rate_limit else None,
        keep_records=False,
    )
    url = emu.start()

    def reply(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    reply({"url": url, "key": emu.keys.full, "pid": os.getpid(), "now": emu.now.isoformat()})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            name = command.get("cmd")
            if name == "stats":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                reply(
                    {
                        "counts": dict(emu.counts),
                        "status_counts": {
                            f"{template} {status}": n
                            for (template, status), n in emu.status_counts.items()
                        },
                        "rate_limited_per_window": {
                            str(k): v for k, v in emu.rate_limited_per_window.items()
                        },
                        "cpu_s": usage.ru_utime + usage.ru_stime,
                        "now": emu.now.isoformat(),
                    }
                )
            elif name == "reset":
                emu.reset_counts()
                reply({"ok": True})
            elif name == "advance":
                reply({"now": emu.advance(float(command["seconds"])).isoformat()})
            elif name == "report":
                ids = fleet.pump_ids()
                chosen = random.Random(command.get("seed", SEED)).sample(
                    ids, round(len(ids) * float(command["fraction"]))
                )
                emu.report(chosen)
                reply({"reported": len(chosen), "now": emu.now.isoformat()})
            elif name == "stop":
                reply({"ok": True})
                break
            else:
                reply({"error": f"unknown command {name!r}"})
    finally:
        emu.stop()
    return 0


class EmulatorProcess:
    """`python -m bench.sync serve` in a child process."""

    def __init__(
        self,
        pumps: int,
        users: int,
        latency_ms: float,
        rate_limit: str | None = None,
        seed: int = SEED,
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "bench.sync",
            "serve",
            f"--pumps={pumps}",
            f"--users={users}",
            f"--latency-ms={latency_ms}",
            f"--seed={seed}",
        ]
        if rate_limit:
            command.append(f"--rate-limit={rate_limit}")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=child_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            self.process.kill()
            raise RuntimeError("the emulator process did not start")
        info = json.loads(line)
        self.url: str = info["url"]
        self.key: str = info["key"]
        self.now: str = info["now"]

    def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if "now" in answer:
            self.now = answer["now"]
        return answer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("stop")
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# =============================================================================================
# sync: one sync cycle in a fresh process; prints one JSON object
# =============================================================================================


def _holds_source(data: Any) -> bool:
    from dlt.extract.source import DltSource

    if isinstance(data, list | tuple):
        return any(isinstance(item, DltSource) for item in data)
    return isinstance(data, DltSource)


def sync_main(args: argparse.Namespace) -> int:
    logging.disable(logging.WARNING)  # per-item 404 warnings are expected; keep stdout clean

    from pipelines.runner import configured_destination, describe, make_pipeline, run_sync

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    emu = None
    url, key, run_at = args.url, args.key, args.run_at
    if args.inprocess:
        from tests.portal_emulator import Fleet, PortalEmulator

        spec = json.loads(args.inprocess)
        emu = PortalEmulator(
            Fleet.generate(pumps=spec["pumps"], users=spec["users"], seed=SEED),
            latency=spec["latency_ms"] / 1000.0,
            keep_records=False,
        )
        url, key, run_at = emu.start(), emu.keys.full, emu.now.isoformat()

    # The destination as `pump-portal run` makes it, with the [sync] DuckDB memory limit and
    # threads: without them DuckDB takes 80% of the machine's memory for the load.
    os.environ["DESTINATION__DUCKDB__CREDENTIALS"] = str(workdir / "bench.duckdb")
    pipeline = make_pipeline(
        destination=configured_destination("duckdb"),
        dataset_name="pump_portal",
        pipelines_dir=str(workdir / "pipelines"),
        progress=False,
    )
    runs: list[dict[str, Any]] = []

    def timed(step: str, original: Callable[..., Any]) -> Callable[..., Any]:
        """dlt's step `step`, timed into the run its extract began (the runner calls the steps
        one by one; `pipeline.run` calls the same instance attributes)."""

        def call(*a: Any, **k: Any) -> Any:
            if step == "extract":
                if args.loader_file_format and a:
                    k["loader_file_format"] = args.loader_file_format
                # The sync's run: the source, with its records after it in one list.
                main = bool(a) and _holds_source(a[0])
                runs.append({"main": main, "seconds": 0.0, "steps": {}, "spans": {}})
            started_at, started = time.time(), time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                if runs:
                    seconds = time.perf_counter() - started
                    run = runs[-1]
                    run["steps"][step] = run["steps"].get(step, 0.0) + seconds
                    run["spans"][step] = (started_at, time.time())
                    run["seconds"] += seconds

        return call

    for step in ("extract", "normalize", "load"):
        setattr(pipeline, step, timed(step, getattr(pipeline, step)))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sampler = RssSampler()
    options: dict[str, Any] = {"concurrency": args.concurrency, "backoff_seconds": 0.2}
    if args.requests_per_window:
        options["requests_per_window"] = args.requests_per_window
        options["window_seconds"] = args.window_seconds
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = run_sync(
        pipeline,
        base_url=url,
        api_key=key,
        run_at=dt.datetime.fromisoformat(run_at) if run_at else None,
        **options,
    )
    wall = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
    sampler.stop()
    report = result.report
    stats = report.client_stats
    main = next((r for r in runs if r["main"]), {"steps": {}, "spans": {}, "seconds": None})
    job_formats = sorted(
        {
            Path(job).name.split(".")[-2] if job.endswith(".gz") else Path(job).suffix[1:]
            for job in glob.glob(
                str(workdir / "pipelines" / "*" / "load" / "loaded" / "*" / "completed_jobs" / "*")
            )
            if not job.endswith(".sql")
            and not Path(job).name.startswith(("_dlt", "sync_runs.", "skipped_items."))
        }
    )
    out: dict[str, Any] = {
        "wall_s": wall,
        "outcome": result.outcome,
        "error": describe(result.error) if result.error else None,
        "failed_step": result.failed_step,
        "requests": dict(stats.requests) if stats else {},
        "requests_total": stats.total_requests if stats else 0,
        "rate_limited": stats.rate_limited if stats else 0,
        "rate_limit_wait_s": stats.rate_limit_wait_seconds if stats else 0.0,
        "retries": stats.retries if stats else 0,
        "rows": result.rows,
        "rows_total": sum(result.rows.values()),
        "pumps_listed": report.pumps_listed,
        "pumps_changed": report.pumps_changed,
        "detail_calls": report.detail_calls,
        "skipped": len(report.skipped),
        "steps": main["steps"],
        "main_run_s": main["seconds"],
        "record_run_s": sum(r["seconds"] for r in runs if not r["main"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mb": rss_before,
        "rss_peak_by_step_mb": sampler.peaks(main["spans"]),
        "job_formats": job_formats,
        "cpu_s": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
        "loader_file_format": args.loader_file_format or "default",
        "emulator_in_process": emu is not None,
    }
    out["text_timestamp"] = text_timestamp_check(pipeline)
    if emu is not None:
        out["emulator_counts"] = dict(emu.counts)
        emu.stop()
    Path(args.out).write_text(json.dumps(out, default=str))
    return 0


API_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def text_timestamp_check(pipeline: Any) -> dict[str, Any] | None:
    """Undocumented alarm fields are kept as the API's text (`raised_at`: `...T...Z`). A loader
    that guesses types from the file (DuckDB `read_json` for jsonl) rewrites them; count how
    many loaded values no longer look like what the API sent."""
    table = "pump_summaries__recent_alarms__alarms"
    try:
        with pipeline.sql_client() as client:
            rows = client.execute_sql(f"select raised_at from {table} where raised_at is not null")
    except Exception:  # noqa: BLE001 - the table exists only when some pump had alarms
        return None
    values = [str(r[0]) for r in rows]
    changed = [v for v in values if not API_TIMESTAMP.match(v)]
    return {
        "table": table,
        "column": "raised_at",
        "values": len(values),
        "rewritten": len(changed),
        "example": changed[0] if changed else (values[0] if values else None),
    }


class RssSampler:
    """VmRSS every 0.2 s from /proc/self/status, to tell which step holds the peak."""

    def __init__(self, interval: float = 0.2) -> None:
        self.samples: list[tuple[float, float]] = []
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        self.samples.append((time.time(), int(line.split()[1]) / 1024))
                        break
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def peaks(self, spans: dict[str, tuple[float, float]]) -> dict[str, float]:
        """Highest sampled RSS (MB) within each (start, end) span."""
        out = {}
        for name, (start, end) in spans.items():
            inside = [mb for at, mb in self.samples if start <= at <= end]
            if inside:
                out[name] = max(inside)
        return out


# =============================================================================================
# probe: how DuckDB parses one insert_values job file (time, peak RSS)
# =============================================================================================


def probe_main(args: argparse.Namespace) -> int:
    import duckdb

    with gzip.open(args.file, "rt", encoding="utf-8") as handle:
        header = handle.readline()
        text = handle.read()
    body = text.split("\n", 1)[1] if text.startswith("VALUES") else text
    rows = body.count("\n") + 1
    con = duckdb.connect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    # The job's INSERT ... VALUES statement, parsed and executed without its target table.
    statement = "SELECT count(*) FROM (VALUES " + body.strip().rstrip(";") + ")"
    counted = con.execute(statement).fetchone()[0]
    seconds = time.perf_counter() - started
    out = {
        "file": Path(args.file).name,
        "table": Path(args.file).name.split(".")[0],
        "columns": header.count(",") + 1,
        "rows": counted or rows,
        "sql_mb": len(body) / 1e6,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before,
    }
    Path(args.out).write_text(json.dumps(out))
    return 0


# =============================================================================================
# orchestration
# =============================================================================================


def child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scratch = Path(tempfile.mkdtemp(prefix="pump-portal-bench-"))
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []
        self.started = time.monotonic()
        # The what-if: the same sync loading DuckDB from parquet (needs pyarrow).
        self.what_if_format = "parquet"
        self.pyarrow = importlib.util.find_spec("pyarrow") is not None

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    def run_sync(
        self,
        name: str,
        emu: EmulatorProcess | None,
        *,
        workdir: Path | None = None,
        concurrency: int = CONCURRENCY,
        budget: tuple[int, float] | None = None,
        loader_file_format: str | None = None,
        inprocess: dict[str, Any] | None = None,
        cprofile: Path | None = None,
        py_spy: tuple[Path, str] | None = None,
    ) -> dict[str, Any]:
        workdir = workdir or self.scratch / name
        out = self.scratch / f"{name}.json"
        command = [
            sys.executable,
            "-m",
            "bench.sync",
            "sync",
            f"--workdir={workdir}",
            f"--concurrency={concurrency}",
            f"--out={out}",
        ]
        if emu is not None:
            emu.call("reset")
            before = emu.call("stats")
            command += [f"--url={emu.url}", f"--key={emu.key}", f"--run-at={emu.now}"]
        if inprocess is not None:
            command.append(f"--inprocess={json.dumps(inprocess)}")
        if budget is not None:
            command += [f"--requests-per-window={budget[0]}", f"--window-seconds={budget[1]}"]
        if loader_file_format:
            command.append(f"--loader-file-format={loader_file_format}")
        if cprofile is not None:
            command.append(f"--cprofile={cprofile}")
        if py_spy is not None:
            path, mode = py_spy
            flags = ["--gil"] if mode == "gil" else ["--idle", "--threads"]
            command = [
                str(py_spy_path()),
                "record",
                *flags,
                "-r",
                "100",
                "-f",
                "raw",
                "-o",
                str(path),
                "--",
                *command,
            ]
        self.log(
            f"{name}: sync, concurrency {concurrency}"
            + (f", budget {budget}" if budget else "")
            + (f", loader_file_format={loader_file_format}" if loader_file_format else "")
        )
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        completed = subprocess.run(
            command,
            cwd=ROOT,
            env=child_environment(),
            capture_output=True,
            text=True,
        )
        process_s = time.perf_counter() - started
        if completed.returncode != 0 or not out.exists():
            tail = (completed.stderr or completed.stdout)[-2000:]
            self.log(f"{name}: the sync process failed (exit {completed.returncode})\n{tail}")
            data: dict[str, Any] = {
                "error": f"sync process exit {completed.returncode}",
                "wall_s": None,
            }
        else:
            data = json.loads(out.read_text())
        data["process_s"] = process_s
        data["load_average_before"] = load_before
        data["load_average_after"] = os.getloadavg()[0]
        data["concurrency"] = concurrency
        data["budget"] = list(budget) if budget else None
        if emu is not None:
            after = emu.call("stats")
            data["server"] = after
            data["emulator_cpu_s"] = after["cpu_s"] - before["cpu_s"]
        self.results[name] = data
        if data.get("wall_s") is not None:
            self.log(
                f"{name}: {data['outcome']} in {data['wall_s']:.1f} s, "
                f"{data['requests_total']} requests, peak RSS {data['peak_rss_mb']:.0f} MB"
            )
        return data

    # --- scenarios ----------------------------------------------------------------------------

    def full_then_incremental(self, suffix: str = "", fmt: str | None = None) -> None:
        """A full sync, then (same emulator, same pipeline) the run after 2% of pumps report."""
        with EmulatorProcess(FULL["pumps"], FULL["users"], FULL["latency_ms"]) as emu:
            workdir = self.scratch / f"full{suffix}"
            self.run_sync(f"full{suffix}", emu, workdir=workdir, loader_file_format=fmt)
            if self.wants("incremental"):
                emu.call("advance", seconds=600)
                reported = emu.call("report", fraction=INCREMENTAL_FRACTION)["reported"]
                self.log(f"incremental{suffix}: {reported} pumps reported")
                data = self.run_sync(
                    f"incremental{suffix}", emu, workdir=workdir, loader_file_format=fmt
                )
                data["reported"] = reported
            if not suffix and self.wants("probe"):
                self.probe(workdir)

    def what_if_needed(self) -> bool:
        """The parquet what-if runs when pyarrow is importable and the sync does not already
        load DuckDB from parquet."""
        if not self.wants("what_if"):
            return False
        note = None
        formats = set((self.results.get("full") or {}).get("job_formats") or [])
        if not self.pyarrow:
            note = "parquet what-if skipped: pyarrow is not importable here."
        elif formats == {self.what_if_format}:
            note = f"parquet what-if skipped: the sync already loads with {sorted(formats)}."
        if note:
            if note not in self.notes:
                self.notes.append(note)
            return False
        return True

    def full_scenarios(self) -> None:
        self.full_then_incremental()
        if self.wants("default_concurrency"):
            with EmulatorProcess(FULL["pumps"], FULL["users"], FULL["latency_ms"]) as emu:
                self.run_sync("full_c8", emu, concurrency=8)
        if self.wants("inprocess"):
            self.run_sync("full_inprocess", None, inprocess=FULL)
        if self.what_if_needed():
            self.full_then_incremental("_what_if", self.what_if_format)

    def baseline(self) -> None:
        spec = FULL if self.args.full_baseline else BASELINE
        with EmulatorProcess(spec["pumps"], spec["users"], spec["latency_ms"]) as emu:
            data = self.run_sync("baseline_c1", emu, concurrency=1)
            data["fleet"] = spec

    def rate_limited(self) -> None:
        limit = f"{RATE['limit']}/{RATE['window']}"
        with EmulatorProcess(RATE["pumps"], RATE["users"], RATE["latency_ms"], limit) as emu:
            self.run_sync("rate_configured", emu, budget=(RATE["limit"], RATE["window"]))
        with EmulatorProcess(RATE["pumps"], RATE["users"], RATE["latency_ms"], limit) as emu:
            self.run_sync("rate_learned", emu)

    def rate_limited_30(self) -> None:
        """The pacer against 30 requests per 1 s window, budget learned from 429s, then
        configured exactly at the limit; a fresh emulator (fresh windows) for each."""
        spec, rate = RATE30, RATE30["limit"] / RATE30["window"]
        limit = f"{spec['limit']}/{spec['window']}"
        for name, _, configured, _ in RATE30_ROWS:
            with EmulatorProcess(spec["pumps"], spec["users"], spec["latency_ms"], limit) as emu:
                budget = (spec["limit"], spec["window"]) if configured else None
                data = self.run_sync(name, emu, concurrency=DEFAULT_CONCURRENCY, budget=budget)
            if data.get("wall_s") is None:
                continue
            per_window = (data.get("server") or {}).get("rate_limited_per_window") or {}
            windows = int(data["wall_s"] / spec["window"]) + 1
            ratio = data["wall_s"] / (_answered(data) / rate)
            self.log(
                f"{name}: wall / (requests / rate) = {data['wall_s']:.1f} / "
                f"({_answered(data)} / {rate:g}) = {ratio:.3f}; "
                f"429s {data['rate_limited']} in ~{windows} windows "
                f"({data['rate_limited'] / windows:.2f} per window, at most "
                f"{max(per_window.values(), default=0)} in one); "
                f"429 wait {data['rate_limit_wait_s']:.1f} s; extract step alone "
                f"{(data.get('steps') or {}).get('extract', 0.0) / (_answered(data) / rate):.3f}x"
            )

    def memory(self) -> None:
        with EmulatorProcess(MEMORY["pumps"], MEMORY["users"], MEMORY["latency_ms"]) as emu:
            self.run_sync("memory", emu)
        if self.what_if_needed():
            with EmulatorProcess(MEMORY["pumps"], MEMORY["users"], MEMORY["latency_ms"]) as emu:
                self.run_sync("memory_what_if", emu, loader_file_format=self.what_if_format)

    def profile(self) -> None:
        """The full sync again under py-spy (twice: where the GIL is held; what the main thread
        does, idle included), or without py-spy under cProfile (main thread only)."""
        spy = py_spy_path()
        if spy:
            for mode in ("gil", "idle"):
                path = self.scratch / f"full_profile_{mode}.pyspy"
                with EmulatorProcess(FULL["pumps"], FULL["users"], FULL["latency_ms"]) as emu:
                    self.run_sync(f"full_profile_{mode}", emu, py_spy=(path, mode))
                summary = breakdown(path, main_thread_extract_only=mode == "idle")
                if mode == "gil":
                    summary.update(summarize_py_spy(path))
                self.results[f"profile_{mode}"] = summary
        else:
            path = self.scratch / "full_profile.pstats"
            with EmulatorProcess(FULL["pumps"], FULL["users"], FULL["latency_ms"]) as emu:
                self.run_sync("full_profile_cprofile", emu, cprofile=path)
            self.results["profile_cprofile"] = summarize_pstats(path)

    def probe(self, workdir: Path) -> None:
        """Parse the largest insert_values job of the full sync alone, in a fresh process."""
        jobs = glob.glob(
            str(
                workdir
                / "pipelines"
                / "*"
                / "load"
                / "loaded"
                / "*"
                / "completed_jobs"
                / "*.insert_values.gz"
            )
        )
        jobs = [
            j for j in jobs if not Path(j).name.startswith(("_dlt", "sync_runs.", "skipped_items."))
        ]
        if not jobs:
            return
        sizes = {}
        for job in jobs:
            with gzip.open(job, "rb") as handle:
                sizes[job] = len(handle.read())
        largest = max(sizes, key=sizes.__getitem__)
        out = self.scratch / "probe.json"
        self.log(f"probe: DuckDB parses {Path(largest).name} ({sizes[largest] / 1e6:.1f} MB)")
        subprocess.run(
            [sys.executable, "-m", "bench.sync", "probe", f"--file={largest}", f"--out={out}"],
            cwd=ROOT,
            env=child_environment(),
            check=False,
        )
        if out.exists():
            self.results["probe"] = json.loads(out.read_text())

    def wants(self, name: str) -> bool:
        only = self.args.only
        return not only or name in only

    def run(self) -> int:
        try:
            if self.wants("full") or self.wants("incremental"):
                self.full_scenarios()
            if self.wants("baseline"):
                self.baseline()
            if self.wants("rate_limit"):
                self.rate_limited()
            if self.wants("rate_limited"):
                self.rate_limited_30()
            if self.wants("memory"):
                self.memory()
            if self.args.profile != "no" and (self.args.profile == "yes" or not self.args.only):
                self.profile()
        finally:
            total = time.monotonic() - self.started
            self.results["bench_seconds"] = total
            self.results["notes"] = self.notes
            self.results["what_if_format"] = self.what_if_format
            self.results["machine"] = machine()
            self.results["generated"] = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
            table = summarize(self.results, self.what_if_format)
            print()
            print(render_console(table))
            if not self.args.no_write:
                write_results(render_measured(table, self.results))
                print(
                    f"\nwrote the measured section of {RESULTS.relative_to(ROOT)} ({total:.0f} s)"
                )
            if self.args.keep:
                print(f"scratch kept in {self.scratch}")
            else:
                shutil.rmtree(self.scratch, ignore_errors=True)
        return 0


# =============================================================================================
# profiles
# =============================================================================================


def _frame_key(frame: str) -> str:
    """'func (path/to/site-packages/pkg/mod.py:123)' -> 'func (pkg/mod.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    path = path.replace(str(ROOT) + "/", "")
    return f"{name} ({path})"


def summarize_py_spy(path: Path, top: int = 40) -> dict[str, Any]:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "inclusive": [], "self": []}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_key(f) for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n

    def rows(counter: collections.Counter[str]) -> list[tuple[float, str]]:
        return (
            [(100.0 * n / total, frame) for frame, n in counter.most_common(top)] if total else []
        )

    return {"samples": total, "inclusive": rows(inclusive), "self": rows(own)}


def py_spy_path() -> str | None:
    found = os.environ.get("BENCH_PY_SPY") or shutil.which("py-spy")
    return found if found and os.access(found, os.X_OK) else None


def _extract_bucket(tail: str) -> str:
    """What the main thread does inside dlt's extract step (`tail`: frames below it)."""
    if "wait (concurrent/futures/_base.py" in tail:
        return "main: concurrent.futures.wait in _fan_out (idle: waiting for a call)"
    if "_fan_out" in tail:
        return "main: _fan_out bookkeeping (submit, futures)"
    if "coerce (" in tail:
        return "main: records.coerce (listing rows, to_row of details)"
    if "fingerprint (" in tail:
        return "main: records.fingerprint (listing rows)"
    if "PortalClient" in tail:
        return "main: HTTP on the main thread (listing pages, /stats, /delegated-users)"
    if "pipelines/" in tail:
        return "main: other pipelines/ code (FleetSync, resources)"
    return "main: dlt extract machinery (pipe iterator, writers, state)"


def _stack_bucket(stack: str) -> str:
    """A coarse owner for one sampled stack."""
    if "_worker (concurrent/futures/thread.py" in stack and "PortalClient" in stack:
        if "prepare_request" in stack or "merge_setting" in stack or "prepare (" in stack:
            return "workers: requests builds the request (prepare_request, merge_setting)"
        if "getresponse" in stack or "_read_status" in stack or "parse_headers" in stack:
            return "workers: http.client reads the response"
        if "HTTPConnection.request" in stack or "endheaders" in stack:
            return "workers: http.client sends the request"
        if "Response.json" in stack or "Answer.json" in stack or "loads (" in stack:
            return "workers: JSON decoding"
        if "RequestPacer" in stack:
            return "workers: pacer"
        return "workers: rest of urllib3/client"
    if "_worker (concurrent/futures/thread.py" in stack:
        return "workers: other"
    if "record_run (" in stack:
        return "sync_runs record (second pipeline.run)"
    if "Pipeline.extract (" in stack:
        return _extract_bucket(stack.split("Pipeline.extract (", 1)[1])
    if "Pipeline.normalize (" in stack:
        return "normalize step"
    if "Pipeline.load (" in stack or "Load." in stack:
        return "load step"
    if "_find_and_load" in stack:
        return "imports"
    return "other (pipeline set-up, config, state, sampler)"


def breakdown(path: Path, main_thread_extract_only: bool) -> dict[str, Any]:
    """py-spy raw samples by owner. `--gil` profile: all samples (who holds the GIL);
    `--idle --threads`: only the main thread inside dlt's extract (what it waits on too)."""
    buckets: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "buckets": []}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        if main_thread_extract_only and (
            "MainThread" not in stack.split(";", 1)[0] or "Pipeline.extract (" not in stack
        ):
            continue
        n = int(count)
        total += n
        buckets[_stack_bucket(stack)] += n
    rows = [(100.0 * n / total, key) for key, n in buckets.most_common()] if total else []
    return {"samples": total, "buckets": rows}


def summarize_pstats(path: Path, top: int = 30) -> dict[str, Any]:
    import io
    import pstats

    if not path.exists():
        return {"text": ""}
    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.sort_stats("cumulative").print_stats(top)
    return {"text": buffer.getvalue()}


# =============================================================================================
# figures, ratios, targets
# =============================================================================================


def _get(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    data = results.get(name)
    return data if data and data.get("wall_s") is not None else None


def _answered(data: dict[str, Any]) -> int:
    return data["requests_total"] - data.get("rate_limited", 0)


def _max_429(data: dict[str, Any]) -> int:
    per_window = (data.get("server") or {}).get("rate_limited_per_window") or {}
    return max(per_window.values(), default=0)


def summarize(results: dict[str, Any], what_if: str) -> list[dict[str, Any]]:
    """One row per scenario, with its ideal, ratios, target and verdict."""
    rows: list[dict[str, Any]] = []
    base = _get(results, "baseline_c1")
    per_request = base["wall_s"] / base["requests_total"] if base else None

    def add(name: str, label: str, fleet: dict[str, Any], **extra: Any) -> dict[str, Any] | None:
        data = _get(results, name)
        if data is None:
            if name in results:
                rows.append({"name": name, "label": label, "failed": results[name].get("error")})
            return None
        wall = data["wall_s"]
        latency = fleet.get("latency_ms", 0.0) / 1000.0
        row = {
            "name": name,
            "label": label,
            "fleet": f"{fleet['pumps']:,} / {fleet['users']}",
            "latency_ms": fleet.get("latency_ms", 0.0),
            "concurrency": data["concurrency"],
            "budget": data.get("budget"),
            "requests": data["requests_total"],
            "wall_s": wall,
            "req_s": data["requests_total"] / wall,
            "rows": data["rows_total"],
            "rows_s": data["rows_total"] / wall,
            "rss_mb": data["peak_rss_mb"],
            "outcome": data["outcome"],
            "error": data.get("error"),
            "rate_limited": data.get("rate_limited", 0),
            "max_429": _max_429(data),
            "ideal_s": data["requests_total"] * latency / data["concurrency"] if latency else None,
            "speedup": None,
            "checks": [],
        }
        if per_request is not None and name != "baseline_c1" and latency:
            row["speedup"] = per_request * data["requests_total"] / wall
        row.update(extra)
        if row["ideal_s"]:
            row["vs_ideal"] = wall / row["ideal_s"]
        rows.append(row)
        return row

    def check(row: dict[str, Any] | None, what: str, value: float | None, ok: bool | None) -> None:
        if row is not None:
            row["checks"].append((what, value, ok))

    for name, label, spec in (
        ("full", f"full sync, concurrency {CONCURRENCY}", FULL),
        ("full_c8", "full sync, concurrency 8 (the default until 2026-12)", FULL),
        ("full_inprocess", "full sync, emulator in the sync's process", FULL),
        ("full_what_if", f"full sync, what-if loader_file_format={what_if}", FULL),
    ):
        row = add(name, label, spec)
        if row is not None and name in ("full", "full_what_if"):
            sp, vi = row["speedup"], row.get("vs_ideal")
            check(
                row,
                f"speedup vs sequential >= {TARGETS['speedup']:g}x",
                sp,
                None if sp is None else sp >= TARGETS["speedup"],
            )
            check(
                row,
                f"wall / ideal <= {TARGETS['ideal']:g}",
                vi,
                None if vi is None else vi <= TARGETS["ideal"],
            )
            check(row, "run succeeded", None, row["error"] is None)
    for name, of, label in (
        ("incremental", "full", f"incremental after {INCREMENTAL_FRACTION:.0%} report"),
        (
            "incremental_what_if",
            "full_what_if",
            f"incremental after {INCREMENTAL_FRACTION:.0%} report, what-if {what_if}",
        ),
    ):
        row = add(name, label, FULL)
        reference = _get(results, of)
        if row is not None and reference is not None:
            share = row["wall_s"] / reference["wall_s"]
            row["vs_full"] = share
            check(
                row,
                f"wall / full sync wall < {TARGETS['incremental']:.0%}",
                share,
                share < TARGETS["incremental"],
            )
            check(row, "run succeeded", None, row["error"] is None)
    if base is not None:
        spec = results["baseline_c1"].get("fleet", BASELINE)
        add("baseline_c1", "sequential baseline (concurrency 1)", spec, per_request_s=per_request)
    rate = RATE["limit"] / RATE["window"]
    for name, label, strict in (
        ("rate_configured", "rate limit 50/1 s, budget configured", True),
        ("rate_learned", "rate limit 50/1 s, budget learned from 429s", False),
    ):
        row = add(name, label, RATE)
        if row is not None:
            data = results[name]
            row["ideal_s"] = _answered(data) / rate
            row["vs_ideal"] = row["wall_s"] / row["ideal_s"]
            row["speedup"] = None
            if strict:
                check(
                    row,
                    f"wall / (requests / rate) <= {TARGETS['rate_ideal']:g}",
                    row["vs_ideal"],
                    row["vs_ideal"] <= TARGETS["rate_ideal"],
                )
                check(row, "429s per window <= 1", row["max_429"], row["max_429"] <= 1)
            check(
                row,
                "no failed request (no retry, run succeeded)",
                None,
                row["error"] is None and data["retries"] == 0,
            )
    for name, label, configured, target in RATE30_ROWS:
        row = add(name, label, RATE30)
        if row is not None:
            data = results[name]
            row["ideal_s"] = _answered(data) / (RATE30["limit"] / RATE30["window"])
            row["vs_ideal"] = row["wall_s"] / row["ideal_s"]
            row["speedup"] = None
            check(
                row,
                f"wall / (requests / rate) <= {target:g}",
                row["vs_ideal"],
                row["vs_ideal"] <= target,
            )
            if configured:
                check(row, "429s per window <= 1", row["max_429"], row["max_429"] <= 1)
            check(
                row,
                "no failed request (no retry, run succeeded)",
                None,
                row["error"] is None and data["retries"] == 0,
            )
    for name, label in (
        ("memory", "peak memory"),
        ("memory_what_if", f"peak memory, what-if loader_file_format={what_if}"),
    ):
        row = add(name, label, MEMORY)
        if row is not None:
            check(
                row,
                f"peak RSS < {TARGETS['rss_mb']:g} MB",
                row["rss_mb"],
                row["rss_mb"] < TARGETS["rss_mb"],
            )
            check(row, "run succeeded", None, row["error"] is None)
    return rows


def _fmt(value: Any, spec: str = ".1f", none: str = "—") -> str:
    if value is None:
        return none
    return format(value, spec)


def _verdict(row: dict[str, Any]) -> str:
    if row.get("failed"):
        return "FAILED"
    checks = [ok for _, _, ok in row["checks"] if ok is not None]
    if not row["checks"]:
        return "(reference)"
    return "met" if checks and all(checks) else "NOT met"


def _checks_text(row: dict[str, Any]) -> str:
    parts = []
    for what, value, ok in row["checks"]:
        shown = ""
        if isinstance(value, float):
            shown = f" ({value:.2f})"
        elif isinstance(value, int):
            shown = f" ({value})"
        flag = "✓" if ok else ("✗" if ok is not None else "?")
        parts.append(f"{flag} {what}{shown}")
    return "; ".join(parts)


COLUMNS = (
    ("scenario", "label", "s"),
    ("pumps/users", "fleet", "s"),
    ("lat ms", "latency_ms", ".0f"),
    ("conc", "concurrency", "d"),
    ("requests", "requests", ",d"),
    ("wall s", "wall_s", ".1f"),
    ("req/s", "req_s", ".0f"),
    ("rows/s", "rows_s", ",.0f"),
    ("peak RSS MB", "rss_mb", ".0f"),
    ("vs seq", "speedup", ".1f"),
    ("vs ideal", "vs_ideal", ".2f"),
    ("429s (max/win)", "_429", "s"),
    ("targets", "_verdict", "s"),
)


def _cells(row: dict[str, Any]) -> list[str]:
    if row.get("failed"):
        return [row["label"]] + ["—"] * (len(COLUMNS) - 2) + [f"FAILED: {row['failed']}"]
    cells = []
    for _, key, spec in COLUMNS:
        if key == "_429":
            cells.append(f"{row['rate_limited']} ({row['max_429']})")
        elif key == "_verdict":
            cells.append(_verdict(row))
        elif key == "speedup" and row.get("speedup") is not None:
            cells.append(f"{row['speedup']:.1f}x")
        elif key == "vs_ideal" and row.get("vs_ideal") is not None:
            cells.append(f"{row['vs_ideal']:.2f}x")
        else:
            value = row.get(key)
            cells.append(value if isinstance(value, str) else _fmt(value, spec))
    return cells


def render_console(rows: list[dict[str, Any]]) -> str:
    header = [c[0] for c in COLUMNS]
    body = [_cells(r) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False))]
    lines.append("  ".join("-" * w for w in widths))
    for cells in body:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)))
    for row in rows:
        if row.get("checks"):
            lines.append(f"  {row['label']}: {_checks_text(row)}")
    return "\n".join(lines)


def _outside_venv(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or spec.origin.startswith(sys.prefix):
        return ""
    return " (from PYTHONPATH, not the project's environment: what-if runs only)"


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
            or "unknown"
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "pipelines"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if dirty:
            commit += " (pipelines/ modified)"
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": ram,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "dlt": version("dlt"),
        "duckdb": version("duckdb"),
        "requests": version("requests"),
        "pyarrow": version("pyarrow") + _outside_venv("pyarrow"),
        "commit": commit,
    }


# =============================================================================================
# bench/RESULTS.md
# =============================================================================================


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_measured(rows: list[dict[str, Any]], results: dict[str, Any]) -> str:
    """The measured section of bench/RESULTS.md, markers included: figures only."""
    info = results.get("machine") or machine()
    out = [
        MEASURED_START,
        "",
        "## Measured",
        "",
        "Written by `make bench-sync` (`bench/sync.py`), which replaces everything between these "
        f"markers. Measured {results.get('generated') or 'now'} in "
        f"{results.get('bench_seconds', 0):.0f} s.",
        "",
        *(
            [f"**Scaled run (BENCH_SCALE={SCALE:g}): fleets are not the issue's sizes.**", ""]
            if SCALE != 1
            else []
        ),
        "### Machine",
        "",
        _md_table(["", ""], [[k, v] for k, v in info.items()]),
        "",
        "### How it was measured",
        "",
        "- The emulator (`tests/portal_emulator`) runs in its **own process** "
        "(`python -m bench.sync serve`), so its request handling does not share the sync's GIL; "
        "one full sync is repeated with the emulator inside the sync's process for comparison "
        "(row *emulator in the sync's process*; its peak RSS includes the emulator).",
        "- Every sync runs in a **fresh process** (`python -m bench.sync sync`) with a fresh "
        "DuckDB file and `pipelines_dir`; the incremental run reuses the full sync's. "
        "*wall s* is `run_sync()` from call to return (extract, normalize, load, and the "
        "`sync_runs` record), without interpreter start-up and imports. *peak RSS* is "
        "`ru_maxrss` of that process.",
        "- *requests* are the client's requests (429s included); *rows* are rows normalized "
        "into all tables (child tables included).",
        "- *ideal* = requests × latency / concurrency; for the rate-limited rows, answered "
        f"requests / rate ({RATE['limit']} per {RATE['window']:g} s).",
        "- *vs seq* = estimated sequential wall time / wall time. The sequential time is "
        + (
            "measured at concurrency 1 on the same fleet (`--full-baseline`)."
            if (results.get("baseline_c1") or {}).get("fleet", BASELINE) == FULL
            else f"measured at concurrency 1 on {BASELINE['pumps']:,} pumps / "
            f"{BASELINE['users']} users (same latency) and **extrapolated per request** to "
            "each scenario's request count (`--full-baseline` measures it on the full fleet; "
            "about 4 minutes)."
        ),
        "- 429s: the client's count; *(max/win)* is the most 429s the emulator answered in one "
        "of its fixed rate-limit windows.",
        "",
        "### Scenarios",
        "",
        _md_table([c[0] for c in COLUMNS], [_cells(r) for r in rows]),
        "",
        "Targets (a benchmark on this machine, not a test):",
        "",
    ]
    for row in rows:
        if row.get("checks"):
            out.append(f"- **{row['label']}** — {_verdict(row)}: {_checks_text(row)}")
    out += ["", "### Where the time and memory go", ""]
    step_rows = []
    for name, data in results.items():
        if not isinstance(data, dict) or data.get("wall_s") is None or "steps" not in data:
            continue
        steps = data.get("steps") or {}
        step_rows.append(
            [
                name,
                _fmt(data["wall_s"]),
                _fmt(steps.get("extract")),
                _fmt(steps.get("normalize")),
                _fmt(steps.get("load")),
                _fmt(data.get("record_run_s")),
                _fmt(data.get("cpu_s")),
                _fmt(data.get("emulator_cpu_s")),
                _fmt(data.get("peak_rss_mb"), ".0f"),
                _fmt(data.get("rss_after_imports_mb"), ".0f"),
                ", ".join(data.get("job_formats") or []),
                _rewritten(data),
            ]
        )
    out.append(
        _md_table(
            [
                "run",
                "wall s",
                "extract s",
                "normalize s",
                "load s",
                "sync_runs record s",
                "sync CPU s",
                "emulator CPU s",
                "peak RSS MB",
                "RSS after imports MB",
                "job files",
                "alarm raised_at rewritten",
            ],
            step_rows,
        )
    )
    out += ["", "### Requests per endpoint", ""]
    names = [
        n
        for n in ("full", "incremental", "baseline_c1", "rate_configured", "rate_learned", "memory")
        if _get(results, n)
    ]
    endpoints = sorted({e for n in names for e in results[n]["requests"]})
    out.append(
        _md_table(
            ["endpoint (client requests)"] + names,
            [[e] + [f"{results[n]['requests'].get(e, 0):,}" for n in names] for e in endpoints]
            + [["total"] + [f"{results[n]['requests_total']:,}" for n in names]],
        )
    )
    for name in ("rate_configured", "rate_learned"):
        data = _get(results, name)
        if data is None:
            continue
        server = data.get("server") or {}
        per_window = server.get("rate_limited_per_window") or {}
        statuses = collections.Counter()
        for key, n in (server.get("status_counts") or {}).items():
            statuses[key.rsplit(" ", 1)[1]] += n
        out += [
            "",
            f"**{name}** (emulator side): answers by status {dict(sorted(statuses.items()))}; "
            f"429s in {len(per_window)} of ~{int(data['wall_s'] / RATE['window']) + 1} windows, "
            f"at most {max(per_window.values(), default=0)} in one; client waited "
            f"{data['rate_limit_wait_s']:.1f} s in total for the budget or a Retry-After.",
        ]
    probe = results.get("probe")
    if probe:
        out += [
            "",
            "**probe** (DuckDB executes the largest `insert_values` job of the full sync alone, "
            f"in a fresh process): `{probe['table']}`, {probe['rows']:,} rows, "
            f"{probe['sql_mb']:.1f} MB of SQL, {probe['seconds']:.1f} s, "
            f"+{probe['peak_rss_mb'] - probe['rss_before_mb']:.0f} MB peak RSS.",
        ]
    if results.get("notes"):
        out += ["", "Notes:", "", *[f"- {n}" for n in results["notes"]]]
    gil, idle, cprof = (results.get(k) for k in ("profile_gil", "profile_idle", "profile_cprofile"))
    if gil or idle or cprof:
        out += ["", "### Profiles of the full sync (one more run each)", ""]
    if idle and idle.get("samples"):
        out += [
            "What dlt's main thread does during the extract step (py-spy `--idle --threads`, "
            f"{idle['samples']} samples at 100 Hz; time waiting for the GIL counts where the "
            "thread waits):",
            "",
            "```",
            *[f"{share:5.1f}%  {key}" for share, key in idle["buckets"]],
            "```",
            "",
        ]
    if gil and gil.get("samples"):
        out += [
            f"Who holds the GIL (py-spy `--gil`, {gil['samples']} samples at 100 Hz = "
            f"{gil['samples'] / 100:.1f} s of GIL-held time, any thread, the whole run):",
            "",
            "```",
            *[f"{share:5.1f}%  {key}" for share, key in gil["buckets"]],
            "```",
            "",
            "Self time (the frame on top of the stack), import machinery left out:",
            "",
            "```",
            *[
                f"{share:5.1f}%  {frame}"
                for share, frame in gil["self"]
                if "frozen importlib" not in frame
            ][:20],
            "```",
        ]
    if cprof:
        out += [
            "cProfile of the main thread (py-spy was not found; install it and set "
            "`BENCH_PY_SPY` or put it on PATH for whole-process profiles):",
            "",
            "```",
            cprof.get("text", "").strip(),
            "```",
        ]
    out += [
        "",
        "<details><summary>Raw figures (JSON)</summary>",
        "",
        "```json",
        json.dumps(results, indent=1, default=str),
        "```",
        "</details>",
        "",
        MEASURED_END,
    ]
    return "\n".join(out)


def write_results(measured: str, path: Path = RESULTS) -> None:
    """Replace the measured section of `path`, markers included; keep the rest as it is."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# Sync benchmark results\n\n## Findings\n\nWritten by hand; none yet.\n\n{measured}\n"
        )
        return
    text = path.read_text()
    start = text.find(MEASURED_START)
    end = text.find(MEASURED_END, start + 1) if start >= 0 else -1
    if start < 0 or end < 0:
        print(f"{path.name} has no measured markers: the measured section is appended")
        path.write_text(text.rstrip("\n") + "\n\n" + measured + "\n")
        return
    path.write_text(text[:start] + measured + text[end + len(MEASURED_END) :])


def _rewritten(data: dict[str, Any]) -> str:
    check = data.get("text_timestamp")
    if not check:
        return "—"
    return f"{check['rewritten']:,} of {check['values']:,}"


# =============================================================================================
# command line
# =============================================================================================


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    parser.add_argument(
        "--only",
        type=lambda s: set(s.split(",")),
        default=None,
        help="comma-separated: full,incremental,probe,default_concurrency,"
        "inprocess,what_if,baseline,rate_limit,rate_limited,memory",
    )
    parser.add_argument(
        "--full-baseline",
        action="store_true",
        help="measure concurrency 1 on the full 5,000-pump fleet (~4 min)",
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "yes", "no"),
        default="auto",
        help="profile the full sync in extra runs: twice under py-spy (on PATH or "
        "$BENCH_PY_SPY), else once under cProfile (main thread); auto = unless --only",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--render",
        metavar="RESULTS_MD",
        help="rewrite the measured section of bench/RESULTS.md from the raw figures (JSON) "
        "kept in a results file (no runs)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")

    s = sub.add_parser("serve", help="(internal) the emulator, driven over stdin/stdout")
    s.add_argument("--pumps", type=int, required=True)
    s.add_argument("--users", type=int, required=True)
    s.add_argument("--seed", type=int, default=SEED)
    s.add_argument("--latency-ms", type=float, default=0.0)
    s.add_argument("--rate-limit", default=None)

    y = sub.add_parser("sync", help="(internal) one sync in this process")
    y.add_argument("--workdir", required=True)
    y.add_argument("--out", required=True)
    y.add_argument("--url")
    y.add_argument("--key")
    y.add_argument("--run-at")
    y.add_argument("--inprocess", help="JSON fleet spec: run the emulator in this process")
    y.add_argument("--concurrency", type=int, default=CONCURRENCY)
    y.add_argument("--requests-per-window", type=int, default=None)
    y.add_argument("--window-seconds", type=float, default=1.0)
    y.add_argument("--loader-file-format", default=None)
    y.add_argument("--cprofile", default=None)

    p = sub.add_parser("probe", help="(internal) DuckDB parses one insert_values job")
    p.add_argument("--file", required=True)
    p.add_argument("--out", required=True)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "sync":
        return sync_main(args)
    if args.command == "probe":
        return probe_main(args)
    if args.render:
        return rerender(Path(args.render))
    return Bench(args).run()


def rerender(source: Path) -> int:
    """The tables' layout changed, the figures did not: render the kept raw figures again."""
    text = source.read_text()
    text = text[max(0, text.find(MEASURED_START)) :]  # the hand-written text may quote JSON too
    results = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    table = summarize(results, results.get("what_if_format", "parquet"))
    print(render_console(table))
    write_results(render_measured(table, results))
    print(f"\nrewrote the measured section of {RESULTS.relative_to(ROOT)} from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
