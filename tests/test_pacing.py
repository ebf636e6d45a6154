"""The shared request budget, on a simulated clock (no HTTP: the pacer is pure scheduling)."""

from __future__ import annotations

from pipelines.pump_portal.pacing import RequestPacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_configured_budget_spaces_requests_into_windows():
    time = FakeTime()
    pacer = RequestPacer(10, 1.0, clock=time.clock, sleep=time.sleep)

    starts = []
    for _ in range(35):
        pacer.acquire()
        starts.append(time.now)

    per_window = [sum(1 for s in starts if w <= s < w + 1) for w in range(4)]
    assert per_window == [10, 10, 10, 5]


def test_429_pauses_every_worker_once():
    time = FakeTime()
    pacer = RequestPacer(clock=time.clock, sleep=time.sleep)
    pacer.acquire()
    pacer.rate_limited(3.0)
    pacer.rate_limited(2.5)  # a second in-flight 429 of the same window changes nothing

    assert pacer.acquire() == 3.0
    assert pacer.pauses == 1


def test_budget_is_learned_from_two_consecutive_windows():
    time = FakeTime()
    pacer = RequestPacer(clock=time.clock, sleep=time.sleep)
    for _ in range(30):
        pacer.acquire()
    pacer.rate_limited(1.0)  # first 429: only says when the window resets
    assert pacer.budget is None
    for _ in range(21):  # the window that opened at the reset holds 20 (+ the one refused)
        pacer.acquire()
        time.now += 0.01
    pacer.rate_limited(0.8)

    requests, window = pacer.budget
    assert requests == 20
    assert round(window, 3) == 1.01  # from the first reset to the one this 429 announces


def test_a_stray_429_does_not_throttle_the_run():
    time = FakeTime()
    pacer = RequestPacer(clock=time.clock, sleep=time.sleep)
    pacer.acquire()
    pacer.rate_limited(1.0)
    pacer.acquire()
    pacer.rate_limited(1.0)  # two refusals in a row: too few admitted to learn from
    time.now += 60
    for _ in range(50):
        pacer.acquire()
    pacer.rate_limited(1.0)  # long after the last reset: not that window's budget

    assert pacer.budget is None
