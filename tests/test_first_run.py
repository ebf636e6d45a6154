"""The README's own path, on a fresh copy of the repository, exactly as a user walks it.

Nothing is set for these runs but what the README tells a user to set: the committed `.dlt/`
files, a `.dlt/secrets.toml` made from the example with the key in it, and the portal's URL in
the environment. Then `make run`, `make status`, and the deploy recipes as written (with the
install folder `/srv/pump-portal-sync` replaced by the copy). This is the plain path every other
test, which isolates itself with its own variables, skips.
"""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import duckdb
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

INSTALL_DIR = "/srv/pump-portal-sync"
EXAMPLE_URL = "https://portal.example.com"


@pytest.fixture(scope="module")
def portal():
    fleet = Fleet.generate(pumps=60, users=4, seed=11)
    assert fleet.missing_detail_pumps, "the scenario needs pumps that never reported"
    with PortalEmulator(fleet) as emu:
        yield emu


@pytest.fixture(scope="module")
def deployment(portal, tmp_path_factory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("deployment") / "pump-portal-sync")


@pytest.fixture(scope="module")
def first_run(portal, deployment):
    """The README's first-run block, line by line: copy the secrets, set the URL, run, status."""
    steps = commands(recipe("first-run"))
    assert steps[0] == "cp .dlt/secrets.toml.example .dlt/secrets.toml"
    assert steps[1] == f"export SOURCES__PUMP_PORTAL__BASE_URL={EXAMPLE_URL}"
    env = user_environment()
    assert run_in(deployment, steps[0], env).returncode == 0
    write_secrets(deployment, portal.keys.full)  # "then put your key in it"
    export = steps[1].replace(EXAMPLE_URL, portal.url)
    return [run_in(deployment, f"{export} && {step}", env) for step in steps[2:]]


def test_first_run_as_the_readme_says_exits_0_and_counts_pumps_without_data(
    portal, deployment, first_run
):
    run, status = first_run
    never_reported = len(portal.fleet.missing_detail_pumps)

    assert run.returncode == cli.EXIT_OK, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert "pump_portal sync success" in run.stdout
    assert f"{never_reported} pumps have no metadata/summary yet" in run.stdout
    assert "WARNING" not in run.stderr  # no line per pump: one counted line in the summary
    assert status.returncode == cli.EXIT_OK, status.stdout + status.stderr
    assert "fresh (threshold 60 minutes)" in status.stdout


def test_first_run_keeps_everything_inside_the_deployment(portal, deployment, first_run):
    state = deployment / ".dlt" / "pipelines" / "pump_portal"
    assert (state / "state.json").is_file()
    assert (state / "run.lock").is_file()
    assert (deployment / "pump_portal_sync.duckdb").is_file()
    never_reported = sorted(portal.fleet.missing_detail_pumps)
    with duckdb.connect(str(deployment / "pump_portal_warehouse.duckdb"), read_only=True) as db:
        assert db.execute("select count(*) from pump_portal.controllers").fetchone() == (60,)
        recorded = db.execute(
            "select distinct item_id from pump_portal.skipped_items "
            "where code = 'not_found' and not needs_action order by 1"
        ).fetchall()
        runs = db.execute(
            "select outcome, items_skipped, pumps_without_data from pump_portal.sync_runs"
        ).fetchall()
    assert [pump_id for (pump_id,) in recorded] == never_reported
    assert runs == [("success", 0, len(never_reported))]


