"""``page``/``limit`` validation and the ``pagination`` object (offset paging)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

DEFAULT_PAGE = 1
DEFAULT_LIMIT = 50
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class PageRequest:
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


def _param(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        # Choice: a repeated parameter (?page=1&page=2) is ambiguous, so it is rejected.
        raise ApiError(400, "invalid_pagination", f"{name} must be given at most once")
    return values[0]


def parse_page(query: Mapping[str, Sequence[str]], max_limit: int) -> PageRequest:
    """Strict parsing: only plain decimal digits ("1.0", "+1", " 1", "" are invalid).

    Choice: the default limit is 50, lowered to ``max_limit`` when that is smaller.
    """
    raw_page = _param(query, "page")
    raw_limit = _param(query, "limit")
    page = DEFAULT_PAGE
    limit = min(DEFAULT_LIMIT, max_limit)
    if raw_page is not None:
        # Pages beyond 18 digits are rejected rather than parsed (they cannot exist anyway).
        if not _DIGITS.fullmatch(raw_page) or len(raw_page) > 18 or int(raw_page) < 1:
            raise ApiError(400, "invalid_pagination", "page must be an integer >= 1")
        page = int(raw_page)
    if raw_limit is not None:
        if (
            not _DIGITS.fullmatch(raw_limit)
            or len(raw_limit) > 18
            or not 1 <= int(raw_limit) <= max_limit
        ):
            raise ApiError(
                400, "invalid_pagination", f"limit must be an integer between 1 and {max_limit}"
            )
        limit = int(raw_limit)
    return PageRequest(page, limit)


def pagination(request: PageRequest, total: int) -> dict[str, Any]:
    """pages = ceil(total/limit), 0 when empty; a page past the end has has_next false."""
    pages = -(-total // request.limit)
    return {
        "page": request.page,
        "limit": request.limit,
        "total": total,
        "pages": pages,
        "has_next": request.page < pages,
        "has_prev": request.page > 1,
    }
