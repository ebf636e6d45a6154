"""The source's resources compose, as a dlt user (or Airflow's `decompose`) would use them.

Any subset chosen with `with_resources` loads complete tables, a later run of the whole source
completes the rest without reloading what is there, `dlt pipeline pump_portal drop <resource>`
resets exactly that resource, and state written by earlier versions (source-level `pumps`,
`details`, `links`) moves into the resource states on the first run. Regression for issue #12:
the listing's bookkeeping was source-level state, so a subset run or a drop lost tables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import pytest

from pipelines.deployment import PIPELINE_NAME
from pipelines.pump_portal import RESOURCES, RunReport, pump_portal
from pipelines.pump_portal.state import DETAIL_RESOURCES
from tests.conftest import cli_environment, rows, scalar
from tests.portal_emulator import Fleet, PortalEmulator

METADATA = "/v1/pumps/:pumpId/metadata"
SUMMARY = "/v1/pumps/:pumpId/summary"
USER_SUMMARY = "/v1/users/:userId/summary"
# Each resource a user can pick, and the tables it writes.
RESOURCE_TABLES = {
    "controllers": ("controllers", "controller_observations", "controller_visibility"),
    "fleet_snapshots": ("fleet_snapshots",),
    "delegated_users": ("delegated_users",),
    "delegated_user_snapshots": ("delegated_user_snapshots",),
    "user_pump_links": ("user_pump_links",),
    "pump_metadata": ("pump_metadata",),
    "pump_summaries": ("pump_summaries",),
}
ALL_TABLES = [table for tables in RESOURCE_TABLES.values() for table in tables]
ROOT = Path(__file__).resolve().parent.parent
PUMPS = 20  # one listing page, 3 pumps never reported: a small fleet keeps the file fast


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.generate(pumps=PUMPS, users=3, seed=7)


def extract(
    emu: PortalEmulator, pipeline: dlt.Pipeline, *resources: str, **options: Any
) -> RunReport:
    """`pipeline.run` of the source (or of `resources` only), stamped with the emulator's clock."""
    report = RunReport(run_at=emu.now)
    source = pump_portal(
        base_url=emu.url,
        api_key=emu.keys.full,
        backoff_seconds=0.01,
        run_at=emu.now,
        report=report,
        **options,
    )
    pipeline.run(source.with_resources(*resources) if resources else source)
    return report


def existing_tables(pipeline: dlt.Pipeline) -> set[str]:
    found = rows(
        pipeline,
        "select table_name from information_schema.tables where table_schema = 'pump_portal'",
    )
    return {name for (name,) in found} & set(ALL_TABLES)


def resource_states(pipeline: dlt.Pipeline) -> dict[str, Any]:
    """What each resource knows of the portal; without the detail resources' `pace` (the times
    they ran), which every run moves on by design."""
    return {
        name: {key: value for key, value in state.items() if key != "pace"}
        for name, state in source_state(pipeline).get("resources", {}).items()
    }


def source_state(pipeline: dlt.Pipeline) -> dict[str, Any]:
    return pipeline.state.get("sources", {}).get("pump_portal", {})


def assert_complete(pipeline: dlt.Pipeline, fleet: Fleet, table: str, runs: int = 1) -> None:
    """`table` holds exactly what the emulated fleet says, after `runs` runs without changes."""
    pumps = fleet.pump_ids()
    reported = [p for p in pumps if fleet.pumps[p].last_seen is not None]
    with_details = sorted(set(pumps) - fleet.missing_detail_pumps)
    users = sorted(fleet.user_ids())
    if table == "controllers":
        assert sorted(r[0] for r in rows(pipeline, "select pump_id from controllers")) == sorted(
            pumps
        )
    elif table == "controller_observations":
        loaded = rows(pipeline, "select pump_id from controller_observations")
        assert sorted(r[0] for r in loaded) == sorted(reported)
    elif table == "controller_visibility":
        loaded = rows(pipeline, "select pump_id, is_visible from controller_visibility")
        assert sorted(loaded) == sorted((p, True) for p in pumps)
    elif table == "fleet_snapshots":
        assert scalar(pipeline, "select count(*) from fleet_snapshots") == runs
    elif table == "delegated_users":
        assert [r[0] for r in rows(pipeline, "select user_id from delegated_users order by 1")] == (
            users
        )
    elif table == "delegated_user_snapshots":
        assert scalar(pipeline, "select count(*) from delegated_user_snapshots") == runs * len(
            users
        )
    elif table == "user_pump_links":
        expected = {
            (uid, pid, fleet.users[uid].pumps[pid])
            for uid in users
            for pid in fleet.user_pump_ids(uid)
        }
        loaded = rows(pipeline, "select user_id, pump_id, is_owner, valid_to from user_pump_links")
        assert {r[:3] for r in loaded} == expected
        assert len(loaded) == len(expected)
        assert all(r[3] is None for r in loaded)
    else:
        loaded = rows(pipeline, f"select pump_id from {table} order by 1")
        assert [r[0] for r in loaded] == with_details