def markdown_table(output: str) -> list[list[str]]:
    """The rows of the DuckDB CLI's `-markdown` output, the header first."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]


def test_bi_duckdb_walkthrough_shows_the_marts_their_descriptions_and_rows(deployment, first_run):
    """The README's three DuckDB CLI lines, as written, on the published file of the first run."""
    with open(ROOT / "sql" / "dictionary.toml", "rb") as file:
        marts = tomllib.load(file)["marts"]
    outputs = []
    for line in commands(recipe("bi-duckdb")):
        completed = run_in(deployment, line, user_environment())
        assert completed.returncode == 0, completed.stderr
        outputs.append(markdown_table(completed.stdout))
    tables, columns, fleet_rows = outputs
    with duckdb.connect(str(deployment / "pump_portal_warehouse.duckdb"), read_only=True) as db:
        fleet_columns = db.execute(
            "select column_name, data_type from duckdb_columns() where schema_name = "
            "'pump_portal_models' and table_name = 'fleet_history' order by column_index"
        ).fetchall()
        fleet = db.execute(
            "select day_date, total_controllers, active_controllers, water_delivered "
            "from pump_portal_models.fleet_history order by day_date"
        ).fetchall()

    assert tables == [["table_name", "comment"]] + [
        [name, marts[name]["description"]] for name in sorted(marts)
    ]
    assert len(fleet_columns) == 10
    assert columns == [["column_name", "data_type", "comment"]] + [
        [name, data_type, marts["fleet_history"]["columns"][name]]
        for name, data_type in fleet_columns
    ]
    assert len(fleet) == 1 and fleet[0][1] == 60
    header = ["day_date", "total_controllers", "active_controllers", "water_delivered"]
    assert fleet_rows[0] == header
    assert [(row[0], int(row[1]), int(row[2]), float(row[3])) for row in fleet_rows[1:]] == [
        (day.isoformat(), total, active, water) for day, total, active, water in fleet
    ]


def test_first_run_loads_every_table_from_parquet(deployment, first_run):
    """INSERT statements cost DuckDB gigabytes at a large fleet: every table of the run, the ones
    the listing routes rows to included, is loaded from parquet (merges add their .sql jobs)."""
    loaded = deployment / ".dlt" / "pipelines" / "pump_portal" / "load" / "loaded"
    jobs = sorted(path.name for path in loaded.glob("*/completed_jobs/*"))
    tables = {name.split(".")[0] for name in jobs}
    assert {"controllers", "controller_observations", "controller_visibility"} <= tables
    formats = {
        name.split(".")[0]: name.split(".")[-1] for name in jobs if not name.endswith(".sql")
    }
    assert set(formats.values()) == {"parquet"}, formats


def test_committed_configuration_turns_telemetry_off(deployment, first_run):
    probe = run_in(
        deployment,
        ".venv/bin/python -c 'import dlt; print(dlt.config.get(\"runtime.dlthub_telemetry\"))'",
        user_environment(),
    )
    assert probe.stdout.strip() == "False", probe.stderr


def test_dlt_commands_in_the_readme_find_the_deployments_pipeline(deployment, first_run):
    for command in commands(recipe("dlt-commands")):
        completed = run_in(deployment, command, user_environment())

        assert completed.returncode == 0, completed.stderr
        assert "Found pipeline pump_portal in .dlt/pipelines" in completed.stdout


def test_cron_line_runs_the_sync_and_logs(portal, deployment, first_run):
    line = recipe("cron").strip()
    schedule, command = line.split()[:5], " ".join(line.split()[5:])
    assert schedule == ["*/10", "*", "*", "*", "*"]

    # cron starts jobs with a bare environment: only what the secrets file and config hold,
    # plus the URL the test's portal has (a user's would be in .dlt/config.toml)
    env = user_environment(SOURCES__PUMP_PORTAL__BASE_URL=portal.url)
    completed = run_in(deployment, command.replace(INSTALL_DIR, str(deployment)), env)

    assert completed.returncode == cli.EXIT_OK, (deployment / "sync.log").read_text()
    assert "pump_portal sync success" in (deployment / "sync.log").read_text()


def test_systemd_service_runs_its_exec_start(portal, deployment, first_run):
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(recipe("systemd-service"))
    service = unit["Service"]
    assert service["Type"] == "oneshot"
    assert service["WorkingDirectory"] == INSTALL_DIR
    assert cli.EXIT_PARTIAL in [int(c) for c in service["SuccessExitStatus"].split()]
    timer = configparser.ConfigParser(interpolation=None, strict=False)
    timer.optionxform = str  # type: ignore[assignment,method-assign]
    timer.read_string(recipe("systemd-timer"))
    assert timer["Timer"]["OnCalendar"] == "*:0/10"

    argv = shlex.split(service["ExecStart"].replace(INSTALL_DIR, str(deployment)))
    completed = subprocess.run(
        argv,
        cwd=service["WorkingDirectory"].replace(INSTALL_DIR, str(deployment)),
        env=user_environment(SOURCES__PUMP_PORTAL__BASE_URL=portal.url),
        timeout=180,
        capture_output=True,
        text=True,
    )

    assert completed.returncode == cli.EXIT_OK, completed.stderr


