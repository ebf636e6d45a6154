"""Details refreshed in shares: no run a day refetches the whole fleet, and no pump's details
get older than `details_max_age_hours`."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from pipelines.pump_portal.controllers import PumpListing
from pipelines.pump_portal.details import pumps_due, refresh_share
from tests.conftest import sync
from tests.portal_emulator import Fleet

DETAIL_TEMPLATES = ("/v1/pumps/:pumpId/metadata", "/v1/pumps/:pumpId/summary")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
QUARTER_HOUR = dt.timedelta(minutes=15)
DAY = dt.timedelta(hours=24)


def simulate_day(pumps: int, reporting: float, seed: int = 11) -> tuple[list[int], list[float]]:
    """A full sync at START, then 96 runs 15 minutes apart; a `reporting` share of the pumps
    report before each. Returns the pumps refreshed by each run and, at each run before it
    refreshes anything, the oldest details' age in hours."""
    rng = random.Random(seed)
    ids = [f"pump-{n:05d}" for n in range(pumps)]
    seen = {pump_id: "2026-03-01T00:00:00+00:00" for pump_id in ids}
    listing = PumpListing(rows={pump_id: {"pump_id": pump_id} for pump_id in ids})
    listing._seen = seen
    fetched = {pump_id: [START.timestamp(), seen[pump_id]] for pump_id in ids}
    pace = {"runs": [START.timestamp()]}
    refreshed, oldest = [], []
    for n in range(1, 97):
        run_at = START + n * QUARTER_HOUR
        for pump_id in rng.sample(ids, int(pumps * reporting)):
            seen[pump_id] = run_at.isoformat()
        oldest.append(max(run_at.timestamp() - at for at, _ in fetched.values()) / 3600)
        due = pumps_due(listing, fetched, run_at, DAY, pace)
        for pump_id in due:
            fetched[pump_id] = [run_at.timestamp(), seen[pump_id]]
        refreshed.append(len(due))
    return refreshed, oldest


def test_a_quiet_fleet_is_refreshed_in_equal_shares_over_the_day():
    refreshed, oldest = simulate_day(2_000, reporting=0.0)

    # 2,000 pumps over the 96 quarter hours of a day: 20 5/6 a run, the fraction carried
    assert refresh_share([900.0] * 2_000, 900, 900, 86_400) == (20, pytest.approx(5 / 6))
    assert set(refreshed) == {20, 21}
    assert sum(refreshed) == 2_000
    assert max(oldest) <= 24.0
    assert oldest[0] == 0.25


def test_a_reporting_fleet_makes_no_run_over_one_and_a_half_times_the_mean():
    refreshed, oldest = simulate_day(2_000, reporting=0.02)

    mean = sum(refreshed) / len(refreshed)
    # 40 reporting pumps and a share of the others each run
    assert min(refreshed) >= 40
    assert max(refreshed) <= 1.5 * mean
    assert max(oldest) <= 24.0


def test_runs_started_by_hand_between_scheduled_ones_keep_the_guarantee():
    ids = [f"pump-{n:03d}" for n in range(100)]
    listing = PumpListing(rows={pump_id: {} for pump_id in ids})
    listing._seen = dict.fromkeys(ids)
    fetched = {pump_id: [START.timestamp(), None] for pump_id in ids}
    pace = {"runs": [START.timestamp()]}
    moments = [START + n * QUARTER_HOUR for n in range(1, 97)]
    moments += [START + n * QUARTER_HOUR + dt.timedelta(minutes=1) for n in range(3, 96, 7)]
    for run_at in sorted(moments):
        assert max(run_at.timestamp() - at for at, _ in fetched.values()) <= DAY.total_seconds()
        for pump_id in pumps_due(listing, fetched, run_at, DAY, pace):
            fetched[pump_id] = [run_at.timestamp(), None]


def test_the_share_is_the_slowest_pace_that_meets_every_deadline():
    hour = 3600.0
    # a schedule as slow as the max age: a pump fetched a while ago cannot wait another run
    assert refresh_share([hour] * 40, 2 * hour, 2 * hour, 2 * hour) == (40, 0.0)
    # no interval known yet (the run after the first): only what has expired
    assert refresh_share([2 * hour, hour, 0.0], 0, 0, 1.5 * hour) == (1, 0.0)
    # 40 pumps fetched one run ago, 3 more runs before they are an hour old: 10 a run
    assert refresh_share([900.0] * 40, 900, 900, hour) == (10, 0.0)
    assert refresh_share([900.0] * 40, 900, 900, hour, carry=0.5) == (10, pytest.approx(0.5))
    # ... a third of that 5 minutes after the last run; nothing at the same instant
    assert refresh_share([900.0] * 40, 300, 900, hour) == (3, pytest.approx(1 / 3))
    assert refresh_share([900.0] * 40, 0, 900, hour) == (0, 0.0)
    # pumps that would pass the hour before the next run go now, whatever the pace of the rest
    assert refresh_share([3000.0] * 5 + [0.0], 900, 900, hour)[0] == 5
    assert refresh_share([3000.0] * 5 + [0.0], 0, 900, hour)[0] == 5
    # one that cannot wait, nine with 4 more runs: the pace is 10 / 5
    assert refresh_share([3000.0] + [0.0] * 9, 900, 900, hour) == (2, 0.0)
    # a fleet of 300 on a one-minute schedule: a pump every 5th run, not one every run
    shares, carry = [], 0.0
    for _ in range(10):
        share, carry = refresh_share([60.0] * 300, 60, 60, 24 * hour, carry)
        shares.append(share)
    assert sum(shares) == 2


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.generate(pumps=40, users=3, seed=5)


def test_each_scheduled_run_refreshes_its_share_through_the_api(emulator, fleet, pipeline):
    """Real runs against the emulator, a max age of one hour and a run every 15 minutes: 40
    pumps refreshed 10 a run (40 over the 4 runs of an hour), no detail older than the hour at a
    run, none older than 45 minutes after it."""
    sync(emulator, pipeline, details_max_age_hours=1.0)
    last_fetch = dict.fromkeys(fleet.pump_ids(), emulator.now)
    per_run = []
    for _ in range(8):
        emulator.advance(15 * 60)
        emulator.reset_counts()
        result = sync(emulator, pipeline, details_max_age_hours=1.0)
        assert result.error is None
        now = emulator.now
        requested = [
            r.path.split("/")[3] for r in emulator.requests if r.template in DETAIL_TEMPLATES
        ]
        per_run.append(len(requested))
        for pump_id in requested:
            last_fetch[pump_id] = now
        assert max(now - at for at in last_fetch.values()) <= dt.timedelta(minutes=45)

    # 10 pumps a run, both endpoints
    assert per_run == [20] * 8
