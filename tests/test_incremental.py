"""Incremental sync keyed on last_seen: cheap runs, and no change lost or doubled."""

from __future__ import annotations

import datetime as dt

import dlt
import pytest

from pipelines.runner import make_pipeline
from tests.conftest import rows, scalar, sync
from tests.portal_emulator import Fleet

DETAIL_TEMPLATES = ("/v1/pumps/:pumpId/metadata", "/v1/pumps/:pumpId/summary")
PAGE = 10  # small pages, so a 60-pump listing spans 6 of them


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.generate(pumps=60, users=4, seed=3)


def detail_requests(emu) -> int:
    return sum(emu.counts[t] for t in DETAIL_TEMPLATES)


def paged_sync(emu, pipeline, **options):
    return sync(emu, pipeline, page_size=PAGE, **options)


def test_unchanged_fleet_makes_zero_per_pump_requests(emulator, pipeline):
    paged_sync(emulator, pipeline)
    emulator.reset_counts()

    result = paged_sync(emulator, pipeline)

    assert result.error is None
    assert detail_requests(emulator) == 0
    assert emulator.counts["/v1/pumps"] == 6
    assert emulator.counts["/v1/stats"] == 1
    assert emulator.counts["/v1/delegated-users"] == 1
    assert scalar(pipeline, "select count(*) from controller_observations") == 60 - len(
        [p for p in emulator.fleet.pumps.values() if p.last_seen is None]
    )


def test_a_lost_pipelines_folder_restores_its_state_from_the_warehouse(
    emulator, pipeline, duckdb_path, tmp_path
):
    """A new machine or a lost volume: dlt's working folder is gone, the warehouse is not. The
    run restores the resources' state from the warehouse before it extracts (as `pipeline.run`
    does; the runner calls dlt's steps one by one) and fetches no pump's details again."""
    paged_sync(emulator, pipeline)
    emulator.reset_counts()
    elsewhere = make_pipeline(
        destination=dlt.destinations.duckdb(str(duckdb_path)),
        dataset_name="pump_portal",
        pipelines_dir=str(tmp_path / "new_machine"),
        progress=False,
    )

    result = paged_sync(emulator, elsewhere)

    assert result.error is None
    assert detail_requests(emulator) == 0
    assert scalar(elsewhere, "select count(*) from controllers") == 60
    assert scalar(elsewhere, "select count(*) from pump_metadata") == scalar(
        pipeline, "select count(*) from pump_metadata"
    )


def test_k_pumps_reporting_make_exactly_2k_detail_requests(emulator, fleet, pipeline):
    paged_sync(emulator, pipeline)
    reporting = [p for p in fleet.pump_ids() if fleet.pumps[p].last_seen is not None][:7]
    emulator.advance(600)
    emulator.report(reporting)
    emulator.reset_counts()

    result = paged_sync(emulator, pipeline)

    # the run's share of the refresh (test_detail_refresh.py) is 53 / 143 of a pump: carried
    assert detail_requests(emulator) == 14
    requested = {r.path.split("/")[3] for r in emulator.requests if r.template in DETAIL_TEMPLATES}
    assert requested == set(reporting)
    assert result.report.pumps_changed == 7
    observed = rows(
        pipeline,
        "select pump_id, count(*) from controller_observations group by 1 having count(*) > 1",
    )
    assert sorted(observed) == sorted((p, 2) for p in reporting)


def test_details_older_than_max_age_are_refetched(emulator, fleet, pipeline):
    paged_sync(emulator, pipeline)
    emulator.advance(25 * 3600)
    emulator.reset_counts()

    paged_sync(emulator, pipeline)

    assert detail_requests(emulator) == 120  # every pump, both endpoints