@pytest.mark.parametrize("resource", list(RESOURCE_TABLES))
def test_one_resource_alone_then_the_whole_source_load_complete_tables(
    emulator: PortalEmulator, fleet: Fleet, pipeline: dlt.Pipeline, resource: str
) -> None:
    extract(emulator, pipeline, resource)

    assert existing_tables(pipeline) == set(RESOURCE_TABLES[resource])
    for table in RESOURCE_TABLES[resource]:
        assert_complete(pipeline, fleet, table)
    assert set(resource_states(pipeline)) <= {resource}  # only what ran keeps state
    counts = emulator.counts
    assert (counts["/v1/pumps"] > 0) == (resource in ("controllers", *DETAIL_RESOURCES))
    assert (counts["/v1/delegated-users"] > 0) == ("user" in resource)
    assert counts[USER_SUMMARY] == (len(fleet.user_ids()) if resource == "user_pump_links" else 0)
    assert counts[METADATA] == (PUMPS if resource == "pump_metadata" else 0)
    assert counts[SUMMARY] == (PUMPS if resource == "pump_summaries" else 0)
    emulator.advance(60)
    emulator.reset_counts()

    report = extract(emulator, pipeline)

    assert existing_tables(pipeline) == set(ALL_TABLES)
    for table in ALL_TABLES:
        assert_complete(pipeline, fleet, table, runs=2 if table == resource else 1)
    # What the first run loaded is not loaded again: each resource decided from its own state.
    assert emulator.counts[METADATA] == (0 if resource == "pump_metadata" else PUMPS)
    assert emulator.counts[SUMMARY] == (0 if resource == "pump_summaries" else PUMPS)
    assert report.pumps_changed == (0 if resource == "controllers" else PUMPS)
    # Each listing is read once per run, whichever resources need it.
    assert emulator.counts["/v1/pumps"] == emulator.counts["/v1/delegated-users"] == 1


@pytest.mark.parametrize("resource", ["controllers", "pump_metadata", "user_pump_links"])
def test_dlt_pipeline_drop_resets_one_resource_and_the_next_run_reloads_it(
    emulator: PortalEmulator,
    fleet: Fleet,
    pipeline: dlt.Pipeline,
    tmp_path: Path,
    duckdb_path: Path,
    resource: str,
) -> None:
    extract(emulator, pipeline)
    before = resource_states(pipeline)

    dropped = drop(pipeline, tmp_path, duckdb_path, resource)

    assert f"Resource(s) state to reset: ['{resource}']" in dropped
    assert existing_tables(pipeline) == set(ALL_TABLES) - set(RESOURCE_TABLES[resource])
    emulator.advance(60)
    emulator.reset_counts()
    report = extract(emulator, pipeline)

    for table in ALL_TABLES:
        assert_complete(pipeline, fleet, table, runs=2 if table != resource else 1)
    after = resource_states(pipeline)
    # The other resources' state is what it was: they fetched nothing again.
    assert {k: v for k, v in after.items() if k != resource} == {
        k: v for k, v in before.items() if k != resource
    }
    assert emulator.counts[METADATA] == (PUMPS if resource == "pump_metadata" else 0)
    assert emulator.counts[SUMMARY] == 0
    assert report.pumps_changed == (PUMPS if resource == "controllers" else 0)


