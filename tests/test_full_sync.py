"""A full sync of the emulated fleet (300 pumps, 12 users), checked against the emulator's truth.

One module-wide scenario (two runs, a minute apart, two pumps whose details are forbidden) is
synced once and read by every test, which keeps the suite fast; tests that change the fleet
have their own.
"""

from __future__ import annotations

from types import SimpleNamespace

import dlt
import pytest

from pipelines.runner import make_pipeline
from tests.conftest import rows, scalar, sync
from tests.portal_emulator import Fleet, PortalEmulator

FORBIDDEN = 2


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("full_sync")
    fleet = Fleet.generate(pumps=300, users=12, seed=7)
    fleet.forbidden_detail_pumps.update(fleet.pump_ids()[:FORBIDDEN])
    emu = PortalEmulator(fleet)
    emu.start()
    try:
        pipeline = make_pipeline(
            destination=dlt.destinations.duckdb(str(folder / "warehouse.duckdb")),
            dataset_name="pump_portal",
            pipelines_dir=str(folder / "pipelines"),
            progress=False,
        )
        first = sync(emu, pipeline)
        first_statistics = fleet.statistics(emu.now)
        first_requests = list(emu.requests)
        emu.advance(60)
        emu.reset_counts()
        second = sync(emu, pipeline)
        yield SimpleNamespace(
            emu=emu,
            fleet=fleet,
            pipeline=pipeline,
            first=first,
            second=second,
            first_statistics=first_statistics,
            first_requests=first_requests,
            second_requests=sum(emu.counts.values()),
        )
    finally:
        emu.stop()


def test_full_sync_loads_every_pump_exactly_once(synced):
    pipeline, fleet = synced.pipeline, synced.fleet
    pump_ids = fleet.pump_ids()

    assert len(pump_ids) == 300
    assert synced.first.error is None and synced.second.error is None
    assert scalar(pipeline, "select count(*) from controllers") == 300
    assert scalar(pipeline, "select count(distinct pump_id) from controllers") == 300
    assert {r[0] for r in rows(pipeline, "select pump_id from controllers")} == set(pump_ids)
    assert scalar(pipeline, "select count(*) from controller_visibility where is_visible") == 300


def test_full_sync_loads_details_except_404_and_403(synced):
    pipeline, fleet = synced.pipeline, synced.fleet
    forbidden = fleet.pump_ids()[:FORBIDDEN]
    unavailable = set(fleet.missing_detail_pumps) | set(forbidden)
    expected = sorted(set(fleet.pump_ids()) - unavailable)

    assert synced.first.outcome == "partial"
    assert len(fleet.missing_detail_pumps) == 18
    assert [
        r[0] for r in rows(pipeline, "select pump_id from pump_metadata order by 1")
    ] == expected
    assert [
        r[0] for r in rows(pipeline, "select pump_id from pump_summaries order by 1")
    ] == expected
    skipped = rows(
        pipeline,
        "select code, http_status, needs_action, count(*), count(distinct item_id), "
        "count(request_id) from skipped_items group by 1, 2, 3 order by 1",
    )
    # never-reported pumps have no details: recorded, but not something to act on
    assert skipped == [
        ("forbidden", 403, True, 4, 2, 4),
        ("not_found", 404, False, 36, 18, 36),
    ]
    # The recorded request id is the one the portal answered that request with.
    pump, request_id = rows(
        pipeline,
        "select item_id, request_id from skipped_items "
        "where code = 'forbidden' and resource = 'pump_metadata' order by item_id limit 1",
    )[0]
    answered = [
        r.request_id for r in synced.first_requests if r.path == f"/v1/pumps/{pump}/metadata"
    ]
    assert answered == [request_id]


