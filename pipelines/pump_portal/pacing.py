"""One request budget shared by every worker thread of a client.

dlt's requests helper backs off per thread: after a 429, N workers sleep on their own and then burst
into the next window together. Here every request start goes through one `RequestPacer`:

- a configured budget (`requests_per_window` per `window_seconds`) is enforced as a sliding
  window of request starts, which keeps every fixed server window at or under the budget too;
- a 429 pauses the whole client until its `Retry-After` has passed, once, for all workers;
- without a configured budget, the pacer learns one from the 429s: the requests that went through
  between the end of one pause and the next 429 are what the window holds.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

# A learned budget below this is more likely a stray 429 than the portal's real limit.
MIN_LEARNED_BUDGET = 5


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
        self._starts: collections.deque[float] = collections.deque()
        self._paused_until = 0.0
        self._last_reset: float | None = None
        self._pause_began: float | None = None
        # When the calling thread's current request was admitted, to tell which window its
        # 429 belongs to.
        self._local = threading.local()
        self._longest_retry_after = 0.0
        self.waited_seconds = 0.0
        self.pauses = 0

    @property
    def budget(self) -> tuple[int, float] | None:
        """(requests, window seconds) in force, configured or learned; None when unlimited."""
        return None if self._budget is None else (self._budget, self._window)

    def acquire(self) -> float:
        """Block until one more request may start; return the seconds this call waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                ready_at = max(now, self._paused_until)
                if self._budget is not None:
                    while self._starts and self._starts[0] <= now - self._window:
                        self._starts.popleft()
                    if len(self._starts) >= self._budget:
                        ready_at = max(ready_at, self._starts[-self._budget] + self._window)
                if ready_at <= now:
                    self._starts.append(now)
                    self._local.started = now
                    if self._budget is None and len(self._starts) > 4096:
                        self._starts.popleft()
                    self.waited_seconds += waited
                    return waited
            delay = ready_at - now
            self._sleep(delay)
            waited += delay

    def rate_limited(self, retry_after: float) -> None:
        """A 429 arrived: every worker waits until `retry_after` seconds from now.

        A 429 for a request that started before the current pause began belongs to the window
        that pause already waits out: it changes nothing (16 workers in flight would otherwise
        count 16 pauses). Learning needs two consecutive windows: the first 429 only tells when
        a window ends; a 429 in the window that opened then tells how many requests that window
        held: the starts between that reset and this request's start (at least
        `MIN_LEARNED_BUDGET`, so a stray 429 cannot throttle the run to a crawl).
        """
        with self._lock:
            now = self._clock()
            started = getattr(self._local, "started", now)
            if self._pause_began is not None and started < self._pause_began:
                return
            until = now + retry_after
            if until <= self._paused_until:
                return
            self.pauses += 1
            # Retry-After never exceeds the window, so the longest one seen bounds it from below;
            # a 429 later than that after the last reset is not in the window that reset opened.
            self._longest_retry_after = max(self._longest_retry_after, retry_after)
            if self._learn and self._last_reset is not None:
                reset = self._last_reset
                admitted = sum(1 for t in self._starts if reset <= t < started)
                in_window = reset <= now <= reset + self._longest_retry_after
                if in_window and admitted >= MIN_LEARNED_BUDGET:
                    # Retry-After is whole seconds, rounded up: two rounded resets can come out
                    # closer than the real window, never farther than the longest wait seen.
                    window = max(until - reset, self._longest_retry_after)
                    if self._budget is None or admitted < self._budget:
                        self._budget, self._window = admitted, window
                        logger.info("learned rate limit: %d requests per %.2f s", admitted, window)
            self._paused_until = until
            self._pause_began = now
            self._last_reset = until
