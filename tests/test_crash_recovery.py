"""A run killed with SIGKILL mid-extract or mid-load: the next run loads everything, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dlt
import pytest

from pipelines.runner import make_pipeline
from tests.conftest import cli_environment, rows, scalar
from tests.portal_emulator import Fleet, PortalEmulator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def slow_emulator():
    fleet = Fleet.generate(pumps=60, users=4, seed=5)
    emu = PortalEmulator(fleet, latency=0.005)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def start_cli(emu: PortalEmulator, tmp_path: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **cli_environment(emu, tmp_path),
        "SOURCES__PUMP_PORTAL__CONCURRENCY": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "--log-level", "WARNING", "run", "--no-models"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def open_pipeline(tmp_path: Path) -> dlt.Pipeline:
    return make_pipeline(
        destination=dlt.destinations.duckdb(str(tmp_path / "pump_portal_sync.duckdb")),
        dataset_name="pump_portal",
        pipelines_dir=str(tmp_path / "pipelines"),
        progress=False,
    )


def assert_everything_loaded_once(emu: PortalEmulator, pipeline: dlt.Pipeline) -> None:
    fleet = emu.fleet
    seen = [p for p in fleet.pump_ids() if fleet.pumps[p].last_seen is not None]
    assert scalar(pipeline, "select count(*) from controllers") == 60
    assert scalar(pipeline, "select count(distinct pump_id) from controllers") == 60
    assert scalar(pipeline, "select count(*) from controller_observations") == len(seen)
    assert scalar(pipeline, "select count(*) from pump_metadata") == 60 - len(
        fleet.missing_detail_pumps
    )
    assert (
        rows(
            pipeline,
            "select pump_id, count(*) from pump_summaries group by 1 having count(*) > 1",
        )
        == []
    )
    assert scalar(pipeline, "select count(*) from delegated_users") == 4


def test_sigkill_mid_extract_then_next_run_loads_everything(slow_emulator, tmp_path):
    process: list[subprocess.Popen[str]] = []
    details = {"n": 0}

    def kill_after_40_detail_calls(request):
        if request.template.startswith("/v1/pumps/:pumpId"):
            details["n"] += 1
            if details["n"] == 40 and process:
                os.kill(process[0].pid, signal.SIGKILL)

    slow_emulator.on_request(kill_after_40_detail_calls)
    process.append(start_cli(slow_emulator, tmp_path))
    process[0].wait(timeout=120)
    slow_emulator.on_request(None)
    assert process[0].returncode == -signal.SIGKILL

    second = start_cli(slow_emulator, tmp_path)
    _, err = second.communicate(timeout=120)

    assert second.returncode == 0, err  # the never-seen pumps' 404s are no failure
    assert_everything_loaded_once(slow_emulator, open_pipeline(tmp_path))


def kill_when_loading(process: subprocess.Popen[str], normalized: Path) -> threading.Thread:
    """SIGKILL the run once the destination has completed some of a package's jobs, not all."""

    def watch() -> None:
        while process.poll() is None:
            if any(normalized.glob("*/completed_jobs/*")):
                os.kill(process.pid, signal.SIGKILL)
                return
            time.sleep(0.0005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sigkill_mid_load_then_next_run_finishes_it_and_loads_new_data(slow_emulator, tmp_path):
    first = start_cli(slow_emulator, tmp_path)
    normalized = tmp_path / "pipelines" / "pump_portal" / "load" / "normalized"
    watcher = kill_when_loading(first, normalized)
    first.wait(timeout=120)
    watcher.join(timeout=5)
    if first.returncode != -signal.SIGKILL:
        pytest.fail(f"the run finished before it could be killed mid-load: {first.returncode}")
    assert open_pipeline(tmp_path).has_pending_data

    # new data arrives before the next run: it must load too, not only the pending package
    fleet = slow_emulator.fleet
    reporting = [p for p in fleet.pump_ids() if fleet.pumps[p].last_seen is not None][:3]
    slow_emulator.advance(600)
    slow_emulator.report(reporting)
    second = start_cli(slow_emulator, tmp_path)
    _, err = second.communicate(timeout=120)

    assert second.returncode == 0, err  # the 404s of the never-seen pumps were in run 1
    assert "loading it first" in err
    pipeline = open_pipeline(tmp_path)
    assert not pipeline.has_pending_data
    seen = [p for p in fleet.pump_ids() if fleet.pumps[p].last_seen is not None]
    assert scalar(pipeline, "select count(*) from controllers") == 60
    # the killed run's observations (finished from its pending package) plus the 3 new ones
    assert scalar(pipeline, "select count(*) from controller_observations") == len(seen) + 3
    assert scalar(pipeline, "select count(*) from fleet_snapshots") == 2
    assert (
        rows(
            pipeline,
            "select pump_id, last_seen, count(*) from controller_observations "
            "group by 1, 2 having count(*) > 1",
        )
        == []
    )
