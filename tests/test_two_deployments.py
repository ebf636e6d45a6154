"""Two deployments on one host (staging and production, two portal integrations) share nothing.

Each is a fresh copy of the repository with its committed `.dlt/` files, syncing its own portal;
neither sets a pipelines folder. With dlt's default folder (`/var/dlt/pipelines` for root) they
would share state, the run lock and pending load packages, and a package one left behind would
be loaded by the other's next run into the other's warehouse.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipelines import cli
from tests.checkout import copy_checkout, run_in, user_environment, write_secrets
from tests.portal_emulator import Fleet, PortalEmulator

# A run that died after dlt normalized its package and before the load: the package stays
# pending in the deployment's pipelines folder (what a crash or SIGKILL mid-load leaves).
EXTRACT_WITHOUT_LOAD = (
    ".venv/bin/python -c 'from pipelines.runner import make_pipeline; "
    "from pipelines.pump_portal import pump_portal; "
    "p = make_pipeline(); p.extract(pump_portal()); p.normalize(); "
    "print(p.pipelines_dir, p.has_pending_data)'"
)


@pytest.fixture
def portals():
    staging = PortalEmulator(Fleet.generate(pumps=20, users=2, seed=3))
    production = PortalEmulator(Fleet.generate(pumps=30, users=3, seed=4))
    # One pump only each portal has, so a row in the wrong warehouse shows.
    for name, portal in (("staging", staging), ("production", production)):
        portal.fleet.add_pump(f"{name}-only", user_ids=[portal.fleet.user_ids()[0]])
    with staging, production:
        yield staging, production


def deploy(root: Path, name: str, portal: PortalEmulator) -> tuple[Path, dict[str, str]]:
    checkout = copy_checkout(root / name)
    write_secrets(checkout, portal.keys.full)
    return checkout, user_environment(SOURCES__PUMP_PORTAL__BASE_URL=portal.url)


def pump_ids(checkout: Path) -> set[str]:
    with duckdb.connect(str(checkout / "pump_portal_warehouse.duckdb"), read_only=True) as db:
        rows = db.execute("select pump_id from pump_portal.controllers").fetchall()
    return {pump_id for (pump_id,) in rows}


def test_a_package_left_pending_by_one_deployment_never_loads_into_the_other(portals, tmp_path):
    staging_portal, production_portal = portals
    staging, staging_env = deploy(tmp_path, "staging", staging_portal)
    production, production_env = deploy(tmp_path, "production", production_portal)

    crashed = run_in(staging, EXTRACT_WITHOUT_LOAD, staging_env)
    assert crashed.returncode == 0, crashed.stderr
    assert crashed.stdout.split() == [str(staging / ".dlt" / "pipelines"), "True"]

    other = run_in(production, ".venv/bin/pump-portal run", production_env)

    assert other.returncode == cli.EXIT_OK, other.stderr
    assert "pending" not in other.stderr
    assert pump_ids(production) == set(production_portal.fleet.pump_ids())
    assert "staging-only" not in pump_ids(production)

    resumed = run_in(staging, ".venv/bin/pump-portal run", staging_env)

    assert resumed.returncode == cli.EXIT_OK, resumed.stderr
    assert "an earlier run left a load pending: loading it first" in resumed.stderr
    assert pump_ids(staging) == set(staging_portal.fleet.pump_ids())
    assert "production-only" not in pump_ids(staging)
    assert pump_ids(production) == set(production_portal.fleet.pump_ids())


def test_each_deployment_has_its_own_run_lock(portals, tmp_path):
    staging_portal, production_portal = portals
    staging, staging_env = deploy(tmp_path, "staging", staging_portal)
    production, production_env = deploy(tmp_path, "production", production_portal)
    assert run_in(staging, ".venv/bin/pump-portal run", staging_env).returncode == cli.EXIT_OK
    # Staging's run lock is held, as by a long run, while production runs.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); "
            "f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); "
            "sys.stdin.readline()",
            str(staging / ".dlt" / "pipelines" / "pump_portal" / "run.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        other = run_in(production, ".venv/bin/pump-portal run", production_env)
        blocked = run_in(staging, ".venv/bin/pump-portal run", staging_env)
    finally:
        holder.kill()
        holder.wait()

    assert other.returncode == cli.EXIT_OK, other.stderr
    assert blocked.returncode == cli.EXIT_LOCKED
    assert str(staging / ".dlt" / "pipelines" / "pump_portal" / "run.lock") in blocked.stderr
