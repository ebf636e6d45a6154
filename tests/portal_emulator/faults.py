"""Injected faults: the next N matching requests (or a share of them) get a broken answer.

Faults are consulted after the rate limiter (a 429 does not consume a fault) and before
authentication (the fault replaces the whole answer, whatever the key).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Literal

from .response import Response, error_response
from .routes import OTHER, TEMPLATES

FaultKind = Literal["error", "bad_json", "html", "reset", "empty"]
KINDS: tuple[str, ...] = ("error", "bad_json", "html", "reset", "empty")
ANY_TEMPLATE = "*"


@dataclass
class Fault:
    template: str
    kind: FaultKind
    status: int
    code: str
    remaining: int | None  # None: until cleared
    retry_after: int | float | None
    request_id_header: bool
    match: str | None
    # None: every matching request; else the share of them, drawn from a seeded generator so a
    # flaky portal is the same flaky portal in every run of a test.
    probability: float | None = None

    def applies(self, template: str, target: str) -> bool:
        """``match`` is a substring test on the request target (path and query string), so a
        fault can aim at e.g. "page=3"."""
        if self.template not in (template, ANY_TEMPLATE):
            return False
        return self.match is None or self.match in target


class FaultQueue:
    """Faults in injection order; the first that applies is consumed. Not locked itself: the
    emulator calls it under its lock."""

    def __init__(self, seed: int = 0) -> None:
        self._faults: list[Fault] = []
        self._random = random.Random(seed)

    def add(self, fault: Fault) -> None:
        if fault.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if fault.template not in (*TEMPLATES, OTHER, ANY_TEMPLATE):
            raise ValueError(f"unknown template {fault.template!r}; use one of {TEMPLATES}")
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("times must be >= 1 (or None for unlimited)")
        self._faults.append(fault)

    def take(self, template: str, target: str) -> Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.applies(template, target):
                if fault.probability is not None and self._random.random() >= fault.probability:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del self._faults[index]
                return fault
        return None

    def clear(self) -> None:
        self._faults.clear()

    def pending(self) -> list[Fault]:
        return list(self._faults)


def fault_response(fault: Fault, request_id: str) -> Response:
    """The broken answer. "bad_json" is a 200 whose body is a cut-off JSON document; "html" is an
    HTML page with ``status`` (e.g. a proxy's 502, so no X-Request-ID); "empty" is a 200 with no
    body; "reset" closes the connection (TCP RST) without any answer."""
    if fault.kind == "reset":
        return Response(status=0, reset=True)
    if fault.kind == "empty":
        return Response(200, b"", "application/json; charset=utf-8", _id_header(fault, request_id))
    if fault.kind == "bad_json":
        whole = json.dumps({"api_version": "1", "controllers": [{"pump_id": "pump-001"}]})
        body = whole[: len(whole) // 2].encode()
        return Response(200, body, "application/json; charset=utf-8", _id_header(fault, request_id))
    if fault.kind == "html":
        title = f"{fault.status} Bad Gateway" if fault.status == 502 else f"{fault.status} Error"
        page = (
            f"<html><head><title>{title}</title></head>"
            f"<body><h1>{title}</h1><hr>nginx</body></html>"
        )
        return Response(fault.status, page.encode(), "text/html; charset=utf-8", {})
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    return error_response(
        fault.status,
        fault.code,
        "Injected fault",
        request_id,
        headers=headers,
        request_id_header=fault.request_id_header,
    )


def _id_header(fault: Fault, request_id: str) -> dict[str, str]:
    return {"X-Request-ID": request_id} if fault.request_id_header else {}