def test_listing_shift_insert_ahead_loads_each_pump_exactly_once(emulator, fleet, pipeline):
    inserted: list[str] = []

    def insert_before_page_2(request):
        if request.template == "/v1/pumps" and request.query.get("page") == "2" and not inserted:
            inserted.append(fleet.add_pump(user_ids=(fleet.user_ids()[0],), position=0))

    emulator.on_request(insert_before_page_2)
    first = paged_sync(emulator, pipeline)
    emulator.on_request(None)

    # page 1's last pump moved to page 2 and was seen twice: the walk saw the listing move and
    # walked it again; the second walk, the new pump at its head, is the listing
    assert first.report.listing_complete is True
    assert first.report.pumps_listed == 61
    assert scalar(pipeline, "select count(*) from controllers") == 61
    assert (
        scalar(pipeline, f"select count(*) from controllers where pump_id = '{inserted[0]}'") == 1
    )
    assert emulator.counts["/v1/pumps"] == 14  # two walks of 7 pages (61 pumps by 10)

    second = paged_sync(emulator, pipeline)

    assert second.report.listing_complete is True
    assert second.report.pumps_changed == 0
    assert scalar(pipeline, "select count(*) from controllers") == 61
    assert scalar(pipeline, "select count(distinct pump_id) from controllers") == 61
    assert scalar(pipeline, "select count(*) from controller_visibility where not is_visible") == 0


def test_listing_shift_removal_ahead_is_walked_again(emulator, fleet, pipeline):
    order = fleet.pump_ids()
    removed, skipped_over = order[3], order[PAGE]

    def remove_before_page_2(request):
        page_2 = request.template == "/v1/pumps" and request.query.get("page") == "2"
        if page_2 and fleet.is_visible(removed):
            fleet.remove_pump(removed)

    emulator.on_request(remove_before_page_2)
    # pages read one after another, so exactly one pump slides across the page 1/2 boundary
    # (read-ahead would let the removal land before or after pages 3-5 as timing has it)
    first = paged_sync(emulator, pipeline, page_read_ahead=0)
    emulator.on_request(None)

    # the first pump of page 2 slid onto page 1 after it was read: the first walk missed it
    # and saw pagination.total change; the second walk, still, is the listing: the removed pump
    # is in no row (it was never loaded), the one it hid is
    assert first.report.listing_complete is True
    loaded = {r[0] for r in rows(pipeline, "select pump_id from controllers")}
    assert skipped_over in loaded and removed not in loaded
    assert loaded == set(order) - {removed}
    assert emulator.counts["/v1/pumps"] == 12  # two walks of 6 pages (59 pumps by 10)

    second = paged_sync(emulator, pipeline)

    assert second.report.listing_complete is True
    loaded = {r[0] for r in rows(pipeline, "select pump_id from controllers")}
    assert loaded == set(order) - {removed}
    assert rows(pipeline, "select pump_id from controller_visibility where not is_visible") == []


def test_vanished_pump_is_marked_not_deleted_and_can_return(emulator, fleet, pipeline):
    pump = fleet.pump_ids()[5]
    paged_sync(emulator, pipeline)
    fleet.remove_pump(pump)
    emulator.advance(60)
    paged_sync(emulator, pipeline)
    fleet.restore_pump(pump)
    emulator.advance(60)
    back = paged_sync(emulator, pipeline)

    assert back.report.pumps_returned == 1
    history = rows(
        pipeline,
        f"select is_visible from controller_visibility where pump_id = '{pump}' "
        "order by changed_at",
    )
    assert history == [(True,), (False,), (True,)]
    assert scalar(pipeline, f"select count(*) from controllers where pump_id = '{pump}'") == 1


def test_last_seen_backwards_or_missing_still_loads_and_fetches(emulator, fleet, pipeline):
    seen = [p for p in fleet.pump_ids() if fleet.pumps[p].last_seen is not None]
    backwards, missing = seen[0], seen[1]
    paged_sync(emulator, pipeline)
    earlier = fleet.pumps[backwards].last_seen - dt.timedelta(days=30)
    fleet.set_last_seen(backwards, earlier)  # device clock reset
    fleet.set_last_seen(missing, None)
    emulator.reset_counts()

    paged_sync(emulator, pipeline)

    requested = sorted(
        r.path.split("/")[3] for r in emulator.requests if r.template in DETAIL_TEMPLATES
    )
    assert requested == sorted([backwards, backwards, missing, missing])
    assert (
        scalar(pipeline, f"select last_seen from controllers where pump_id = '{backwards}'")
        == earlier
    )
    assert (
        scalar(pipeline, f"select last_seen from controllers where pump_id = '{missing}'") is None
    )
    assert (
        scalar(
            pipeline, f"select count(*) from controller_observations where pump_id = '{backwards}'"
        )
        == 2
    )


