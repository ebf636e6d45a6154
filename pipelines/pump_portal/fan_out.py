"""The per-item calls of a run (a detail call per pump, a summary per user), in one worker pool.

Workers do HTTP (and coercion) only; results come back to the generator that asked, on the main
thread dlt extracts on, so resource state is never touched from a worker.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import TypeGuard, TypeVar

from . import settings
from .errors import FAILED_AFTER_RETRIES, PortalError

T = TypeVar("T")
R = TypeVar("R")


class FanOut:
    """At most `concurrency` calls in flight, `4 x concurrency` queued: memory stays flat on big
    fleets. One pool per run, shared by every resource; started on first use."""

    def __init__(self, concurrency: int, thread_name_prefix: str = "pump-portal") -> None:
        self.concurrency = max(1, concurrency)
        self._thread_name_prefix = thread_name_prefix
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def map_unordered(
        self, call: Callable[[T], R], items: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Yield (item, its result or the error it raised) as the calls finish."""
        executor = self._pool()
        pending: dict[concurrent.futures.Future[R], T] = {}
        window = self.concurrency * 4
        iterator = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    try:
                        item = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[executor.submit(call, item)] = item
                if not pending:
                    return
                done, _ = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    item = pending.pop(future)
                    error = future.exception()
                    yield item, (error if error is not None else future.result())
        finally:
            for future in pending:
                future.cancel()

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix=self._thread_name_prefix
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class FailureStreak:
    """An item whose request still failed after its retries (5xx, no answer, not JSON, rate
    limited for hours) is skipped and asked again next run, while the rest of the run loads.
    Many in a row, none succeeding, is a portal that is down: that one raises."""

    def __init__(self, limit: int = settings.MAX_FAILED_ITEMS_IN_A_ROW) -> None:
        self.limit = limit
        self._in_a_row = 0

    def skips(self, outcome: object) -> TypeGuard[PortalError]:
        """True when `outcome` is a failure after retries to skip; raises it at the limit."""
        if not isinstance(outcome, FAILED_AFTER_RETRIES):
            return False
        self._in_a_row += 1
        if self._in_a_row >= self.limit:
            raise outcome
        return True

    def succeeded(self) -> None:
        self._in_a_row = 0
