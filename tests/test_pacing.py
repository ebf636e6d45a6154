"""The shared request budget, on a simulated clock (no HTTP: the pacer is pure scheduling).

The portal side is the emulator's own fixed-window limiter (`FixedWindowLimiter`: arrivals counted
per window aligned to its origin, Retry-After = seconds to the reset rounded up, at least 1), fed
with simulated arrival times, so every figure below is exact.
"""

from __future__ import annotations

import concurrent.futures
import random
from collections.abc import Callable
from typing import Any

import pytest

from pipelines.pump_portal import pacing
from pipelines.pump_portal.pacing import RequestPacer
from tests.portal_emulator.ratelimit import FixedWindowLimiter, RateLimit


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _pacer(time: FakeTime, *args: object) -> RequestPacer:
    return RequestPacer(*args, clock=time.clock, sleep=time.sleep)  # type: ignore[arg-type]


class Workers:
    """N worker threads driven in lockstep by the test: each call runs on its worker's own thread
    (the pacer tells requests apart by thread) while the test waits, so the order is exact."""

    def __init__(self, count: int) -> None:
        self.pools = [concurrent.futures.ThreadPoolExecutor(max_workers=1) for _ in range(count)]

    def run(self, worker: int, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pools[worker].submit(fn, *args).result()

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown()


def simulate(
    pacer: RequestPacer,
    time: FakeTime,
    server: FixedWindowLimiter,
    requests: int,
    workers: int = 8,
    latency: float = 0.02,
) -> list[tuple[float, bool]]:
    """`requests` answered requests through `workers` concurrent workers: in each round every
    worker starts one request (1 ms apart), then the answers come back after `latency`, in a
    shuffled order (the first 429 handled is not always the first refused); a 429 is reported to
    the pacer by the worker that got it, and that request is sent again later.
    Returns (arrival time, refused) per request sent."""
    pool = Workers(workers)
    order = random.Random(3)
    sent: list[tuple[float, bool]] = []
    answered = 0
    try:
        while answered < requests:
            in_flight = []
            for worker in range(workers):
                pool.run(worker, pacer.acquire)
                retry_after = server.check(time.now)
                sent.append((time.now, retry_after is not None))
                in_flight.append((worker, retry_after))
                time.now += 0.001
            time.now += latency
            order.shuffle(in_flight)
            for worker, retry_after in in_flight:
                if retry_after is None:
                    answered += 1
                else:
                    pool.run(worker, pacer.rate_limited, float(retry_after))
    finally:
        pool.close()
    return sent


def test_configured_budget_spaces_requests_into_windows():
    time = FakeTime()
    pacer = _pacer(time, 10, 1.0)

    starts = []
    for _ in range(35):
        pacer.acquire()
        starts.append(time.now)

    margin = pacing.JITTER_MARGIN_SECONDS
    assert starts[9] == 0.0
    # Request n starts a window plus the jitter margin after request n - 10.
    assert starts[10] == pytest.approx(1.0 + margin)
    assert starts[34] == pytest.approx(3 * (1.0 + margin))
    per_window = [sum(1 for s in starts if w <= s < w + 1) for w in range(4)]
    assert per_window == [10, 10, 10, 5]


def test_margin_keeps_late_arrivals_inside_the_budget_of_every_fixed_window(monkeypatch):
    """The portal counts arrivals, on its own clock: a request admitted first can arrive after
    one admitted later. With arrival delays spread over less than the margin, no fixed window,
    whatever its phase, receives more than the budget; without the margin, some do."""

    def worst_window(margin: float) -> int:
        monkeypatch.setattr(pacing, "JITTER_MARGIN_SECONDS", margin)
        time = FakeTime()
        pacer = _pacer(time, 20, 1.0)
        delays = random.Random(5)
        arrivals = []
        for _ in range(400):
            pacer.acquire()
            arrivals.append(time.now + delays.uniform(0.0, 0.019))
            time.now += 0.0005
        worst = 0
        for phase in range(1000):  # window boundaries at every millisecond offset
            start = phase / 1000
            counts: dict[int, int] = {}
            for t in arrivals:
                index = int((t - start) // 1.0)
                counts[index] = counts.get(index, 0) + 1
            worst = max(worst, max(counts.values()))
        return worst

    assert worst_window(0.02) == 20
    assert worst_window(0.0) > 20  # the stragglers the margin is there for


def test_429_pauses_every_worker_once():
    time = FakeTime()
    pacer = _pacer(time)
    pacer.acquire()
    pacer.rate_limited(3.0)
    pacer.rate_limited(2.5)  # a second in-flight 429 of the same window changes nothing

    time.now = 1.0
    assert pacer.paused_seconds == 1.0  # wall-clock time paused so far, not the announced 3 s
    assert pacer.acquire() == 2.0
    assert pacer.pauses == 1
    assert pacer.paused_seconds == 3.0


def test_paused_time_counts_a_pause_once_however_many_workers_wait():
    time = FakeTime()
    pacer = _pacer(time)
    workers = Workers(16)
    try:
        for worker in range(16):
            workers.run(worker, pacer.acquire)
        for worker in range(16):  # every request in flight is refused; one pause
            workers.run(worker, pacer.rate_limited, 1.0)
        waits = [workers.run(worker, pacer.acquire) for worker in range(16)]
    finally:
        workers.close()

    assert pacer.pauses == 1
    assert waits[0] == 1.0  # in this lockstep the first worker sleeps the pause for everyone
    assert pacer.paused_seconds == 1.0
    assert time.now == 1.0


def test_budget_is_learned_from_two_consecutive_windows():
    time = FakeTime()
    pacer = _pacer(time)
    for _ in range(30):
        pacer.acquire()
    pacer.rate_limited(1.0)  # first 429: only says when the window resets
    assert pacer.budget is None
    for _ in range(21):  # the window that opened at the reset: 20 answered, the 21st refused
        pacer.acquire()
        time.now += 0.01
    pacer.rate_limited(1.0)
    assert pacer.budget is None  # counted once the in-flight 429s are in: when the pause ends

    pacer.acquire()
    # Retry-After is whole seconds, rounded up: the 1.21 s between the two pause ends is the
    # window, plus the 0.21 s the burst took; the window is the whole seconds of it.
    assert pacer.budget == (20, 1.0)


def test_learning_subtracts_the_429s_of_requests_in_flight():
    """8 workers against 20 per 1 s: the refused request is not the only one in flight, and its
    429 is not necessarily the first to come back. The budget is what the portal answered."""
    time = FakeTime()
    pacer = _pacer(time)
    server = FixedWindowLimiter(RateLimit(20, 1.0), origin=-0.37)

    sent = simulate(pacer, time, server, requests=400)

    assert pacer.budget == (20, 1.0)
    assert pacer.pauses == 2  # the two windows it learned from, then none
    refused_windows = sorted(server.rejected_per_window)
    assert len(refused_windows) == 2
    assert all(n <= 8 for n in server.rejected_per_window.values())
    # After learning, 20 per 1.02 s: 380 more answered requests take 19 spacings of 1.02 s.
    last_refusal = max(t for t, refused in sent if refused)
    assert time.now - last_refusal <= (380 / 20) * (1.0 + pacing.JITTER_MARGIN_SECONDS) + 1.05
    assert pacer.paused_seconds == 2.0


def test_learning_follows_a_limit_that_drops():
    time = FakeTime()
    pacer = _pacer(time)
    server = FixedWindowLimiter(RateLimit(20, 1.0), origin=-0.5)
    simulate(pacer, time, server, requests=100)
    assert pacer.budget == (20, 1.0)

    server.limit = RateLimit(12, 1.0)  # e.g. another client now shares the portal's budget
    simulate(pacer, time, server, requests=200)

    assert pacer.budget == (12, 1.0)


def test_fractional_retry_after_gives_the_window_unrounded():
    time = FakeTime()
    pacer = _pacer(time)
    for _ in range(30):
        pacer.acquire()
    pacer.rate_limited(0.5)
    for _ in range(21):
        pacer.acquire()
        time.now += 0.01
    pacer.rate_limited(0.8)
    pacer.acquire()

    requests, window = pacer.budget
    assert requests == 20
    assert window == pytest.approx(1.01)  # from the first pause end to the second


def test_a_stray_429_does_not_throttle_the_run():
    time = FakeTime()
    pacer = _pacer(time)
    pacer.acquire()
    pacer.rate_limited(1.0)
    pacer.acquire()
    pacer.rate_limited(1.0)  # two refusals in a row: too few admitted to learn from
    time.now += 60
    for _ in range(50):
        pacer.acquire()
    pacer.rate_limited(1.0)  # long after the last reset: not that window's budget
    pacer.acquire()

    assert pacer.budget is None


def test_configured_budget_is_never_replaced_by_a_learned_one():
    time = FakeTime()
    pacer = _pacer(time, 20, 1.0)
    server = FixedWindowLimiter(RateLimit(12, 1.0), origin=-0.5)
    simulate(pacer, time, server, requests=60)

    assert pacer.budget == (20, 1.0)
