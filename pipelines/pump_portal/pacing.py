"""One request budget shared by every worker thread of a client.

dlt's requests helper backs off per thread: after a 429, N workers sleep on their own and then burst
into the next window together. Here every request start goes through one `RequestPacer`:

- a budget (`requests_per_window` per `window_seconds`) is enforced as a sliding window of request
  starts, widened by a small jitter margin: request n starts at least a window plus the margin
  after request n - budget. That keeps every fixed server window at or under the budget even
  though the portal counts *arrivals* on its own clock: a request admitted first can reach the
  portal a few milliseconds after one admitted later (thread scheduling, the GIL, a new
  connection), and without the margin such a straggler lands in the next burst's server window;
- a 429 pauses the whole client until its `Retry-After` has passed, once, for all workers; the
  429s of requests already in flight when the pause began belong to that pause;
- without a configured budget, the pacer learns one from two consecutive refused windows: the
  first 429 tells when a window resets; the requests that started between that reset and the next
  429 and were *not* refused are what the portal accepted in one window (counted once the second
  pause is over, when the in-flight requests' 429s are in). The window is the longest
  `Retry-After` seen, or the time between the two resets rounded down to whole seconds: HTTP's
  Retry-After is whole seconds rounded up, so the time between two pause ends overshoots the
  window by the time the burst took plus up to a second of rounding.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

# A learned budget below this is more likely a stray 429 than the portal's real limit.
MIN_LEARNED_BUDGET = 5
# Request n starts this much more than a window after request n - budget: the spread of the
# time from admission to arrival at the portal (measured against the emulator: p99 6 ms, max
# 14 ms on an idle 2-core machine; max 16-60 ms with the CPU oversubscribed), capped at a share
# of the window. It costs 2% of a 1 s window's throughput.
JITTER_MARGIN_SECONDS = 0.02
JITTER_MARGIN_SHARE = 0.02
# Start times kept (admitted, refused) beyond a budget's own: a budget learned later still needs
# the starts made before it, and learning counts the refused ones of one window.
MAX_REMEMBERED = 4096


class RequestPacer:
    def __init__(
        self,
        requests_per_window: int | None = None,
        window_seconds: float = 1.0,
        *,
        learn: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_window is not None and requests_per_window < 1:
            raise ValueError("requests_per_window must be at least 1")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self._budget = requests_per_window
        self._window = float(window_seconds)
        self._learn = learn and requests_per_window is None
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # Admitted starts (for the sliding window) and the starts of requests answered 429.
        self._starts: collections.deque[float] = collections.deque()
        self._refused: collections.deque[float] = collections.deque(maxlen=MAX_REMEMBERED)
        self._admitted_since_pause = 0
        self._paused_until = 0.0
        self._pause_began: float | None = None
        self._last_reset: float | None = None
        # A learned budget waiting for the in-flight 429s of its window: (the reset that opened
        # it, the 429 that closed it, requests started in between, window seconds).
        self._pending: tuple[float, float, int, float] | None = None
        # When the calling thread's current request was admitted, to tell which window its
        # 429 belongs to.
        self._local = threading.local()
        self._longest_retry_after = 0.0
        self._whole_seconds = True
        self._paused_total = 0.0
        self.pauses = 0

    @property
    def budget(self) -> tuple[int, float] | None:
        """(requests, window seconds) in force, configured or learned; None when unlimited."""
        with self._lock:
            self._settle(self._clock())
            return None if self._budget is None else (self._budget, self._window)

    @property
    def paused_seconds(self) -> float:
        """Wall-clock seconds the client has stood paused after 429s, up to now.

        Pauses that overlap count once, and a pause counts once however many workers wait it
        out (summing each worker's wait would count one 1 s pause 16 times with 16 workers).
        """
        with self._lock:
            return self._paused_total - max(0.0, self._paused_until - self._clock())

    def _margin(self) -> float:
        return min(JITTER_MARGIN_SECONDS, JITTER_MARGIN_SHARE * self._window)

    def acquire(self) -> float:
        """Block until one more request may start; return the seconds this call waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._settle(now)
                ready_at = max(now, self._paused_until)
                if self._budget is not None and len(self._starts) >= self._budget:
                    ready_at = max(
                        ready_at, self._starts[-self._budget] + self._window + self._margin()
                    )
                if ready_at <= now:
                    self._starts.append(now)
                    if len(self._starts) > max(MAX_REMEMBERED, self._budget or 0):
                        self._starts.popleft()
                    self._admitted_since_pause += 1
                    self._local.started = now
                    return waited
            delay = ready_at - now
            self._sleep(delay)
            waited += delay

    def rate_limited(self, retry_after: float) -> None:
        """A 429 arrived for the calling thread's request: every worker waits until
        `retry_after` seconds from now.

        A 429 for a request that started before the current pause began belongs to the window
        that pause already waits out: it only counts as refused (16 workers in flight would
        otherwise count 16 pauses). A 429 of a request started after the last reset, arriving at
        most the longest Retry-After after that reset, ends the window that reset opened: what
        it accepted is counted when this new pause ends (`_settle`).
        """
        with self._lock:
            now = self._clock()
            started = getattr(self._local, "started", now)
            self._refused.append(started)
            if retry_after != math.floor(retry_after):
                self._whole_seconds = False
            if self._pause_began is not None and started < self._pause_began:
                return
            until = now + retry_after
            if until <= self._paused_until:
                return
            self._settle(now)
            self.pauses += 1
            self._paused_total += until - max(now, self._paused_until)
            # Retry-After never exceeds the window (rounded up), so the longest one seen bounds it
            # from below; a 429 later than that after the last reset is not in the window that
            # reset opened.
            self._longest_retry_after = max(self._longest_retry_after, retry_after)
            reset = self._last_reset
            if (
                self._learn
                and reset is not None
                and reset <= now <= reset + self._longest_retry_after
            ):
                span = until - reset
                if self._whole_seconds:
                    # Both resets are rounded up to whole seconds and the second also includes
                    # the time the burst took to exhaust the window: floor, not the raw span.
                    span = float(math.floor(span))
                window = max(span, self._longest_retry_after)
                self._pending = (reset, now, self._admitted_since_pause, window)
            self._admitted_since_pause = 0
            self._paused_until = until
            self._pause_began = now
            self._last_reset = until

    def _settle(self, now: float) -> None:
        """Once the pause after a learning window is over, count what that window accepted:
        the requests started in it minus those answered 429, at least `MIN_LEARNED_BUDGET` so a
        stray 429 cannot throttle the run to a crawl (called under the lock)."""
        if self._pending is None or now < self._paused_until:
            return
        opened, closed, started, window = self._pending
        self._pending = None
        refused = sum(1 for t in self._refused if opened <= t <= closed)
        accepted = started - refused
        if accepted < MIN_LEARNED_BUDGET:
            return
        if (accepted, window) != (self._budget, self._window):
            self._budget, self._window = accepted, window
            logger.info("learned rate limit: %d requests per %.2f s", accepted, window)
