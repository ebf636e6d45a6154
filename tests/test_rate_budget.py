"""The shared request budget, proved against the emulator's fixed-window rate limit (not a timing).

16 workers and a configured budget equal to the portal's limit: the run must finish with every
request answered (no failure, no retry) and the portal must refuse at most one request per window.
"""

from __future__ import annotations

import collections

import pytest

from tests.conftest import sync
from tests.portal_emulator import Fleet, PortalEmulator, RateLimit

LIMIT = RateLimit(requests=20, window=1.0)


@pytest.fixture
def limited_emulator() -> PortalEmulator:
    # 40 pumps and 3 users: about 90 requests, so the run spans ~5 windows of 20.
    emu = PortalEmulator(
        Fleet.generate(pumps=40, users=3, seed=11), latency=0.005, rate_limit=LIMIT
    )
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def test_sixteen_workers_stay_within_the_shared_budget(limited_emulator, pipeline):
    emu = limited_emulator

    result = sync(
        emu,
        pipeline,
        concurrency=16,
        requests_per_window=LIMIT.requests,
        window_seconds=LIMIT.window,
    )

    assert result.error is None, result.error
    assert result.outcome in ("success", "partial")
    stats = result.report.client_stats
    assert stats.retries == 0
    answered = sum(n for (_, status), n in emu.status_counts.items())
    assert answered >= 80  # the run really was spread over several windows
    unexpected = {k: n for k, n in emu.status_counts.items() if k[1] not in (200, 404, 429)}
    assert unexpected == {}
    # The only 404s are the never-seen pumps' details, which the report lists as skipped.
    skipped = collections.Counter(item.code for item in result.report.skipped)
    assert set(skipped) <= {"not_found"}
    assert max(emu.rate_limited_per_window.values(), default=0) <= 1, emu.rate_limited_per_window
    assert stats.rate_limited == sum(emu.rate_limited_per_window.values())


def test_without_a_configured_budget_429s_never_fail_the_run(limited_emulator, pipeline):
    emu = limited_emulator

    result = sync(emu, pipeline, concurrency=16)

    assert result.error is None, result.error
    assert result.outcome in ("success", "partial")
    stats = result.report.client_stats
    assert stats.rate_limited > 0  # the portal did refuse: the budget was only learned
    assert stats.retries == 0  # a 429 is waited out, never counted as a failed attempt
    assert stats.rate_limited == sum(emu.rate_limited_per_window.values())
    unexpected = {k: n for k, n in emu.status_counts.items() if k[1] not in (200, 404, 429)}
    assert unexpected == {}
