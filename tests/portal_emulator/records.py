"""What the emulator saw: per-request records and counters tests assert on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestInfo:
    """Passed to ``on_request`` callbacks before the request is answered.

    ``time`` is seconds since server start (monotonic; rate-limit windows use the same origin);
    ``query`` maps each parameter to its first value.
    """

    time: float
    method: str
    path: str
    query: dict[str, str]
    template: str
    request_id: str


@dataclass(frozen=True)
class RequestRecord:
    """One answered request; ``status`` is 0 when the connection was reset without an answer."""

    time: float
    method: str
    path: str
    query: dict[str, str]
    template: str
    status: int
    key_name: str | None
    request_id: str


class RequestLog:
    """Counters and records; not locked itself (the emulator calls it under its lock)."""

    def __init__(self, keep_records: bool = True) -> None:
        self.keep_records = keep_records
        self.counts: Counter[str] = Counter()
        self.status_counts: Counter[tuple[str, int]] = Counter()
        self.requests: list[RequestRecord] = []

    def add(self, info: RequestInfo, status: int, key_name: str | None) -> None:
        self.counts[info.template] += 1
        self.status_counts[(info.template, status)] += 1
        if self.keep_records:
            self.requests.append(
                RequestRecord(
                    info.time,
                    info.method,
                    info.path,
                    info.query,
                    info.template,
                    status,
                    key_name,
                    info.request_id,
                )
            )

    def clear(self) -> None:
        self.counts.clear()
        self.status_counts.clear()
        self.requests.clear()
