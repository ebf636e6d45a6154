"""However a run ends, `status` knows, nothing is lost, and the next run completes it.

The real command line as a subprocess against the emulator: success, partial, auth and API
failures, a destination held by another process (before the run and mid-run), SIGTERM and SIGINT
during extract, load and models. These tests isolate their files with `cli_environment` (the
plain-path test is test_first_run.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from pipelines import cli
from tests.conftest import cli_environment
from tests.portal_emulator import Fleet, PortalEmulator

ROOT = Path(__file__).resolve().parent.parent
PUMPS = 40


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.generate(pumps=PUMPS, users=3, seed=21)


@pytest.fixture
def env(emulator, tmp_path) -> dict[str, str]:
    return {**cli_environment(emulator, tmp_path), "SOURCES__PUMP_PORTAL__CONCURRENCY": "2"}


def start(env: dict[str, str], *args: str, level: str = "INFO") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "--log-level", level, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    process = start(env, *args)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def journal(tmp_path: Path) -> list[dict]:
    lines = (tmp_path / "pipelines" / "pump_portal.runs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def warehouse(tmp_path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(tmp_path / "pump_portal_sync.duckdb"), read_only=True) as db:
        return db.execute(sql).fetchall()


def error_line(completed: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in completed.stderr, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, completed.stderr
    return errors[0]


def assert_complete(emulator: PortalEmulator, tmp_path: Path) -> None:
    """Every pump's current row and reading, each once."""
    fleet = emulator.fleet
    seen = sorted(p for p in fleet.pump_ids() if fleet.pumps[p].last_seen is not None)
    ids = warehouse(tmp_path, "select pump_id from pump_portal.controllers order by 1")
    assert [pump_id for (pump_id,) in ids] == sorted(fleet.pump_ids())
    observed = warehouse(
        tmp_path,
        "select pump_id, count(*) from pump_portal.controller_observations group by 1 order by 1",
    )
    assert observed == [(pump_id, 1) for pump_id in seen]


def test_status_tells_success_partial_and_each_failure_apart(emulator, fleet, env, tmp_path):
    assert run(env, "run").returncode == cli.EXIT_OK
    assert run(env, "status").returncode == cli.EXIT_OK

    revoked = run({**env, "SOURCES__PUMP_PORTAL__API_KEY": emulator.keys.revoked}, "run")
    assert revoked.returncode == cli.EXIT_AUTH
    status = run(env, "status")
    assert status.returncode == cli.EXIT_STALE
    assert "the last run failed (extract: AuthenticationError" in status.stdout

    emulator.inject("/v1/pumps", status=500, code="internal_error", times=None)
    down = run({**env, "SOURCES__PUMP_PORTAL__MAX_RETRIES": "0"}, "run")
    emulator.clear_faults()
    assert down.returncode == cli.EXIT_API_UNAVAILABLE
    assert "the last run failed (extract: PortalUnavailable" in run(env, "status").stdout

    pump = next(p for p in fleet.pump_ids() if p not in fleet.missing_detail_pumps)
    fleet.forbidden_detail_pumps.add(pump)
    emulator.advance(600)
    emulator.report([pump])
    assert run(env, "run").returncode == cli.EXIT_PARTIAL
    assert run(env, "status").returncode == cli.EXIT_OK  # partial is data, not a failure

    outcomes = [(row["outcome"], row["failed_step"]) for row in journal(tmp_path)]
    assert outcomes == [
        ("success", None),
        ("failed", "extract"),
        ("failed", "extract"),
        ("partial", None),
    ]
    # the failed runs reached the warehouse too, with the next run that could write there
    stored = warehouse(tmp_path, "select outcome from pump_portal.sync_runs order by started_at")
    assert [outcome for (outcome,) in stored] == ["success", "failed", "failed", "partial"]


