"""The shared request budget, proved against the emulator's fixed-window rate limit (not a timing).

The emulator counts arrivals per fixed window from its start and answers 429 with Retry-After =
seconds to the reset, rounded up to a whole second (so 1 with the 0.5 s windows here: one pause
spans two windows). Every assertion is a bound the scenario determines, never a speed ratio
(`make bench-sync ARGS=--only=rate_limited` measures those).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import time

import pytest

from pipelines.pump_portal.client import PortalClient
from pipelines.pump_portal.errors import PortalError
from pipelines.pump_portal.pacing import RequestPacer
from tests.conftest import sync
from tests.portal_emulator import Fleet, PortalEmulator, RateLimit

LIMIT = RateLimit(requests=40, window=0.5)
CONCURRENCY = 16
# Requests a sync can have in flight at once: the workers plus the page read-ahead threads.
IN_FLIGHT = CONCURRENCY + CONCURRENCY - 1


@pytest.fixture
def limited_emulator() -> PortalEmulator:
    # 60 pumps and 3 users: about 130 requests, so the run spans several windows of 40.
    emu = PortalEmulator(
        Fleet.generate(pumps=60, users=3, seed=11), latency=0.005, rate_limit=LIMIT
    )
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def _per_window(emu: PortalEmulator, window: float) -> tuple[collections.Counter, int]:
    """Arrivals per server window (429s included), and the windows the run spanned."""
    arrivals = collections.Counter(int(r.time // window) for r in emu.requests)
    return arrivals, max(arrivals) - min(arrivals) + 1


def test_sixteen_workers_stay_within_the_shared_budget(limited_emulator, pipeline):
    emu = limited_emulator

    started = time.monotonic()
    result = sync(
        emu,
        pipeline,
        concurrency=CONCURRENCY,
        requests_per_window=LIMIT.requests,
        window_seconds=LIMIT.window,
    )
    wall = time.monotonic() - started

    assert result.error is None, result.error
    assert result.outcome in ("success", "partial")
    stats = result.report.client_stats
    assert stats.retries == 0
    answered = sum(n for (_, status), n in emu.status_counts.items() if status != 429)
    assert answered >= 3 * LIMIT.requests  # the run really was spread over several windows
    unexpected = {k: n for k, n in emu.status_counts.items() if k[1] not in (200, 404, 429)}
    assert unexpected == {}
    # The only 404s are the never-seen pumps' details, which the report lists as skipped.
    skipped = collections.Counter(item.code for item in result.report.skipped)
    assert set(skipped) <= {"not_found"}
    # What the client *sent* per server window, not only what the portal let through: at most
    # the budget, plus one request that reached the portal later than its start allowed for.
    arrivals, windows = _per_window(emu, LIMIT.window)
    assert max(arrivals.values()) <= LIMIT.requests + 1, arrivals
    assert max(emu.rate_limited_per_window.values(), default=0) <= 1, emu.rate_limited_per_window
    assert stats.rate_limited == sum(emu.rate_limited_per_window.values()) <= windows
    # Wall-clock time paused: each 429 pauses everyone once, for its Retry-After (1 s here).
    assert 0.0 <= stats.rate_limit_wait_seconds <= min(wall, stats.rate_limited * 1.0)


def test_without_a_configured_budget_429s_never_fail_the_run(limited_emulator, pipeline):
    emu = limited_emulator

    started = time.monotonic()
    result = sync(emu, pipeline, concurrency=CONCURRENCY)
    wall = time.monotonic() - started

    assert result.error is None, result.error
    assert result.outcome in ("success", "partial")
    stats = result.report.client_stats
    assert stats.rate_limited > 0  # the portal did refuse: the budget was only learned
    assert stats.retries == 0  # a 429 is waited out, never counted as a failed attempt
    assert stats.rate_limited == sum(emu.rate_limited_per_window.values())
    unexpected = {k: n for k, n in emu.status_counts.items() if k[1] not in (200, 404, 429)}
    assert unexpected == {}
    # A refused window refuses at most what was in flight when its budget ran out.
    assert max(emu.rate_limited_per_window.values()) <= IN_FLIGHT
    # Learning takes two refused windows, each a 1 s pause; pauses never overlap (no request
    # starts during one), so the wall-clock time paused is whole seconds, one per pause, and at
    # most one pause per refused window: not the sum of 16 workers' waits.
    wait = stats.rate_limit_wait_seconds
    assert wait == round(wait)
    assert 2.0 <= wait <= min(wall, len(emu.rate_limited_per_window) * 1.0)


def test_the_learned_budget_is_the_portals_limit():
    """12 workers against 30 requests per 1 s window, nothing configured: after two refused
    windows the pacer holds exactly the portal's limit, and the portal refuses nothing more."""
    limit = RateLimit(requests=30, window=1.0)
    fleet = Fleet.generate(pumps=30, users=1, seed=3)
    emu = PortalEmulator(fleet, latency=0.005, rate_limit=limit)
    emu.start()
    pacer = RequestPacer()
    client = PortalClient(emu.url, emu.keys.full, pacer=pacer, pool_size=12)

    def fetch(pump_id: str) -> None:
        with contextlib.suppress(PortalError):  # a never-seen pump's 404: not this test's concern
            client.pump_summary(pump_id)

    try:
        # Start 50 ms into a window, so neither learning burst can straddle a window boundary.
        time.sleep(1.05 - (time.monotonic() - emu.app.origin) % 1.0)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(fetch, itertools.islice(itertools.cycle(fleet.pump_ids()), 120)))
        wall = time.monotonic() - started
    finally:
        client.close()
        emu.stop()

    assert pacer.budget == (30, 1.0)
    refused = emu.rate_limited_per_window
    first, second, *later = sorted(refused)
    assert second == first + 1  # two consecutive windows to learn from
    assert all(refused[w] <= 1 for w in later), refused  # then paced: a straggler at most
    assert max(refused.values()) <= 12
    assert client.stats.rate_limited == sum(refused.values())
    assert client.stats.rate_limit_wait_seconds == pacer.pauses * 1.0 <= wall