def drop(pipeline: dlt.Pipeline, tmp_path: Path, duckdb_path: Path, resource: str) -> str:
    """`dlt pipeline pump_portal drop <resource>` as an operator types it (`--yes`: no prompt)."""
    dlt_cli = Path(sys.executable).with_name("dlt")
    completed = subprocess.run(
        [
            str(dlt_cli),
            "--yes",
            "pipeline",
            "--pipelines-dir",
            pipeline.pipelines_dir,
            pipeline.pipeline_name,
            "drop",
            resource,
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "DESTINATION__DUCKDB__CREDENTIALS": str(duckdb_path),
            "RUNTIME__DLTHUB_TELEMETRY": "false",
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    pipeline.sync_destination()  # the command changed state and schema behind this object
    return completed.stdout


@dlt.source(name="pump_portal")
def old_layout_writer(old: dict[str, Any], resources: list[str]) -> Any:
    """What an earlier version of the source left behind: the maps in the source-level state
    and the listing's tables created by three resources of their own."""

    @dlt.resource(name="old_state")
    def write_old_state() -> Iterator[dict[str, Any]]:
        state = dlt.current.source_state()
        state.update(old)
        for name in resources:
            state.get("resources", {}).pop(name, None)
        for name in ("controller_observations", "controller_visibility"):
            dlt.current.source_schema().tables[name]["resource"] = name
        yield from ()

    return write_old_state


def test_state_of_earlier_versions_moves_into_the_resource_states(
    emulator: PortalEmulator, fleet: Fleet, pipeline: dlt.Pipeline
) -> None:
    extract(emulator, pipeline)
    new_layout = resource_states(pipeline)
    fetched_at = {
        r: {p: e[0] for p, e in new_layout[r]["fetched"].items()} for r in DETAIL_RESOURCES
    }
    some_pump = next(iter(fetched_at["pump_summaries"]))
    # Very early versions stored fetch times as ISO text.
    fetched_at["pump_summaries"][some_pump] = emulator.now.isoformat()
    old = {
        "pumps": new_layout["controllers"]["pumps"],
        "details": fetched_at,
        "links": new_layout["user_pump_links"]["links"],
    }
    pipeline.run(old_layout_writer(old, ["controllers", *DETAIL_RESOURCES, "user_pump_links"]))
    assert {"pumps", "details", "links"} <= set(source_state(pipeline))
    assert set(resource_states(pipeline)) == set()
    tables = pipeline.default_schema.tables
    assert tables["controller_visibility"]["resource"] == "controller_visibility"
    emulator.advance(60)
    emulator.reset_counts()

    # The first run after the upgrade loads one resource only, and still moves all of it.
    extract(emulator, pipeline, "pump_metadata")

    assert not {"pumps", "details", "links"} & set(source_state(pipeline))
    assert resource_states(pipeline) == new_layout
    assert emulator.counts[METADATA] == 0  # nothing refetched
    tables = pipeline.default_schema.tables
    assert {tables[t]["resource"] for t in RESOURCE_TABLES["controllers"]} == {"controllers"}

    emulator.reset_counts()
    report = extract(emulator, pipeline)

    assert emulator.counts[METADATA] == emulator.counts[SUMMARY] == 0
    assert report.pumps_changed == 0
    for table in ALL_TABLES:
        runs = 2 if table in ("fleet_snapshots", "delegated_user_snapshots") else 1
        assert_complete(pipeline, fleet, table, runs=runs)


def test_resources_constant_names_what_the_source_loads(emulator: PortalEmulator) -> None:
    """`--select` and the README list `RESOURCES`; it must be what the source selects."""
    source = pump_portal(base_url=emulator.url, api_key=emulator.keys.full)

    assert set(source.selected_resources) == set(RESOURCES) == set(RESOURCE_TABLES)


def test_select_on_the_command_line_loads_only_those_resources(
    emulator: PortalEmulator, fleet: Fleet, tmp_path: Path
) -> None:
    """`pump-portal run --select` as an operator runs it: the real CLI, a subprocess."""
    env = {**os.environ, **cli_environment(emulator, tmp_path)}
    command = [sys.executable, "-m", "pipelines.cli", "--log-level", "WARNING", "run"]

    done = subprocess.run(
        [*command, "--select", "fleet_snapshots,user_pump_links", "--no-models"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wrong = subprocess.run(
        [*command, "--select", "controllers,alarms"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    pipeline = dlt.pipeline(
        PIPELINE_NAME,
        pipelines_dir=str(tmp_path / "pipelines"),
        destination=dlt.destinations.duckdb(str(tmp_path / "pump_portal_sync.duckdb")),
        dataset_name="pump_portal",
    )
    assert existing_tables(pipeline) == {"fleet_snapshots", "user_pump_links"}
    assert_complete(pipeline, fleet, "fleet_snapshots")
    assert_complete(pipeline, fleet, "user_pump_links")
    assert wrong.returncode == 2
    assert "unknown resource alarms; choose from controllers," in wrong.stderr


def test_a_run_leaves_no_worker_threads_behind(
    emulator: PortalEmulator, pipeline: dlt.Pipeline
) -> None:
    """dlt gives a source no end hook: the detail pool, the page read-ahead pool and the HTTP
    session close when the source's last resource ends, also while the caller still holds the
    source (a notebook, an orchestrator). Regression for issue #12: never closed."""
    before = {thread.ident for thread in threading.enumerate()}
    source = pump_portal(
        base_url=emulator.url,
        api_key=emulator.keys.full,
        page_size=5,  # four listing pages: the read-ahead pool starts
        page_read_ahead=2,
        run_at=emulator.now,
    )

    pipeline.run(source)

    def ours() -> list[str]:
        return [
            thread.name
            for thread in threading.enumerate()
            if thread.ident not in before
            and thread.name.startswith(("pump-portal", "portal-pages"))
        ]

    deadline = time.monotonic() + 5
    while ours() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ours() == []
    assert emulator.counts["/v1/pumps"] == PUMPS // 5
    assert source is not None  # still held
