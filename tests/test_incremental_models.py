"""Incremental model builds (pipelines/models.py, sql/README.md), on DuckDB and on PostgreSQL.

A small emulated fleet is synced through five simulated days with the late data an incremental
build must get right: counter resets, reboots, a reading dated into a day already built, a device
clock that jumps back to a last_seen already read (a replayed key), a device clock ahead of the
portal, pumps vanishing and returning, users' links changing, a day without a sync. After every
sync the models are built incrementally, and every mart row must equal a full rebuild's.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dlt
import pytest

from pipelines import models
from pipelines.models import BuiltModel, ModelSettings, build_models
from tests.conftest import rows, scalar, sync
from tests.portal_emulator import Fleet, PortalEmulator
from tests.test_models import BACKENDS, drop_schemas, new_pipeline

UTC = dt.UTC
START = dt.datetime(2025, 6, 1, 6, 0, tzinfo=UTC)
D1, D2, D3, D4, D5 = (dt.date(2025, 6, day) for day in range(1, 6))

# Mart -> its key columns (the order rows are compared in).
MART_KEYS = {
    "alarms": ("pump_id", "alarm_key"),
    "controller_daily": ("pump_id", "day_date"),
    "fleet_history": ("day_date",),
    "user_history": ("user_id", "day_date"),
}


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def make_fleet() -> Fleet:
    fleet = Fleet.generate(pumps=12, users=3, seed=5, start=START)
    fleet.report(fleet.pump_ids())  # everyone reports before the first sync
    return fleet


def play(emu: PortalEmulator, sync_and_check: Callable[[str], None]) -> None:
    """The late-data story; `sync_and_check(step)` syncs at the emulator's now and compares."""
    fleet = emu.fleet
    pumps = fleet.pump_ids()
    users = fleet.user_ids()
    a, b, c, d, e, f = pumps[:6]

    def move_clock(moment: dt.datetime) -> None:
        emu.advance((moment - emu.now).total_seconds())

    sync_and_check("D1 06:00 first sync")

    move_clock(at(D1, 18))
    emu.report(pumps[::2])  # read by the next sync, dated into D1 (already built)
    move_clock(at(D2, 9))
    fleet.set_counter(a, 0.0)
    emu.report([a], water=4.0)  # counter reset
    fleet.reboot(b)
    emu.report([b], water=2.5)  # uptime back to 0
    fleet.remove_pump(c)  # vanishes
    sync_and_check("D2 09:00 readings dated into D1, reset, reboot, a pump vanishes")

    # d's reading is stamped late on D1 and only read by the next sync.
    fleet.report([d], now=at(D1, 23, 30), water=6.0)
    move_clock(at(D2, 14))
    emu.report([e, f])
    moving = pumps[9]  # users[0]'s alone
    fleet.move_pump(moving, users[0], users[1], is_owner=True)
    sync_and_check("D2 14:00 a reading dated into D1, a pump changes users")

    # D3: no sync at all.
    e_seen = fleet.pumps[e].last_seen
    move_clock(at(D3, 15))
    emu.report([e], water=3.0)
    emu.report([a], water=1.5)
    move_clock(at(D4, 10))
    fleet.restore_pump(c)  # returns after a gap
    emu.report([c, f], water=2.0)
    # b's device clock runs a day ahead: its reading is dated D5, the calendar grows beyond today
    fleet.report([b], now=at(D5, 2), water=1.0)
    fleet.move_pump(moving, users[1], None)  # leaves the integration
    sync_and_check("D4 10:00 after a day without a sync: return, clock ahead")

    move_clock(at(D4, 22))
    emu.report(pumps[1::3])
    fleet.remove_pump(f)  # vanishes while the calendar already holds D5
    # e's clock jumps back to the last_seen the D2 14:00 sync read: a replayed key
    fleet.set_last_seen(e, e_seen)
    fleet.move_pump(pumps[6], None, users[2])  # shared with another user
    sync_and_check("D4 22:00 a pump vanishes, a replayed reading, a pump is shared")


