"""An HTTP answer as plain data, so the app logic is testable without sockets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json; charset=utf-8"


@dataclass
class Response:
    """``reset`` means: send nothing and drop the connection (status is then recorded as 0)."""

    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False


class JsonFragments(list[str]):
    """Already-encoded JSON values; ``encode_json`` splices them verbatim as a JSON array."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_json(payload: dict[str, Any]) -> bytes:
    """Compact JSON of ``payload``; top-level ``JsonFragments`` values are spliced, not encoded."""
    if not any(isinstance(value, JsonFragments) for value in payload.values()):
        return _dumps(payload).encode()
    parts = []
    for name, value in payload.items():
        encoded = "[" + ",".join(value) + "]" if isinstance(value, JsonFragments) else _dumps(value)
        parts.append(f"{_dumps(name)}:{encoded}")
    return ("{" + ",".join(parts) + "}").encode()


def json_response(status: int, payload: dict[str, Any], request_id: str) -> Response:
    """Compact JSON (cheaper to encode and send); successes carry X-Request-ID too."""
    return Response(status, encode_json(payload), JSON_TYPE, {"X-Request-ID": request_id})


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: dict[str, str] | None = None,
    request_id_header: bool = True,
) -> Response:
    """The reference error body; X-Request-ID equals ``error.request_id``."""
    payload = {"error": {"code": code, "message": message, "request_id": request_id}}
    all_headers = dict(headers or {})
    if request_id_header:
        all_headers["X-Request-ID"] = request_id
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, JSON_TYPE, all_headers)