def hold(path: Path, read_only: bool) -> subprocess.Popen[str]:
    """Another process holding a DuckDB file until its stdin closes."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == '1'); "
            "print('ready', flush=True); sys.stdin.readline()",
            str(path),
            "1" if read_only else "0",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "ready"
    return holder


def test_a_locked_destination_is_recorded_and_backfilled_into_sync_runs(emulator, env, tmp_path):
    assert run(env, "run").returncode == cli.EXIT_OK
    holder = hold(tmp_path / "pump_portal_sync.duckdb", read_only=False)
    try:
        locked = run({**env, "SYNC__LOCK_WAIT_SECONDS": "1"}, "run")
        status = run(env, "status")
    finally:
        holder.kill()
        holder.wait()

    assert locked.returncode == cli.EXIT_DESTINATION
    assert f"(pid {holder.pid})" in error_line(locked)
    assert status.returncode == cli.EXIT_STALE
    assert "the last run failed (start: DestinationLocked" in status.stdout
    assert run(env, "run").returncode == cli.EXIT_OK
    stored = warehouse(
        tmp_path, "select outcome, failed_step from pump_portal.sync_runs order by started_at"
    )
    assert stored == [("success", None), ("failed", "start"), ("success", None)]


class MidRunReader:
    """A reader that opens the working file once the run is extracting and holds it `seconds`:
    the emulator answers the run's first detail call only once the reader has the file."""

    def __init__(self, emulator: PortalEmulator, working: Path, seconds: float) -> None:
        self.working, self.seconds = working, seconds
        self.released = threading.Event()
        self._started = threading.Event()
        emulator.on_request(self._on_request)

    def _on_request(self, request) -> None:
        if request.template.startswith("/v1/pumps/:pumpId") and not self._started.is_set():
            self._started.set()
            holder = hold(self.working, read_only=True)
            threading.Timer(self.seconds, self._release, args=(holder,)).start()

    def _release(self, holder: subprocess.Popen[str]) -> None:
        holder.kill()
        holder.wait()
        self.released.set()


def test_a_reader_opening_the_working_file_mid_run_makes_the_load_wait(emulator, env, tmp_path):
    reader = MidRunReader(emulator, tmp_path / "pump_portal_sync.duckdb", seconds=3)

    completed = run({**env, "SYNC__LOCK_WAIT_SECONDS": "30"}, "run")

    assert reader.released.is_set()
    assert completed.returncode == cli.EXIT_OK, completed.stderr
    assert "waiting" in completed.stderr and "the load tries again" in completed.stderr
    assert_complete(emulator, tmp_path)


def test_a_reader_holding_the_working_file_past_the_wait_fails_the_load_and_loses_nothing(
    emulator, env, tmp_path
):
    reader = MidRunReader(emulator, tmp_path / "pump_portal_sync.duckdb", seconds=6)

    gave_up = run({**env, "SYNC__LOCK_WAIT_SECONDS": "1.5"}, "run")
    emulator.on_request(None)
    assert reader.released.wait(30)

    assert gave_up.returncode == cli.EXIT_DESTINATION, gave_up.stderr
    assert "the load gave up" in error_line(gave_up)
    assert journal(tmp_path)[-1]["outcome"] == "failed"
    assert run(env, "status").returncode == cli.EXIT_STALE
    recovered = run(env, "run")
    assert recovered.returncode == cli.EXIT_OK, recovered.stderr
    assert "loading it first" in recovered.stderr
    assert_complete(emulator, tmp_path)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_extract_stops_fetching_and_loads_nothing(
    emulator, env, tmp_path, signum, code
):
    process: list[subprocess.Popen[str]] = []
    after_signal = {"detail calls": 0}

    def signal_on_tenth_detail_call(request) -> None:
        if request.template.startswith("/v1/pumps/:pumpId"):
            after_signal["detail calls"] += 1
            if after_signal["detail calls"] == 10:
                process[0].send_signal(signum)
            if after_signal["detail calls"] >= 10:
                # A slow portal from here on: the job's reaction, not the machine's load,
                # decides how many calls still arrive.
                time.sleep(0.3)

    emulator.on_request(signal_on_tenth_detail_call)
    process.append(start(env, "run"))
    out, err = process[0].communicate(timeout=60)
    emulator.on_request(None)
    stopped_at = after_signal["detail calls"]

    assert process[0].returncode == code, err
    name = signal.Signals(signum).name
    assert f"interrupted by {name} during extract: nothing of this run was loaded" in (
        error_line(subprocess.CompletedProcess([], code, out, err))
    )
    # the 10th and what the 2 workers had in flight, far from all 2 x PUMPS detail calls
    assert stopped_at <= 12
    assert journal(tmp_path)[-1]["outcome"] == "interrupted"
    loaded = "select count(*) from information_schema.tables where table_name = 'controllers'"
    assert warehouse(tmp_path, loaded) == [(0,)]
    assert run(env, "status").returncode == cli.EXIT_STALE

    assert run(env, "run").returncode == cli.EXIT_OK
    assert_complete(emulator, tmp_path)