def assert_story_happened(pipeline: dlt.Pipeline, schema: str) -> None:
    """The late-data cases really reached the marts (or the comparison proves little)."""
    pumps = sorted(make_fleet().pump_ids())
    a, b, c, d, _, f = pumps[:6]
    assert (
        scalar(
            pipeline,
            f"select count(*) from {schema}_internal.int_controller_readings where _is_rederived",
        )
        > 0
    )
    daily = {
        (pump, day): (count, water, listed)
        for pump, day, count, water, listed in rows(
            pipeline,
            f"select pump_id, day_date, observation_count, water_delivered, is_listed "
            f"from {schema}.controller_daily",
        )
    }
    assert daily[(c, D3)][2] is None and daily[(c, D4)][2] is True  # c came back: D3 re-created
    assert (f, D4) in daily and (f, D5) not in daily  # f vanished: its D5 row went
    assert daily[(b, D5)][0] == 1  # the reading from a clock a day ahead
    assert daily[(d, D1)][1] >= 6.0  # the late reading dated into D1
    assert daily[(a, D2)][1] == 4.0  # the counter reset: its new value was delivered


def mart_columns(client: Any, schema: str, mart: str) -> list[str]:
    found = client.execute_sql(
        "select column_name from information_schema.columns "
        f"where table_schema = '{schema}' and table_name = '{mart}' order by ordinal_position"
    )
    return [column for (column,) in found]


def mart_rows(client: Any, schema: str, mart: str, columns: list[str]) -> list[tuple[Any, ...]]:
    order = ", ".join(MART_KEYS[mart])
    found = client.execute_sql(f"select {', '.join(columns)} from {schema}.{mart} order by {order}")
    return [tuple(row) for row in found]


def same_value(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-12)
    return left == right and type(left) is type(right)


def assert_same_marts(pipeline: dlt.Pipeline, incremental: str, full: str, step: str) -> None:
    with pipeline.sql_client() as client:
        for mart in MART_KEYS:
            columns = mart_columns(client, full, mart)
            assert mart_columns(client, incremental, mart) == columns
            built = mart_rows(client, incremental, mart, columns)
            expected = mart_rows(client, full, mart, columns)
            compare(step, mart, built, expected)


def compare(
    step: str, mart: str, built: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]
) -> None:
    assert len(built) == len(expected), f"{step}: {mart} has {len(built)} rows, not {len(expected)}"
    for got, want in zip(built, expected, strict=True):
        assert all(same_value(x, y) for x, y in zip(got, want, strict=True)), (
            f"{step}: {mart} row differs:\n incremental {got}\n full        {want}"
        )


def by_name(built: list[BuiltModel]) -> dict[str, BuiltModel]:
    return {model.name: model for model in built}


@pytest.fixture(params=BACKENDS)
def pipeline(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dlt.Pipeline]:
    pipeline = new_pipeline(request.param, tmp_path)
    try:
        yield pipeline
    finally:
        drop_schemas(pipeline)


def test_incremental_builds_equal_full_rebuilds_after_every_sync(pipeline: dlt.Pipeline) -> None:
    incremental = f"{pipeline.dataset_name}_models"
    full = f"{pipeline.dataset_name}_models_full"
    emulator = PortalEmulator(make_fleet())
    emulator.start()
    hows: list[dict[str, str]] = []
    try:

        def sync_and_check(step: str) -> None:
            result = sync(emulator, pipeline)
            assert result.outcome == "success", result.error
            built = by_name(build_models(pipeline, ModelSettings()))
            hows.append({name: model.how for name, model in built.items()})
            build_models(pipeline, ModelSettings(schema=full), full_refresh=True)
            assert_same_marts(pipeline, incremental, full, step)

        play(emulator, sync_and_check)
    finally:
        emulator.stop()
    assert_story_happened(pipeline, incremental)
    assert set(hows[0].values()) == {"full", "view"}  # the first build
    for how in hows[1:]:
        for name in (*MART_KEYS, "int_controller_readings"):
            assert how[name] == "incremental", name
        assert how["int_calendar_days"] == "full"
        assert how["controllers_current"] == "full"


