"""The project as a wheel, installed apart from the checkout, runs the job from an empty folder.

The SQL models must travel in the wheel (package data found through importlib.resources): an
install that only had the Python modules failed with FileNotFoundError: .../sql/sources.toml.
The wheel is installed with --target into its own folder, which PYTHONPATH puts ahead of the
checkout's editable install; the test checks that the job really ran from there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from pipelines import cli
from tests.checkout import copy_checkout, user_environment
from tests.portal_emulator import Fleet, PortalEmulator


def test_wheel_installed_apart_runs_the_job_from_an_empty_folder(tmp_path: Path) -> None:
    wheels, target, folder = tmp_path / "wheels", tmp_path / "site", tmp_path / "empty"
    folder.mkdir()
    source = copy_checkout(tmp_path / "source")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        # from a copy: setuptools builds in the source tree (build/, *.egg-info)
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    fleet = Fleet.generate(pumps=12, users=2, seed=9)
    with PortalEmulator(fleet) as emu:
        env = user_environment(
            SOURCES__PUMP_PORTAL__BASE_URL=emu.url,
            SOURCES__PUMP_PORTAL__API_KEY=emu.keys.full,
            PYTHONPATH=str(target),
        )
        where = subprocess.run(
            [sys.executable, "-c", "import pipelines.models as m; print(m.SQL_DIR)"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        run = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "run"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    sql_files = [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("pipelines/sql/")]
    assert "pipelines/sql/sources.toml" in sql_files
    assert len([n for n in sql_files if n.endswith(".sql")]) == 20
    assert where.stdout.strip() == str(target / "pipelines" / "sql"), where.stderr
    assert run.returncode == cli.EXIT_OK, run.stdout + run.stderr
    assert "models: 11 full (first build), 9 views" in run.stdout
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".duckdb") == [
        "pump_portal_sync.duckdb",
        "pump_portal_warehouse.duckdb",
    ]
    assert os.path.islink(folder / "pump_portal_warehouse.duckdb")
