"""The reference's error body, as an exception the API layer raises and the app renders."""

from __future__ import annotations


class ApiError(Exception):
    """An answer of ``{"error": {"code", "message", "request_id"}}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
