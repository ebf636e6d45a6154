"""What one sync run saw and did, filled by the source and read by the runner."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import PortalError

logger = logging.getLogger(__name__)


@dataclass
class SkippedItem:
    """One pump, user or resource the run could not read; lands in the `skipped_items` table."""

    resource: str
    item_kind: str  # "pump", "user" or "resource"
    item_id: str | None
    http_status: int | None
    code: str | None
    request_id: str | None
    message: str
    # False for what is the portal's normal state rather than a failure: a pump that has never
    # reported has no metadata/summary yet (404 not_found). Only items that need action make a
    # run partial (exit 10).
    needs_action: bool = True

    @classmethod
    def of(
        cls,
        resource: str,
        item_kind: str,
        item_id: str | None,
        error: PortalError,
        message: str | None = None,
        needs_action: bool = True,
    ) -> SkippedItem:
        """The item as the portal's error describes it (status, code, request id)."""
        return cls(
            resource=resource,
            item_kind=item_kind,
            item_id=item_id,
            http_status=error.status,
            code=error.code,
            request_id=error.request_id,
            message=message if message is not None else error.message,
            needs_action=needs_action,
        )

    def as_row(self, run_id: str, run_at: dt.datetime) -> dict[str, Any]:
        return {"run_id": run_id, "run_at": run_at, **asdict(self)}


@dataclass
class RunReport:
    run_at: dt.datetime
    pumps_listed: int = 0
    pumps_changed: int = 0  # reported since the last load: last_seen moved (or first seen)
    controllers_updated: int = 0  # listing rows that differ in any field (status, name, ...)
    pumps_vanished: int = 0
    pumps_returned: int = 0
    listing_complete: bool | None = None
    detail_calls: int = 0
    users_listed: int = 0
    skipped: list[SkippedItem] = field(default_factory=list)  # need an operator's look
    without_data: list[SkippedItem] = field(default_factory=list)  # the portal has none yet
    warnings: list[str] = field(default_factory=list)
    #: The client's request counters (a `ClientStats`), set by the source.
    client_stats: Any = None

    def skip_item(self, resource: str, item_kind: str, item_id: str, error: PortalError) -> None:
        self.skipped.append(SkippedItem.of(resource, item_kind, item_id, error))
        # A body that is not the portal's JSON (a proxy page, a cut-off answer) has no code: say
        # what was wrong with it instead of "None".
        logger.warning(
            "skipped %s %s in %s: %s (HTTP %s) [request id %s]",
            item_kind,
            item_id,
            resource,
            error.code or error.message,
            error.status,
            error.request_id,
        )

    def no_data_yet(self, resource: str, pump_id: str, error: PortalError) -> None:
        """A pump detail the portal does not have yet (404 not_found): recorded, not warned about;
        the run counts these pumps in one line."""
        self.without_data.append(
            SkippedItem.of(resource, "pump", pump_id, error, needs_action=False)
        )
        logger.debug("no %s yet for pump %s [request id %s]", resource, pump_id, error.request_id)

    def pumps_without_data(self) -> int:
        return len({item.item_id for item in self.without_data})

    def skip_resource(self, resource: str, error: PortalError, why: str) -> None:
        """A whole resource the key cannot read: one warning, one row."""
        self.skipped.append(SkippedItem.of(resource, "resource", None, error, message=why))
        self.warn(f"{resource} skipped: {why} ({error.code}, request id {error.request_id})")

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning(message)

    def nothing_readable(self) -> bool:
        """The key could read none of the portal's top-level endpoints."""
        unreadable = {
            item.resource
            for item in self.skipped
            if item.item_kind == "resource" and item.code == "insufficient_scope"
        }
        return {"controllers", "fleet_snapshots", "delegated_users"} <= unreadable

    def skipped_by_code(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.skipped:
            key = item.code or f"http_{item.http_status}"
            counts[key] = counts.get(key, 0) + 1
        return counts