def test_incremental_build_reports_what_it_wrote(tmp_path: Path) -> None:
    pipeline = new_pipeline("duckdb", tmp_path)
    emulator = PortalEmulator(make_fleet())
    emulator.start()
    try:
        assert sync(emulator, pipeline).outcome == "success"
        first = by_name(build_models(pipeline, ModelSettings()))
        assert first["controller_daily"].how == "full"
        assert first["controller_daily"].reason == "first build"
        assert first["controller_daily"].rows_changed is None

        nothing = by_name(build_models(pipeline, ModelSettings()))  # no load since
        assert nothing["controller_daily"].how == "incremental"
        assert {model.rows_changed for model in nothing.values() if model.how != "view"} == {
            0,
            None,  # int_calendar_days, controllers_current: tables, rebuilt whole
        }

        emulator.advance(900)
        two = emulator.fleet.pump_ids()[:2]
        emulator.report(two)
        assert sync(emulator, pipeline).outcome == "success"
        built = by_name(build_models(pipeline, ModelSettings()))
    finally:
        emulator.stop()
    assert built["int_controller_readings"].how == "incremental"
    assert built["int_controller_readings"].rows_changed == 2  # the two new readings
    # a new sync rewrites today's row of every listed pump, and today's fleet row
    assert built["controller_daily"].rows_changed == 12
    assert built["fleet_history"].rows_changed == 1
    assert str(built["controller_daily"]) == "controller_daily"
    assert ", ".join(built).startswith("stg_")
    state = rows(
        pipeline,
        "select how, count(*) from pump_portal_models_internal._model_state "
        "group by how order by how",
    )
    assert state == [("full", 2), ("incremental", 9), ("view", 9)]


def test_changed_model_sql_or_settings_rebuilds_whole(tmp_path: Path) -> None:
    pipeline = new_pipeline("duckdb", tmp_path)
    emulator = PortalEmulator(make_fleet())
    emulator.start()
    try:
        assert sync(emulator, pipeline).outcome == "success"
    finally:
        emulator.stop()
    build_models(pipeline, ModelSettings())
    changed = tmp_path / "sql"
    shutil.copytree(models.SQL_DIR, changed)
    readings = changed / "intermediate" / "int_controller_readings.sql"
    readings.write_text(readings.read_text().replace("as is_reboot,", "as is_reboot,  -- edited"))

    built = by_name(build_models(pipeline, ModelSettings(), sql_dir=changed))
    assert built["int_controller_readings"].how == "full"
    assert built["int_controller_readings"].reason == (
        "its SQL, an upstream model's or the settings changed"
    )
    # everything downstream of the readings too; the alarms do not read them
    assert built["controller_daily"].how == "full"
    assert built["user_history"].how == "full"
    assert built["alarms"].how == "incremental"

    again = by_name(build_models(pipeline, ModelSettings(), sql_dir=changed))
    assert again["controller_daily"].how == "incremental"

    # a setting is part of the rendered SQL: the models that use it are rebuilt whole
    other_zone = by_name(build_models(pipeline, ModelSettings(timezone="Europe/Berlin")))
    for name in ("int_controller_readings", "controller_daily", "fleet_history", "user_history"):
        assert other_zone[name].how == "full", name
    assert other_zone["alarms"].how == "incremental"  # no day or time of day in it

    refreshed = by_name(build_models(pipeline, ModelSettings(), full_refresh=True))
    assert {m.how for m in refreshed.values() if m.how != "view"} == {"full"}
    assert refreshed["alarms"].reason == "full refresh requested"


def test_incremental_variant_translates_to_postgres() -> None:
    target = models.Target("pump_portal", "pump_portal_models", ModelSettings())
    compiled = dict(models.compile_models("postgres", target, incremental=True))
    incremental = [model for model in compiled if model.materialized == "incremental"]
    assert {model.name for model in incremental} >= set(MART_KEYS)
    for model in incremental:
        assert "load_id IN ('0')" in compiled[model] or "_build_id = 1" in compiled[model]