def test_pumps_sharing_one_last_seen_across_a_run_boundary(emulator, fleet, pipeline):
    seen = [p for p in fleet.pump_ids() if fleet.pumps[p].last_seen is not None]
    first, second, late = seen[:3]
    paged_sync(emulator, pipeline)
    emulator.advance(300)
    emulator.report([first, second])
    paged_sync(emulator, pipeline)
    # a third pump reports with exactly the same last_seen, after that run
    fleet.set_last_seen(late, fleet.pumps[first].last_seen)
    emulator.reset_counts()

    paged_sync(emulator, pipeline)

    assert detail_requests(emulator) == 2
    shared = rows(
        pipeline,
        "select pump_id from controller_observations where last_seen = "
        f"(select last_seen from controllers where pump_id = '{first}') order by 1",
    )
    assert shared == sorted([(first,), (second,), (late,)])


def test_a_detail_that_fails_after_retries_is_skipped_and_fetched_again_next_run(
    emulator, fleet, pipeline
):
    paged_sync(emulator, pipeline)
    reporting = [p for p in fleet.pump_ids() if fleet.pumps[p].last_seen is not None][:5]
    emulator.advance(600)
    emulator.report(reporting)
    emulator.inject("/v1/pumps/:pumpId/summary", status=500, times=None, match=reporting[-1])

    failed = paged_sync(emulator, pipeline)
    emulator.clear_faults()
    emulator.reset_counts()
    recovered = paged_sync(emulator, pipeline)

    assert failed.outcome == "partial"  # everything else of the run loaded
    assert [(i.resource, i.item_id) for i in failed.report.skipped] == [
        ("pump_summaries", reporting[-1])
    ]
    assert recovered.error is None
    assert recovered.report.pumps_changed == 0
    assert emulator.counts["/v1/pumps/:pumpId/summary"] == 1  # only the one that failed
    assert emulator.counts["/v1/pumps/:pumpId/metadata"] == 0
    for pump in reporting:
        assert (
            scalar(
                pipeline, f"select count(*) from controller_observations where pump_id = '{pump}'"
            )
            == 2
        )
        assert (
            scalar(pipeline, f"select count(*) from pump_summaries where pump_id = '{pump}'") == 2
        )
    assert scalar(pipeline, "select count(*) from controllers") == 60


def test_links_end_when_a_pump_moves_to_another_user(emulator, fleet, pipeline):
    giver, taker = fleet.user_ids()[:2]
    pump = next(p for p in fleet.user_pump_ids(giver) if p not in fleet.user_pump_ids(taker))
    paged_sync(emulator, pipeline)
    emulator.advance(3600)
    fleet.move_pump(pump, giver, taker, is_owner=True)
    moved_at = emulator.now

    paged_sync(emulator, pipeline)

    links = rows(
        pipeline,
        f"select user_id, is_owner, valid_to from user_pump_links where pump_id = '{pump}' "
        "order by valid_from, user_id",
    )
    assert [(u, t) for u, _, t in links if u == giver] == [(giver, moved_at)]
    assert [(u, o, t) for u, o, t in links if u == taker] == [(taker, True, None)]
    assert scalar(pipeline, "select count(*) from delegated_user_snapshots") == 2 * len(
        fleet.user_ids()
    )


def test_full_refresh_rebuilds_from_scratch(emulator, fleet, pipeline):
    paged_sync(emulator, pipeline)
    emulator.advance(600)
    emulator.report(fleet.pump_ids()[:3])
    paged_sync(emulator, pipeline)
    emulator.reset_counts()

    result = paged_sync(emulator, pipeline, full_refresh=True)

    assert result.error is None
    assert result.report.pumps_changed == 60
    assert detail_requests(emulator) == 120
    assert scalar(pipeline, "select count(*) from fleet_snapshots") == 1
    assert scalar(pipeline, "select count(*) from controllers") == 60
