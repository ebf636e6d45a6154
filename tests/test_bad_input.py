"""Every mistake a user makes gets one clear line, the right exit code and no traceback.

Each case runs the real command line as a subprocess in a fresh copy of the repository, with the
committed `.dlt/` files and a `secrets.toml` holding the key, changing only the one thing the
case is about.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg2
import pytest

from pipelines import cli
from tests.checkout import (
    ROOT,
    commands,
    copy_checkout,
    recipe,
    run_in,
    user_environment,
    write_secrets,
)
from tests.portal_emulator import Fleet, PortalEmulator
from tests.test_models import require_postgres


@pytest.fixture(scope="module")
def portal() -> Iterator[PortalEmulator]:
    with PortalEmulator(Fleet.generate(pumps=20, users=2, seed=5)) as emu:
        yield emu


@pytest.fixture(scope="module")
def checkout(portal, tmp_path_factory) -> Path:
    path = copy_checkout(tmp_path_factory.mktemp("bad-input") / "deployment")
    write_secrets(path, portal.keys.full)
    return path


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a real read-only file system (root may write anywhere chmod forbids)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def pump_portal(checkout: Path, arguments: str, **variables: str) -> subprocess.CompletedProcess:
    return run_in(checkout, f".venv/bin/pump-portal {arguments}", user_environment(**variables))


def assert_one_error_line(completed: subprocess.CompletedProcess, code: int, *says: str) -> str:
    """The exit code, exactly one `ERROR:` line saying `says`, and no traceback."""
    assert completed.returncode == code, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, completed.stderr
    for text in says:
        assert text in errors[0] or text in completed.stderr, completed.stderr
    return errors[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_page_size_that_is_not_a_number_names_the_setting_and_the_variable(portal, checkout):
    completed = pump_portal(
        checkout,
        "run",
        SOURCES__PUMP_PORTAL__BASE_URL=portal.url,
        SOURCES__PUMP_PORTAL__PAGE_SIZE="abc",
    )

    line = assert_one_error_line(completed, cli.EXIT_CONFIG)
    assert "page_size = 'abc' is not a valid int" in line
    assert "SOURCES__PUMP_PORTAL__PAGE_SIZE" in line


def test_staleness_that_is_not_a_number_fails_status_with_one_line(checkout):
    completed = pump_portal(checkout, "status", SYNC__MAX_STALENESS_MINUTES="abc")

    line = assert_one_error_line(completed, cli.EXIT_CONFIG)
    assert "sync.max_staleness_minutes = 'abc' is not a valid float" in line
    assert "SYNC__MAX_STALENESS_MINUTES" in line


def test_unknown_log_level_is_a_usage_error(checkout):
    completed = pump_portal(checkout, "--log-level LOUD run")

    line = assert_one_error_line(completed, cli.EXIT_CONFIG)
    assert "invalid choice: 'LOUD'" in line


@pytest.mark.parametrize("arguments", ["status --log-level DEBUG", "--log-level debug status"])
def test_log_level_works_before_and_after_the_command(checkout, arguments):
    completed = pump_portal(checkout, arguments)

    assert completed.returncode in (cli.EXIT_OK, cli.EXIT_STALE), completed.stderr
    assert "last runs" in completed.stdout or "no sync" in completed.stdout
    assert "DEBUG" in completed.stderr  # the level took effect


def test_unknown_time_zone_is_a_configuration_error_found_before_any_request(portal, checkout):
    portal.reset_counts()

    completed = pump_portal(
        checkout, "run", SOURCES__PUMP_PORTAL__BASE_URL=portal.url, MODELS__TIMEZONE="Mars/Base"
    )

    line = assert_one_error_line(completed, cli.EXIT_CONFIG)
    assert "unknown time zone 'Mars/Base'" in line and "MODELS__TIMEZONE" in line
    assert sum(portal.counts.values()) == 0


def test_working_file_on_a_read_only_file_system_is_a_destination_error(
    portal, checkout, read_only_dir
):
    completed = pump_portal(
        checkout,
        "run",
        SOURCES__PUMP_PORTAL__BASE_URL=portal.url,
        DESTINATION__DUCKDB__CREDENTIALS=str(read_only_dir / "sync.duckdb"),
    )

    line = assert_one_error_line(
        completed, cli.EXIT_DESTINATION, "DESTINATION__DUCKDB__CREDENTIALS"
    )
    assert "cannot open the working DuckDB file" in line
    assert str(read_only_dir / "sync.duckdb") in line
    assert "Read-only file system" in line


def test_publish_target_on_a_read_only_file_system_keeps_the_summary_and_the_data(
    portal, tmp_path, read_only_dir
):
    deployment = copy_checkout(tmp_path / "deployment")
    write_secrets(deployment, portal.keys.full)
    target = read_only_dir / "warehouse.duckdb"

    completed = pump_portal(
        deployment, "run", SOURCES__PUMP_PORTAL__BASE_URL=portal.url, SYNC__PUBLISH_TO=str(target)
    )

    line = assert_one_error_line(completed, cli.EXIT_DESTINATION, "SYNC__PUBLISH_TO")
    assert f"could not publish the reader copy {target}" in line
    assert "Read-only file system" in line
    assert "pump_portal sync failed" in completed.stdout  # the summary still came
    assert "11 full (first build), 9 views" in completed.stdout  # the models were built
    working = deployment / "pump_portal_sync.duckdb"
    with duckdb.connect(str(working), read_only=True) as db:
        assert db.execute("select count(*) from pump_portal.controllers").fetchone() == (20,)
    status = pump_portal(deployment, "status", SYNC__PUBLISH_TO=str(target))
    assert status.returncode == cli.EXIT_STALE, status.stdout
    assert "the last run failed (publish" in status.stdout


@pytest.mark.parametrize("reader", ["head -3", "true"])
def test_status_into_a_closed_pipe_prints_no_traceback(checkout, reader):
    completed = run_in(checkout, f".venv/bin/pump-portal status | {reader}", user_environment())

    assert completed.returncode == 0  # the pipeline's status is the reader's
    assert "Traceback" not in completed.stderr and "BrokenPipe" not in completed.stderr


def test_refused_connection_names_the_host_and_what_to_check(checkout):
    port = free_port()

    completed = pump_portal(
        checkout,
        "run --no-models",
        SOURCES__PUMP_PORTAL__BASE_URL=f"http://127.0.0.1:{port}",
        SOURCES__PUMP_PORTAL__MAX_RETRIES="0",
    )

    line = assert_one_error_line(
        completed, cli.EXIT_API_UNAVAILABLE, "SOURCES__PUMP_PORTAL__BASE_URL"
    )
    assert f"connection to 127.0.0.1:{port} refused" in line
    assert len(line) < 200


def test_unknown_host_names_the_host(checkout):
    completed = pump_portal(
        checkout,
        "run --no-models",
        SOURCES__PUMP_PORTAL__BASE_URL="https://portal.invalid",
        SOURCES__PUMP_PORTAL__MAX_RETRIES="0",
    )

    line = assert_one_error_line(completed, cli.EXIT_API_UNAVAILABLE, "base_url")
    assert "cannot resolve host 'portal.invalid' (unknown host)" in line


@pytest.mark.postgres
def test_readme_postgres_example_without_password_runs(portal, tmp_path):
    require_postgres()
    checkout = copy_checkout(tmp_path / "deployment")
    write_secrets(checkout, portal.keys.full)
    # The README's steps to create the role and the database, run as the server's superuser.
    admin = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        for statement in filter(str.strip, recipe("postgres-setup").split(";")):
            # set up by an earlier run: "already exists"
            with contextlib.suppress(
                psycopg2.errors.DuplicateObject, psycopg2.errors.DuplicateDatabase
            ):
                cursor.execute(statement)
    admin.close()
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in recipe("postgres-env").splitlines()
        if line.startswith("export ")
    )
    assert exports["DESTINATION__POSTGRES__CREDENTIALS"] == (
        "postgresql://loader@127.0.0.1:5432/warehouse"
    )
    warehouse = psycopg2.connect(exports["DESTINATION__POSTGRES__CREDENTIALS"])
    warehouse.autocommit = True
    with warehouse.cursor() as cursor:  # a fresh start: dlt would restore state from here
        cursor.execute("drop schema if exists pump_portal, pump_portal_models cascade")

    completed = pump_portal(checkout, "run", SOURCES__PUMP_PORTAL__BASE_URL=portal.url, **exports)

    assert completed.returncode == cli.EXIT_OK, completed.stderr
    with warehouse.cursor() as cursor:
        cursor.execute("select count(*) from pump_portal.controllers")
        assert cursor.fetchone() == (20,)
    warehouse.close()


def test_postgres_without_credentials_names_the_variable(portal, checkout):
    completed = pump_portal(
        checkout,
        "run",
        SOURCES__PUMP_PORTAL__BASE_URL=portal.url,
        PIPELINES__PUMP_PORTAL__DESTINATION_TYPE="postgres",
    )

    assert_one_error_line(completed, cli.EXIT_CONFIG, "DESTINATION__POSTGRES__CREDENTIALS")


def test_full_build_out_of_memory_names_the_setting_and_the_readme_fix_builds(tmp_path):
    """A first (full) build reads all history at once; under a memory limit too small for it the
    run says which setting to raise, and the README's one-off command builds."""
    fleet = Fleet.generate(pumps=60, users=3, seed=3)
    with PortalEmulator(fleet) as emu:
        env = user_environment(
            SOURCES__PUMP_PORTAL__BASE_URL=emu.url,
            SOURCES__PUMP_PORTAL__API_KEY=emu.keys.full,
            DESTINATION__DUCKDB__CREDENTIALS=str(tmp_path / "pump_portal_sync.duckdb"),
            PIPELINES__PUMP_PORTAL__PIPELINES_DIR=str(tmp_path / "pipelines"),
            SYNC__PUBLISH_TO=str(tmp_path / "pump_portal_warehouse.duckdb"),
        )
        loaded = run_in(ROOT, ".venv/bin/pump-portal run --no-models", env)
        starved = run_in(
            ROOT, ".venv/bin/pump-portal models", {**env, "SYNC__DUCKDB_MEMORY_LIMIT": "1MB"}
        )
        (fix,) = commands(recipe("models-full-refresh-memory"))
        built = run_in(ROOT, fix, env)

    assert loaded.returncode == cli.EXIT_OK, loaded.stderr
    line = assert_one_error_line(starved, cli.EXIT_DESTINATION, "SYNC__DUCKDB_MEMORY_LIMIT=4GB")
    assert "Out of Memory Error" in line
    assert built.returncode == cli.EXIT_OK, built.stderr
    assert "built 20 models: 11 full (full refresh requested), 9 views" in built.stdout
