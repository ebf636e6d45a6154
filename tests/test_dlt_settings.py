"""dlt's own settings reach the job: `progress` and `[runtime] request_timeout`.

A user who knows dlt sets these the dlt way (`PROGRESS=log`, `RUNTIME__REQUEST_TIMEOUT=10`); the
job must not override them with its own fixed values.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dlt.common.runtime.collector import LogCollector, NullCollector

from pipelines import cli
from pipelines.runner import make_pipeline
from tests.conftest import cli_environment
from tests.portal_emulator import Fleet, PortalEmulator

ROOT = Path(__file__).resolve().parent.parent


def test_dlt_progress_setting_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINES__PUMP_PORTAL__PIPELINES_DIR", str(tmp_path / "pipelines"))

    monkeypatch.setenv("PROGRESS", "log")
    with_log = make_pipeline()
    monkeypatch.delenv("PROGRESS")
    plain = make_pipeline()

    assert isinstance(with_log.collector, LogCollector)
    assert isinstance(plain.collector, NullCollector)


@pytest.fixture
def slow_portal():
    """Every answer takes 1.5 s: slower than the timeout set below, well within the default."""
    with PortalEmulator(Fleet.generate(pumps=4, users=1, seed=5), latency=1.5) as emu:
        yield emu


def run_cli(emu: PortalEmulator, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **cli_environment(emu, tmp_path),
        "SOURCES__PUMP_PORTAL__MAX_RETRIES": "0",
        **variables,
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--no-models"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dlt_request_timeout_bounds_every_request(slow_portal: PortalEmulator, tmp_path) -> None:
    timed_out = run_cli(slow_portal, tmp_path / "short", RUNTIME__REQUEST_TIMEOUT="0.5")
    patient = run_cli(slow_portal, tmp_path / "default")

    assert timed_out.returncode == cli.EXIT_API_UNAVAILABLE, timed_out.stdout + timed_out.stderr
    assert "did not answer in time (ReadTimeout)" in timed_out.stderr
    assert patient.returncode == cli.EXIT_OK, patient.stdout + patient.stderr
