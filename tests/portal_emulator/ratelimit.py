"""Optional fixed-window rate limiting in real (monotonic) time.

Choice: one budget for the whole emulator (all keys and paths together, checked before
authentication), windows aligned to server start. 429s do not consume budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` answered requests per ``window`` seconds."""

    requests: int
    window: float = 1.0

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window <= 0:
            raise ValueError("RateLimit needs requests >= 1 and window > 0")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse "50/1" (50 requests per 1 second), the CLI's --rate-limit format."""
        requests, _, window = text.partition("/")
        return cls(int(requests), float(window or 1))


class FixedWindowLimiter:
    """Counts requests per window; not locked itself (the emulator calls it under its lock)."""

    def __init__(self, limit: RateLimit, origin: float) -> None:
        self.limit = limit
        self.origin = origin
        self.rejected_per_window: dict[int, int] = {}
        self._window = -1
        self._used = 0

    def window_index(self, now: float) -> int:
        return int((now - self.origin) // self.limit.window)

    def check(self, now: float) -> int | None:
        """None if allowed (and counted), else the Retry-After seconds (ceil, at least 1)."""
        index = self.window_index(now)
        if index != self._window:
            self._window, self._used = index, 0
        if self._used < self.limit.requests:
            self._used += 1
            return None
        self.rejected_per_window[index] = self.rejected_per_window.get(index, 0) + 1
        window_end = self.origin + (index + 1) * self.limit.window
        return max(1, math.ceil(window_end - now))
