"""`pump-portal check` answers, for each kind of key the emulator has, what a new user needs to
know: does the portal answer, is the key valid, which endpoints its scopes read, is the
destination reachable; with the exit codes `run` would give."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipelines import cli
from tests.conftest import cli_environment
from tests.portal_emulator import Fleet, PortalEmulator

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = (
    "/v1/pumps",
    "/v1/stats",
    "/v1/delegated-users",
    "/v1/pumps/:pumpId/metadata",
    "/v1/pumps/:pumpId/summary",
    "/v1/users/:userId/summary",
)
NO_PUMP = "skipped (no pump listed to ask about)"
NO_USER = "skipped (no delegated user to ask about)"
FORBIDDEN = "forbidden (insufficient_scope)"
# key kind -> (exit code, what each endpoint answers in the order above; None: not reached)
EXPECTED = {
    "full": (cli.EXIT_OK, ("ok",) * 6),
    "pumps_only": (cli.EXIT_OK, ("ok", FORBIDDEN, FORBIDDEN, "ok", "ok", NO_USER)),
    "stats_only": (cli.EXIT_OK, (FORBIDDEN, "ok", "ok", NO_PUMP, NO_PUMP, FORBIDDEN)),
    "no_users": (cli.EXIT_OK, ("ok", "ok", "ok (no_delegated_users)", NO_PUMP, NO_PUMP, NO_USER)),
    "no_scope": (cli.EXIT_AUTH, (FORBIDDEN, FORBIDDEN, FORBIDDEN, NO_PUMP, NO_PUMP, NO_USER)),
    "revoked": (cli.EXIT_AUTH, None),
    "broken": (cli.EXIT_API_UNAVAILABLE, None),
}


@pytest.fixture(scope="module")
def portal():
    with PortalEmulator(Fleet.generate(pumps=10, users=2, seed=3)) as emu:
        yield emu


def check(emu: PortalEmulator, tmp_path: Path, key: str, **variables: str):
    env = {**os.environ, **cli_environment(emu, tmp_path, key), **variables}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_check_says_what_each_key_can_read(portal, tmp_path, kind: str) -> None:
    code, answers = EXPECTED[kind]
    key = getattr(portal.keys, kind)

    done = check(portal, tmp_path, key)

    assert done.returncode == code, done.stdout + done.stderr
    assert key not in done.stdout + done.stderr
    assert "destination duckdb: reachable" in done.stdout
    lines = [line.split(None, 2) for line in done.stdout.splitlines() if "  GET " in line]
    if answers is None:
        assert lines == []
        said = "is rejected" if code == cli.EXIT_AUTH else "does not answer"
        assert said in done.stdout
    else:
        assert [(endpoint, outcome) for _, endpoint, outcome in lines] == list(
            zip(ENDPOINTS, answers, strict=True)
        )
    working = tmp_path / "pump_portal_sync.duckdb"
    if working.exists():  # the destination probe may create it, as a run would; nothing loads
        with duckdb.connect(str(working), read_only=True) as db:
            assert db.execute("select count(*) from duckdb_tables()").fetchone() == (0,)


def test_check_reports_an_unreachable_destination(portal, tmp_path) -> None:
    done = check(
        portal,
        tmp_path,
        portal.keys.full,
        PIPELINES__PUMP_PORTAL__DESTINATION_TYPE="postgres",
        DESTINATION__POSTGRES__CREDENTIALS="postgresql://loader@127.0.0.1:1/warehouse",
    )

    assert done.returncode == cli.EXIT_DESTINATION, done.stdout + done.stderr
    assert "destination postgres: not reachable" in done.stdout
    assert "GET /v1/stats                   ok" in done.stdout