def test_sigterm_during_load_leaves_the_package_pending_for_the_next_run(emulator, env, tmp_path):
    process = start(env, "run", "--no-models")
    normalized = tmp_path / "pipelines" / "pump_portal" / "load" / "normalized"

    def signal_when_loading() -> None:
        while process.poll() is None:
            if any(normalized.glob("*/started_jobs/*")) or any(
                normalized.glob("*/completed_jobs/*")
            ):
                process.send_signal(signal.SIGTERM)
                return
            time.sleep(0.0005)

    watcher = threading.Thread(target=signal_when_loading, daemon=True)
    watcher.start()
    out, err = process.communicate(timeout=60)
    watcher.join(timeout=5)
    if process.returncode == cli.EXIT_OK:
        pytest.fail("the load finished before the signal reached it")

    assert process.returncode == 143, err
    line = error_line(subprocess.CompletedProcess([], 143, out, err))
    assert "interrupted by SIGTERM during load: the load package stays pending" in line
    assert journal(tmp_path)[-1]["outcome"] == "interrupted"

    recovered = run(env, "run")
    assert recovered.returncode == cli.EXIT_OK, recovered.stderr
    assert "loading it first" in recovered.stderr
    assert_complete(emulator, tmp_path)


def test_sigterm_during_models_keeps_the_live_models(emulator, env, tmp_path):
    assert run(env, "run").returncode == cli.EXIT_OK
    snapshots = "select sum(snapshot_count) from pump_portal_models.fleet_history"
    assert warehouse(tmp_path, snapshots) == [(1,)]
    emulator.advance(600)
    emulator.report(emulator.fleet.pump_ids()[:5])

    process = start(env, "run", level="DEBUG")
    for line in process.stderr:
        if "built pump_portal_models." in line:  # the first table model is built
            process.send_signal(signal.SIGTERM)
            break
    out, rest = process.communicate(timeout=60)

    assert process.returncode == 143, rest
    assert "interrupted by SIGTERM during models: the data is loaded" in rest
    assert warehouse(tmp_path, snapshots) == [(1,)]  # the models of the first run
    # Its row went in with its data; how it ended was written after.
    ending = "select outcome, failed_step from pump_portal.sync_runs order by started_at"
    assert warehouse(tmp_path, ending) == [("success", None), ("interrupted", "models")]
    observations = warehouse(tmp_path, "select count(*) from pump_portal.controller_observations")
    assert run(env, "run").returncode == cli.EXIT_OK
    leftovers = warehouse(
        tmp_path,
        "select table_name from information_schema.tables "
        "where table_schema = 'pump_portal_models' and table_name like '%\\_\\_next' escape '\\'",
    )
    assert leftovers == []
    assert warehouse(tmp_path, snapshots) == [(3,)]
    assert warehouse(tmp_path, "select count(*) from pump_portal.controller_observations") == (
        observations
    )


def test_each_sync_is_one_load_and_dlt_trace_shows_it(emulator, fleet, env, tmp_path):
    """`sync_runs` and `skipped_items` travel in the sync's own load package, so dlt's tools
    (`_dlt_loads`, `dlt pipeline pump_portal trace`) show the real run. Regression for issue #12:
    a second `pipeline.run` for the bookkeeping doubled `_dlt_loads` and hid the data run."""
    assert run(env, "run").returncode == cli.EXIT_OK
    pump = next(p for p in fleet.pump_ids() if p not in fleet.missing_detail_pumps)
    fleet.forbidden_detail_pumps.add(pump)
    emulator.advance(600)
    emulator.report([pump])
    assert run(env, "run").returncode == cli.EXIT_PARTIAL

    loads = warehouse(tmp_path, "select load_id from pump_portal._dlt_loads order by load_id")
    runs = warehouse(
        tmp_path,
        "select _dlt_load_id, outcome, finished_at, duration_s from pump_portal.sync_runs "
        "order by started_at",
    )
    skipped = warehouse(
        tmp_path,
        "select _dlt_load_id, item_id, code from pump_portal.skipped_items "
        "where code = 'forbidden'",
    )
    # Two syncs, two loads; each sync re-merges the journal's recent rows, so both rows now
    # carry the second load's id.
    assert len(loads) == 2
    assert [load_id for (load_id, *_) in runs] == [loads[1][0]] * 2
    assert [outcome for (_, outcome, *_) in runs] == ["success", "partial"]
    # The rows tell how each run ended, as the journal does, not where its extraction stopped.
    ended = journal(tmp_path)
    assert [(finished, duration) for (_, _, finished, duration) in runs] == [
        (dt.datetime.fromisoformat(row["finished_at"]), row["duration_s"]) for row in ended
    ]
    assert skipped == [(loads[1][0], pump, "forbidden")] * 2  # its metadata and its summary
    trace = subprocess.run(
        [
            str(Path(sys.executable).with_name("dlt")),
            "pipeline",
            "--pipelines-dir",
            str(tmp_path / "pipelines"),
            "pump_portal",
            "trace",
        ],
        env={**os.environ, **env, "RUNTIME__DLTHUB_TELEMETRY": "false"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trace.returncode == 0, trace.stderr
    assert "controller_observations" in trace.stdout and "sync_runs" in trace.stdout
