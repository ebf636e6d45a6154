"""The API key never leaves the client: not in output, logs, traces, state or the warehouse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_environment

ROOT = Path(__file__).resolve().parent.parent


def run_cli_debug(emu, key: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **cli_environment(emu, tmp_path, key), "RUNTIME__LOG_LEVEL": "DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--log-level", "DEBUG", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def files_containing(folder: Path, needle: bytes) -> list[str]:
    return [
        str(path) for path in folder.rglob("*") if path.is_file() and needle in path.read_bytes()
    ]


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_api_key_appears_nowhere_at_debug_level(emulator, tmp_path, outcome):
    key = emulator.keys.full
    if outcome == "failure":
        # a failing run stores its exception in dlt's trace: it must not carry the key either
        emulator.inject("/v1/pumps/:pumpId/summary", status=500, times=None)

    completed = run_cli_debug(emulator, key, tmp_path)

    assert completed.returncode == (0 if outcome == "success" else 4), completed.stderr
    assert "DEBUG" in completed.stderr  # the run really logged at DEBUG
    assert key not in completed.stdout
    assert key not in completed.stderr
    assert files_containing(tmp_path, key.encode()) == []
    assert (tmp_path / "pump_portal_sync.duckdb").stat().st_size > 0
    assert any((tmp_path / "pipelines").rglob("*"))
