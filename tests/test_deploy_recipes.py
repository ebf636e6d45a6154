"""The README's deploy recipes, run exactly as written (the install folder is a scratch one)."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pipelines import cli
from tests.conftest import cli_environment

ROOT = Path(__file__).resolve().parent.parent
INSTALL_DIR = "/srv/pump-portal-sync"


def recipe(name: str) -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- recipe:{name} -->\n```\w*\n(.*?)```", readme, re.S)
    assert found, f"README has no recipe {name}"
    return found.group(1)


@pytest.fixture
def install_dir(tmp_path: Path) -> Path:
    """A folder that looks like the install folder: the venv and .dlt/ of this checkout."""
    app = tmp_path / "app"
    app.mkdir()
    (app / ".venv").symlink_to(ROOT / ".venv")
    (app / ".dlt").symlink_to(ROOT / ".dlt")
    return app


def run_shell(command: str, install_dir: Path, env: dict[str, str]) -> int:
    command = command.replace(INSTALL_DIR, str(install_dir))
    return subprocess.run(["sh", "-c", command], env={**os.environ, **env}, timeout=180).returncode


def test_cron_line_runs_the_sync_and_logs(emulator, install_dir, tmp_path):
    line = recipe("cron").strip()
    schedule, command = line.split()[:5], " ".join(line.split()[5:])
    assert schedule == ["*/10", "*", "*", "*", "*"]

    code = run_shell(command, install_dir, cli_environment(emulator, tmp_path))

    assert code == cli.EXIT_PARTIAL  # the emulated fleet has pumps without details (404)
    assert "pump_portal sync partial" in (install_dir / "sync.log").read_text()


def test_systemd_service_runs_its_exec_start(emulator, install_dir, tmp_path):
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str
    unit.read_string(recipe("systemd-service"))
    service = unit["Service"]
    assert service["Type"] == "oneshot"
    assert service["WorkingDirectory"] == INSTALL_DIR
    assert cli.EXIT_PARTIAL in [int(c) for c in service["SuccessExitStatus"].split()]
    timer = configparser.ConfigParser(interpolation=None, strict=False)
    timer.optionxform = str
    timer.read_string(recipe("systemd-timer"))
    assert timer["Timer"]["OnCalendar"] == "*:0/10"

    argv = shlex.split(service["ExecStart"].replace(INSTALL_DIR, str(install_dir)))
    completed = subprocess.run(
        argv,
        cwd=service["WorkingDirectory"].replace(INSTALL_DIR, str(install_dir)),
        env={**os.environ, **cli_environment(emulator, tmp_path)},
        timeout=180,
        capture_output=True,
        text=True,
    )

    assert completed.returncode == cli.EXIT_PARTIAL, completed.stderr


def test_orchestrator_task_command_runs(emulator, install_dir, tmp_path):
    found = re.search(r'bash_command="([^"]+)"', recipe("airflow"))
    assert found

    code = run_shell(found.group(1), install_dir, cli_environment(emulator, tmp_path))

    assert code == cli.EXIT_PARTIAL
