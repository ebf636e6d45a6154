"""The six endpoints of the reference: authorised request in, 200 body out (or ``ApiError``).

Validation order inside an endpoint (choice): integration-level checks (no delegated users), then
parameter syntax (400), then access to the addressed user/pump (403/404).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import render
from .errors import ApiError
from .fleet import Fleet
from .keys import ApiKey
from .pagination import PageRequest, pagination, parse_page
from .response import JsonFragments
from .routes import (
    DELEGATED_USERS,
    PUMP_METADATA,
    PUMP_SUMMARY,
    PUMPS,
    STATS,
    USER_SUMMARY,
    Route,
)

API_VERSION = "1"
_USER_ID = re.compile(r"[0-9]{1,18}")

Query = Mapping[str, Sequence[str]]


class PortalApi:
    """Answers for one fleet; every method runs under ``fleet.lock`` so a body is a consistent
    snapshot (listing page, statistics and pagination agree with each other)."""

    def __init__(self, fleet: Fleet, max_limit: int = 100) -> None:
        self.fleet = fleet
        self.max_limit = max_limit

    def handle(self, route: Route, query: Query, key: ApiKey) -> dict[str, Any]:
        with self.fleet.lock:
            template = route.template
            if template == PUMPS:
                return self._pumps(query, key)
            if template == STATS:
                return self._stats(key)
            if template == DELEGATED_USERS:
                return self._delegated_users(key)
            if template == USER_SUMMARY:
                return self._user_summary(route.params["userId"], query, key)
            if template == PUMP_METADATA:
                pump_id = self._readable_pump(route.params["pumpId"], key)
                return {
                    "api_version": API_VERSION,
                    "pump_id": pump_id,
                    "metadata": self.fleet.metadata(pump_id),
                }
            if template == PUMP_SUMMARY:
                pump_id = self._readable_pump(route.params["pumpId"], key)
                return {
                    "api_version": API_VERSION,
                    **self.fleet.summary(pump_id, self.fleet.clock.now),
                }
            raise ApiError(404, "not_found", "No such endpoint")

    def _listing(
        self, page: PageRequest, rows: JsonFragments, total: int, stats: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "api_version": API_VERSION,
            "controllers": rows,
            "statistics": stats,
            "pagination": pagination(page, total),
        }

    def _pumps(self, query: Query, key: ApiKey) -> dict[str, Any]:
        """Choice: an integration without delegated users sees an empty fleet here (not a 403)."""
        page = parse_page(query, self.max_limit)
        now = self.fleet.clock.now
        if not key.has_users:
            return self._listing(page, JsonFragments(), 0, render.statistics((), now))
        rows, total = self.fleet.encoded_page(now, page.offset, page.limit)
        return self._listing(page, rows, total, self.fleet.fleet_statistics(now))

    def _stats(self, key: ApiKey) -> dict[str, Any]:
        now = self.fleet.clock.now
        stats = self.fleet.fleet_statistics(now) if key.has_users else render.statistics((), now)
        return {"api_version": API_VERSION, "statistics": stats}

    def _delegated_users(self, key: ApiKey) -> dict[str, Any]:
        _require_users(key)
        return {
            "api_version": API_VERSION,
            "user_identity_policy": "user_id_and_name",
            "delegated_users": self.fleet.delegated_user_rows(self.fleet.clock.now),
        }

    def _user_summary(self, raw_user_id: str, query: Query, key: ApiKey) -> dict[str, Any]:
        _require_users(key)
        if not _USER_ID.fullmatch(raw_user_id):
            raise ApiError(400, "invalid_user_id", f"userId must be numeric, got {raw_user_id!r}")
        user_id = int(raw_user_id)
        page = parse_page(query, self.max_limit)
        user = self.fleet.users.get(user_id)
        if user is None or user_id in self.fleet.inactive_users:
            raise ApiError(
                403,
                "forbidden",
                f"User {user_id} is not an active delegated user of this integration",
            )
        now = self.fleet.clock.now
        rows, total = self.fleet.encoded_page(now, page.offset, page.limit, user_id=user_id)
        return {
            "api_version": API_VERSION,
            "user_id": user_id,
            "name": user.name,
            "statistics": self.fleet.user_statistics(user_id, now),
            "controllers": rows,
            "pagination": pagination(page, total),
        }

    def _readable_pump(self, pump_id: str, key: ApiKey) -> str:
        """403 forbidden: unknown, removed, explicitly forbidden, or no delegated users (a real
        portal cannot tell "does not exist" from "not yours"); 404 not_found: no persisted
        metadata/summary (by default the never-seen pumps)."""
        fleet = self.fleet
        if (
            not key.has_users
            or pump_id in fleet.forbidden_detail_pumps
            or not fleet.is_visible(pump_id)
        ):
            raise ApiError(403, "forbidden", f"No access to pump {pump_id}")
        if pump_id in fleet.missing_detail_pumps:
            raise ApiError(404, "not_found", f"No metadata/summary for pump {pump_id}")
        return pump_id


def _require_users(key: ApiKey) -> None:
    if not key.has_users:
        raise ApiError(403, "no_delegated_users", "No portal users are bound to this integration")