def test_orchestrator_task_command_runs(portal, deployment, first_run):
    found = re.search(r'bash_command="([^"]+)"', recipe("airflow"))
    assert found

    completed = run_in(
        deployment,
        found.group(1).replace(INSTALL_DIR, str(deployment)),
        user_environment(SOURCES__PUMP_PORTAL__BASE_URL=portal.url),
    )

    assert completed.returncode == cli.EXIT_OK, completed.stderr


def test_key_and_url_from_the_environment_alone_also_work(portal, tmp_path):
    checkout = copy_checkout(tmp_path / "env-only")
    assert not (checkout / ".dlt" / "secrets.toml").exists()
    env = user_environment(
        SOURCES__PUMP_PORTAL__API_KEY=portal.keys.full, SOURCES__PUMP_PORTAL__BASE_URL=portal.url
    )

    completed = run_in(checkout, "make run", env)

    assert completed.returncode == cli.EXIT_OK, completed.stdout + completed.stderr
    assert portal.keys.full not in completed.stdout + completed.stderr


def test_readme_own_pipeline_example_runs_the_source_in_part_then_whole(portal, tmp_path):
    """The README's embedding example, as a user's script in their own folder: the committed
    .dlt/ is not there, so the key and URL come from the environment as dlt reads them."""
    script = tmp_path / "my_pipeline.py"
    script.write_text(recipe("own-pipeline"))
    env = user_environment(
        SOURCES__PUMP_PORTAL__API_KEY=portal.keys.full,
        SOURCES__PUMP_PORTAL__BASE_URL=portal.url,
        DLT_DATA_DIR=str(tmp_path / "dlt"),  # not the host's /var/dlt: isolated on purpose
        PYTHONPATH=str(ROOT),
    )

    completed = run_in(tmp_path, f"{ROOT}/.venv/bin/python {script}", env)

    assert completed.returncode == 0, completed.stderr
    with duckdb.connect(str(tmp_path / "my_portal.duckdb"), read_only=True) as db:
        counts = dict(
            db.execute(
                "select table_name, estimated_size from duckdb_tables() "
                "where schema_name = 'portal_raw' and not starts_with(table_name, '_dlt')"
            ).fetchall()
        )
        links = db.execute("select count(*) from portal_raw.user_pump_links").fetchone()[0]
    assert counts["controllers"] == 60
    assert counts["pump_metadata"] == 60 - len(portal.fleet.missing_detail_pumps)
    assert links == sum(len(portal.fleet.user_pump_ids(u)) for u in portal.fleet.user_ids())


def test_readme_dlt_drop_resets_one_resource_and_the_next_run_reloads_it(
    portal, deployment, first_run
):
    drop, run = commands(recipe("dlt-drop"))
    env = user_environment(SOURCES__PUMP_PORTAL__BASE_URL=portal.url)
    with_details = 60 - len(portal.fleet.missing_detail_pumps)

    dropped = run_in(deployment, drop, env)
    with duckdb.connect(str(deployment / "pump_portal_sync.duckdb"), read_only=True) as db:
        left = {name for (name,) in db.execute("select table_name from duckdb_tables()").fetchall()}
    again = run_in(deployment, run, env)

    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert "pump_metadata" not in left and "controllers" in left
    assert again.returncode == cli.EXIT_OK, again.stdout + again.stderr
    assert f"pump_metadata {with_details}" in again.stdout  # every pump's metadata reloaded
    assert "pump_summaries " not in again.stdout  # their own state said nothing was due


def test_readme_models_full_refresh_rebuilds_every_model(portal, deployment, first_run):
    env = user_environment(SOURCES__PUMP_PORTAL__BASE_URL=portal.url)
    (command,) = commands(recipe("models-full-refresh"))

    incremental = run_in(deployment, ".venv/bin/pump-portal models", env)
    full = run_in(deployment, command, env)

    assert incremental.returncode == cli.EXIT_OK, incremental.stderr
    # nothing was loaded since the last build: the calendar (a small table) is rebuilt anyway
    assert "built 20 models: 9 incremental (0 rows changed), 2 full, 9 views" in incremental.stdout
    assert full.returncode == cli.EXIT_OK, full.stderr
    assert "built 20 models: 11 full (full refresh requested), 9 views" in full.stdout