def test_full_sync_loads_users_links_and_one_snapshot_per_run(synced):
    pipeline, fleet = synced.pipeline, synced.fleet
    user_ids = fleet.user_ids()

    assert len(user_ids) == 12
    assert [r[0] for r in rows(pipeline, "select user_id from delegated_users order by 1")] == (
        sorted(user_ids)
    )
    assert scalar(pipeline, "select count(*) from delegated_user_snapshots") == 24
    expected_links = {
        (uid, pid, fleet.users[uid].pumps[pid])
        for uid in user_ids
        for pid in fleet.user_pump_ids(uid)
    }
    loaded = set(rows(pipeline, "select user_id, pump_id, is_owner from user_pump_links"))
    assert loaded == expected_links
    assert scalar(pipeline, "select count(*) from user_pump_links where valid_to is not null") == 0
    assert scalar(pipeline, "select count(*) from fleet_snapshots") == 2
    statistics = synced.first_statistics
    snapshot = rows(
        pipeline,
        "select total_controllers, active_controllers, offline_controllers, "
        "total_water_delivered, wireguard_connections, source_endpoint "
        "from fleet_snapshots order by snapshot_at limit 1",
    )[0]
    assert snapshot == (
        statistics["total_controllers"],
        statistics["active_controllers"],
        statistics["offline_controllers"],
        float(statistics["total_water_delivered"]),
        statistics["wireguard_connections"],
        "/v1/stats",
    )


def test_full_sync_sample_values_match_the_fleet(synced):
    pipeline, fleet = synced.pipeline, synced.fleet
    stringly = next(p for p in fleet.pumps.values() if p.numbers_as_strings and p.battery)
    loaded = rows(
        pipeline,
        "select pump__total_water_delivered, battery__soc, is_owner, last_seen is not null "
        f"from controllers where pump_id = '{stringly.pump_id}'",
    )[0]
    assert loaded[0] == float(stringly.total_water_delivered)
    assert loaded[1] == float(stringly.battery["soc"])
    assert isinstance(loaded[2], bool)
    assert loaded[3] is True

    never_seen = [p.pump_id for p in fleet.pumps.values() if p.last_seen is None]
    assert never_seen
    assert scalar(pipeline, "select count(*) from controllers where last_seen is null") == len(
        never_seen
    )
    no_battery = sum(1 for p in fleet.pumps.values() if p.battery is None)
    assert scalar(pipeline, "select count(*) from controllers where battery__soc is null") == (
        no_battery
    )


def test_types_are_declared_and_no_variant_columns(synced):
    pipeline = synced.pipeline
    variants = rows(
        pipeline,
        "select table_name, column_name from information_schema.columns "
        "where table_schema = 'pump_portal' and column_name like '%\\_\\_v\\_%' escape '\\'",
    )
    assert variants == []
    types = dict(
        rows(
            pipeline,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'pump_portal' and table_name = 'pump_summaries'",
        )
    )
    assert types["week_trends__total_water_delivered"] == "DOUBLE"
    assert types["week_trends__avg_uptime"] == "DOUBLE"
    assert types["fetched_at"] == "TIMESTAMP WITH TIME ZONE"
    controller_types = dict(
        rows(
            pipeline,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'pump_portal' and table_name = 'controllers'",
        )
    )
    assert controller_types["is_owner"] == "BOOLEAN"
    assert controller_types["last_seen"] == "TIMESTAMP WITH TIME ZONE"
    assert controller_types["battery__soc"] == "DOUBLE"
    assert controller_types["total_sessions"] == "BIGINT"


def test_sync_runs_records_each_run(synced):
    runs = rows(
        synced.pipeline,
        "select outcome, pumps_listed, pumps_changed, detail_calls, items_skipped, "
        "pumps_without_data, requests from sync_runs order by started_at",
    )
    assert runs[0][:6] == ("partial", 300, 300, 600, 4, 18)  # the 4 forbidden detail calls
    assert runs[0][6] == len(synced.first_requests)
    assert runs[1] == ("success", 300, 0, 0, 0, 0, synced.second_requests)


def test_new_metadata_fields_become_columns(emulator, fleet, pipeline):
    sync(emulator, pipeline)
    fleet.set_metadata_extra(None, firmware_version="2.4.1", sim_iccid="8931")
    emulator.advance(25 * 3600)  # past the details' maximum age

    sync(emulator, pipeline)

    assert scalar(
        pipeline, "select count(*) from pump_metadata where firmware_version = '2.4.1'"
    ) == 300 - len(fleet.missing_detail_pumps)
