"""Tests of the SQL models in sql/ (pipelines/models.py), on DuckDB and on PostgreSQL.

The scenario tests sync a small emulated fleet through four simulated days (see
tests/model_scenarios.py) and assert every row of every mart. PostgreSQL tests skip when no server
answers at PUMP_PORTAL_TEST_POSTGRES (default: the local test server); with
PUMP_PORTAL_REQUIRE_POSTGRES=1 (as in CI) an unreachable server fails them instead.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
import psycopg2
import pytest
import sqlglot

from pipelines import models
from pipelines.models import ModelSettings, Target, build_models, drop_models
from pipelines.runner import make_pipeline, run_sync
from tests import model_scenarios as story
from tests.conftest import rows, sync
from tests.portal_emulator import Fleet, PortalEmulator

POSTGRES_URL = os.environ.get(
    "PUMP_PORTAL_TEST_POSTGRES", "postgresql://postgres:postgres@127.0.0.1:5432/test"
)
MARTS = ("alarms", "controller_daily", "controllers_current", "fleet_history", "user_history")
BACKENDS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


@functools.cache
def postgres_problem() -> str | None:
    """Why the PostgreSQL server cannot be used, or None (asked once per test session)."""
    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg2.Error as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"PostgreSQL at {POSTGRES_URL.rsplit('@', 1)[-1]} is not reachable: {detail}"
    return None


def require_postgres() -> None:
    """Skip when the server does not answer; fail instead with PUMP_PORTAL_REQUIRE_POSTGRES=1."""
    problem = postgres_problem()
    if problem is None:
        return
    if os.environ.get("PUMP_PORTAL_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{problem} (PUMP_PORTAL_REQUIRE_POSTGRES=1: a missing server is a failure)")
    pytest.skip(f"{problem} (start it or set PUMP_PORTAL_TEST_POSTGRES to a server URL)")


def new_pipeline(backend: str, directory: Path) -> dlt.Pipeline:
    """A pipeline on its own DuckDB file, or on its own PostgreSQL schemas (drop_schemas after)."""
    if backend == "postgres":
        require_postgres()
        return make_pipeline(
            destination=dlt.destinations.postgres(POSTGRES_URL),
            dataset_name=f"pump_portal_{uuid.uuid4().hex[:10]}",
            pipelines_dir=str(directory / "pipelines"),
            progress=None,
        )
    return make_pipeline(
        destination=dlt.destinations.duckdb(str(directory / "warehouse.duckdb")),
        dataset_name="pump_portal",
        pipelines_dir=str(directory / "pipelines"),
        progress=None,
    )


def drop_schemas(pipeline: dlt.Pipeline) -> None:
    if pipeline.destination is None or pipeline.destination.destination_name != "postgres":
        return
    with psycopg2.connect(POSTGRES_URL) as connection, connection.cursor() as cursor:
        cursor.execute(
            "select schema_name from information_schema.schemata where schema_name like %s",
            (f"{pipeline.dataset_name}%",),
        )
        for (schema,) in cursor.fetchall():
            cursor.execute(f'drop schema if exists "{schema}" cascade')


@dataclass
class Story:
    pipeline: dlt.Pipeline
    backend: str


@pytest.fixture(scope="module", params=BACKENDS)
def synced_story(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Story]:
    """The four-day story, synced with models built after every sync (once per backend)."""
    pipeline = new_pipeline(request.param, tmp_path_factory.mktemp(request.param))
    emulator = PortalEmulator(story.make_fleet())
    emulator.start()
    try:

        def one_sync() -> None:
            result = sync(emulator, pipeline, build_models=build_models)
            assert result.outcome == "success", result.error
            assert set(MARTS) <= set(result.models_built)

        story.play(emulator, one_sync)
        yield Story(pipeline, request.param)
    finally:
        emulator.stop()
        drop_schemas(pipeline)


def mart(pipeline: dlt.Pipeline, sql: str) -> list[tuple[Any, ...]]:
    return rows(pipeline, sql.format(models=f"{pipeline.dataset_name}_models"))


# --- the marts, row by row ----------------------------------------------------------------------


def test_fleet_history_scenario(synced_story: Story) -> None:
    assert (
        mart(
            synced_story.pipeline,
            """select day_date, snapshot_count, total_controllers, active_controllers,
                offline_controllers, reporting_controllers, water_delivered,
                average_battery_soc, wireguard_connections, last_sync_at
            from {models}.fleet_history order by day_date""",
        )
        == story.FLEET_HISTORY
    )


def test_controller_daily_scenario(synced_story: Story) -> None:
    assert (
        mart(
            synced_story.pipeline,
            """select pump_id, day_date, observation_count, water_delivered, battery_soc_min,
                battery_soc_avg, battery_soc_max, current_pressure_avg, active_alarms_max,
                reboot_count, last_reading_at, last_sync_at, is_listed, is_online
            from {models}.controller_daily order by pump_id, day_date""",
        )
        == story.CONTROLLER_DAILY
    )


def test_user_history_scenario(synced_story: Story) -> None:
    assert (
        mart(
            synced_story.pipeline,
            """select user_id, day_date, user_name, snapshot_count, total_controllers,
                active_controllers, offline_controllers, linked_controllers,
                reporting_controllers, water_delivered, average_battery_soc,
                wireguard_connections, last_sync_at
            from {models}.user_history order by user_id, day_date""",
        )
        == story.USER_HISTORY
    )


def test_controllers_current_scenario(synced_story: Story) -> None:
    assert (
        mart(
            synced_story.pipeline,
            """select pump_id, controller_name, location_name, has_delegated_owner,
                owner_user_id, owner_user_name, user_count, user_ids, first_listed_at,
                last_seen_at, last_sync_at, is_visible, is_online, pump_status, is_running,
                battery_soc, current_pressure, active_alarms_count, highest_alarm_level,
                total_water_delivered, total_sessions, uptime_seconds
            from {models}.controllers_current order by pump_id""",
        )
        == story.CONTROLLERS_CURRENT
    )


def test_alarms_scenario(synced_story: Story) -> None:
    found = mart(
        synced_story.pipeline,
        """select alarm_id, pump_id, alarm_code, alarm_level, raised_at, cleared_at,
            first_reported_at, last_reported_at, summary_count, is_active, alarm_key
        from {models}.alarms order by alarm_id""",
    )
    assert [row[:-1] for row in found] == story.ALARMS
    assert all(len(row[-1]) == 16 for row in found)


# Every mart column, in order, with the type BI drivers read it as: BIGINT, DOUBLE, DATE,
# TIMESTAMPTZ, VARCHAR or BOOLEAN (no HUGEINT, no DECIMAL(38): drivers map those to strings or
# fail). `BI_TYPES` is how each backend spells them in information_schema; any other type fails.
MART_COLUMN_TYPES = {
    "alarms": [
        ("alarm_key", "varchar"),
        ("alarm_id", "varchar"),
        ("pump_id", "varchar"),
        ("alarm_code", "varchar"),
        ("alarm_level", "varchar"),
        ("alarm_message", "varchar"),
        ("raised_at", "timestamptz"),
        ("cleared_at", "timestamptz"),
        ("first_reported_at", "timestamptz"),
        ("last_reported_at", "timestamptz"),
        ("summary_count", "bigint"),
        ("is_active", "boolean"),
    ],
    "controller_daily": [
        ("pump_id", "varchar"),
        ("day_date", "date"),
        ("observation_count", "bigint"),
        ("water_delivered", "double"),
        ("battery_soc_min", "double"),
        ("battery_soc_avg", "double"),
        ("battery_soc_max", "double"),
        ("current_pressure_avg", "double"),
        ("active_alarms_max", "bigint"),
        ("reboot_count", "bigint"),
        ("last_reading_at", "timestamptz"),
        ("last_sync_at", "timestamptz"),
        ("is_listed", "boolean"),
        ("is_online", "boolean"),
    ],
    "controllers_current": [
        ("pump_id", "varchar"),
        ("controller_name", "varchar"),
        ("profile", "varchar"),
        ("communication_method", "varchar"),
        ("installation_name", "varchar"),
        ("location_name", "varchar"),
        ("latitude", "double"),
        ("longitude", "double"),
        ("has_delegated_owner", "boolean"),
        ("owner_user_id", "bigint"),
        ("owner_user_name", "varchar"),
        ("user_count", "bigint"),
        ("user_ids", "varchar"),
        ("first_listed_at", "timestamptz"),
        ("last_seen_at", "timestamptz"),
        ("last_heartbeat_at", "timestamptz"),
        ("last_sync_at", "timestamptz"),
        ("is_visible", "boolean"),
        ("is_online", "boolean"),
        ("pump_status", "varchar"),
        ("is_running", "boolean"),
        ("battery_voltage", "double"),
        ("battery_soc", "double"),
        ("battery_current", "double"),
        ("current_pressure", "double"),
        ("active_alarms_count", "bigint"),
        ("highest_alarm_level", "varchar"),
        ("total_water_delivered", "double"),
        ("total_sessions", "bigint"),
        ("uptime_seconds", "double"),
        ("changed_at", "timestamptz"),
    ],
    "fleet_history": [
        ("day_date", "date"),
        ("snapshot_count", "bigint"),
        ("total_controllers", "bigint"),
        ("active_controllers", "bigint"),
        ("offline_controllers", "bigint"),
        ("reporting_controllers", "bigint"),
        ("water_delivered", "double"),
        ("average_battery_soc", "double"),
        ("wireguard_connections", "bigint"),
        ("last_sync_at", "timestamptz"),
    ],
    "user_history": [
        ("user_id", "bigint"),
        ("day_date", "date"),
        ("user_name", "varchar"),
        ("snapshot_count", "bigint"),
        ("total_controllers", "bigint"),
        ("active_controllers", "bigint"),
        ("offline_controllers", "bigint"),
        ("linked_controllers", "bigint"),
        ("reporting_controllers", "bigint"),
        ("water_delivered", "double"),
        ("average_battery_soc", "double"),
        ("wireguard_connections", "bigint"),
        ("last_sync_at", "timestamptz"),
    ],
}
BI_TYPES = {
    "duckdb": {
        "BIGINT": "bigint",
        "DOUBLE": "double",
        "DATE": "date",
        "TIMESTAMP WITH TIME ZONE": "timestamptz",
        "VARCHAR": "varchar",
        "BOOLEAN": "boolean",
    },
    "postgres": {
        "bigint": "bigint",
        "double precision": "double",
        "date": "date",
        "timestamp with time zone": "timestamptz",
        "character varying": "varchar",
        "text": "varchar",
        "boolean": "boolean",
    },
}


def test_every_mart_column_has_a_bi_friendly_type(synced_story: Story) -> None:
    found = mart(
        synced_story.pipeline,
        f"""select table_name, column_name, data_type from information_schema.columns
        where table_schema = '{{models}}' and table_name in {MARTS}
        order by table_name, ordinal_position""",
    )
    spelling = BI_TYPES[synced_story.backend]
    types: dict[str, list[tuple[str, str]]] = {}
    for table, column, data_type in found:
        assert data_type in spelling, f"{table}.{column} is {data_type}"
        types.setdefault(table, []).append((column, spelling[data_type]))
    assert types == MART_COLUMN_TYPES


def test_marts_schema_holds_only_marts(synced_story: Story) -> None:
    """Analysts see the marts alone; the staging views, intermediate tables and the build's
    bookkeeping are in `<models schema>_internal`."""
    dataset = synced_story.pipeline.dataset_name
    relations = rows(
        synced_story.pipeline,
        "select table_schema, table_name, table_type from information_schema.tables "
        f"where table_schema in ('{dataset}_models', '{dataset}_models_internal')",
    )
    marts = sorted((name, kind) for schema, name, kind in relations if schema.endswith("_models"))
    assert marts == [(name, "BASE TABLE") for name in MARTS]
    helpers = {name for schema, name, _ in relations if schema.endswith("_internal")}
    change_logs = {  # DuckDB: the keys each build changed, for the reader copies
        f"{name}__changes" for name in MARTS if name != "controllers_current"
    }
    assert helpers == (
        {model.name for model in models.load_models() if model.layer != "marts"}
        | {"_model_state", "_model_loads"}
        | (change_logs if synced_story.backend == "duckdb" else set())
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_build_moves_an_earlier_layout_out_of_the_marts_schema(
    backend: str, tmp_path: Path
) -> None:
    """Versions before 2026-12 kept the helpers and the bookkeeping beside the marts, and
    `controllers_current` was a view on the staging views: the next build leaves the marts."""
    pipeline = new_pipeline(backend, tmp_path)
    try:
        build_models(pipeline, ModelSettings())
        schema = f"{pipeline.dataset_name}_models"
        with pipeline.sql_client() as client:
            client.execute_sql(f"drop table {schema}.controllers_current")
            for name in ("stg_controllers", "stg_fleet_snapshots"):
                client.execute_sql(f"create view {schema}.{name} as select 1 as pump_id")
            client.execute_sql(
                f"create view {schema}.controllers_current as "
                f"select c.pump_id from {schema}.stg_controllers as c "
                f"join {schema}.stg_fleet_snapshots as s on s.pump_id = c.pump_id"
            )
            for name in ("int_calendar_days", "_model_state", "_model_loads", "alarms__changes"):
                client.execute_sql(f"create table {schema}.{name} as select 1 as x")

        built = {model.name: model.how for model in build_models(pipeline, ModelSettings())}

        assert built["controllers_current"] == "full"
        assert rows(
            pipeline,
            "select table_name, table_type from information_schema.tables "
            f"where table_schema = '{schema}' order by table_name",
        ) == [(name, "BASE TABLE") for name in MARTS]
    finally:
        drop_schemas(pipeline)


def test_controller_daily_online_matches_portal_active(synced_story: Story) -> None:
    # Same 15-minute window as the emulated portal: pumps online at a day's last sync are the
    # portal's active_controllers at that sync; controllers_current matches the latest sync.
    daily = mart(
        synced_story.pipeline,
        """select day_date, sum(case when is_online then 1 else 0 end)
        from {models}.controller_daily where last_sync_at is not null
        group by day_date order by day_date""",
    )
    fleet = mart(
        synced_story.pipeline,
        """select day_date, active_controllers from {models}.fleet_history
        where snapshot_count > 0 order by day_date""",
    )
    assert daily == fleet == [(story.D1, 2), (story.D2, 2), (story.D4, 1)]
    assert mart(
        synced_story.pipeline,
        "select count(*) from {models}.controllers_current where is_online",
    ) == [(1,)]


def test_fleet_history_timezone_setting(synced_story: Story) -> None:
    # Asia/Tokyo is UTC+9: R2 (18:00 UTC) falls on the next local day, a's D3 15:00 reading
    # on D4 00:00, and d's last reading (22:00 UTC) on a fifth day.
    pipeline = synced_story.pipeline
    schema = f"{pipeline.dataset_name}_models_tokyo"
    build_models(pipeline, ModelSettings(timezone="Asia/Tokyo", schema=schema))
    found = rows(
        pipeline,
        f"select day_date, snapshot_count, water_delivered from {schema}.fleet_history "
        "order by day_date",
    )
    day5 = story.D4.replace(day=24)
    assert found == [
        (story.D1, 1, 0.0),
        (story.D2, 3, 23.0),
        (story.D3, 0, 0.0),
        (story.D4, 1, 11.5),
        (day5, 1, 0.5),
    ]


# --- building and translating -------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["postgres", "snowflake", "bigquery"])
def test_models_translate_to_dialect(dialect: str) -> None:
    target = Target("pump_portal", "pump_portal_models", ModelSettings(timezone="Europe/Berlin"))
    compiled = models.compile_models(dialect, target)
    assert {model.name for model, _ in compiled} >= set(MARTS)
    for model, sql in compiled:
        assert sqlglot.parse_one(sql, read=dialect) is not None, model.name


def test_models_dependency_order_follows_refs() -> None:
    ordered = models.load_models()
    position = {model.name: index for index, model in enumerate(ordered)}
    for model in ordered:
        assert all(position[ref] < position[model.name] for ref in model.refs), model.name
    assert [m.layer for m in ordered] == sorted((m.layer for m in ordered), key=models.LAYERS.index)


def test_models_materialization_from_header() -> None:
    kinds = {model.name: model.materialized for model in models.load_models()}
    assert kinds["stg_controllers"] == "view"
    assert kinds["controllers_current"] == "table"
    assert kinds["int_calendar_days"] == "table"
    for name in ("controller_daily", "fleet_history", "user_history", "alarms"):
        assert kinds[name] == "incremental", name


def test_models_build_on_empty_dataset(tmp_path: Path) -> None:
    # Nothing loaded yet: every source table is missing and reads as typed NULLs.
    pipeline = new_pipeline("duckdb", tmp_path)
    built = build_models(pipeline, ModelSettings())
    assert set(MARTS) <= set(built)
    for name in MARTS:
        assert rows(pipeline, f"select count(*) from pump_portal_models.{name}") == [(0,)]


def test_build_models_failure_keeps_previous_models(tmp_path: Path) -> None:
    pipeline = new_pipeline("duckdb", tmp_path)
    build_models(pipeline, ModelSettings())
    broken = tmp_path / "sql"
    shutil.copytree(models.SQL_DIR, broken)
    (broken / "marts" / "zz_broken.sql").write_text(
        "-- materialized: table\nselect no_such_column from {{ ref('fleet_history') }}\n"
    )
    with pytest.raises(Exception, match="no_such_column"):
        build_models(pipeline, ModelSettings(), sql_dir=broken)
    assert rows(pipeline, "select count(*) from pump_portal_models.fleet_history") == [(0,)]
    build_models(pipeline, ModelSettings())  # and the next build cleans up after the failed one
    assert rows(
        pipeline,
        "select count(*) from information_schema.tables "
        "where table_schema = 'pump_portal_models' and table_name like '%\\_\\_next' escape '\\'",
    ) == [(0,)]


def test_models_settings_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELS__TIMEZONE", "America/New_York")
    monkeypatch.setenv("MODELS__ONLINE_THRESHOLD_MINUTES", "30")
    monkeypatch.setenv("MODELS__SCHEMA", "analytics")
    assert ModelSettings.from_config() == ModelSettings("America/New_York", 30, "analytics")


def test_models_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="time zone"):
        ModelSettings(timezone="Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="positive integer"):
        ModelSettings(online_threshold_minutes=0)
    with pytest.raises(ValueError, match="schema"):
        ModelSettings(schema="drop table x; --")


# --- PostgreSQL as the configured destination ---------------------------------------------------


@pytest.mark.postgres
def test_postgres_destination_selected_by_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    dataset = f"pump_portal_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("PIPELINES__PUMP_PORTAL__DESTINATION_TYPE", "postgres")
    monkeypatch.setenv("PIPELINES__PUMP_PORTAL__DATASET_NAME", dataset)
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", POSTGRES_URL)
    pipeline = make_pipeline(pipelines_dir=str(tmp_path / "pipelines"), progress=None)
    emulator = PortalEmulator(Fleet.generate(pumps=6, users=2, seed=3))
    emulator.start()
    try:
        assert pipeline.destination.destination_name == "postgres"
        assert pipeline.dataset_name == dataset
        result = sync(emulator, pipeline, build_models=build_models)
        assert result.error is None and set(MARTS) <= set(result.models_built)
        assert mart(pipeline, "select count(*) from {models}.controllers_current") == [(6,)]
        # dlt drops raw tables without CASCADE on a full refresh; the models' views must go first.
        drop_models(pipeline)
        result = run_sync(
            pipeline,
            full_refresh=True,
            build_models=build_models,
            base_url=emulator.url,
            api_key=emulator.keys.full,
            run_at=emulator.now,
            backoff_seconds=0.01,
        )
        assert result.error is None and set(MARTS) <= set(result.models_built)
    finally:
        emulator.stop()
        drop_schemas(pipeline)
