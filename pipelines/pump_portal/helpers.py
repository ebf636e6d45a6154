"""One run's shared reads and machinery, for the resources of `pump_portal`.

Each top-level listing (GET /v1/pumps, GET /v1/delegated-users) is read once per run, lazily,
by whichever resource asks first, and each resource decides what it makes of it against its own
state (`state.py`): so any subset of resources loads complete tables. The decisions live in
their own modules: the controllers' diff (`controllers.py`), the stats fallback
(`fleet_statistics.py`), the detail fan-out (`details.py`), the user-link history
(`users.py`); the worker pool and its failure streak in `fan_out.py`.

State is touched only from the resource generators, which dlt runs on the main thread; the
worker pool does HTTP only.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import details as detail_calls
from . import users as user_directory
from .client import PortalClient
from .controllers import ListingChanges, PumpListing, controller_changes, read_pump_listing
from .fan_out import FailureStreak, FanOut
from .fleet_statistics import fleet_snapshot
from .progress import Progress
from .report import RunReport
from .users import UserDirectory

__all__ = ["FleetSync", "PumpListing", "UserDirectory", "ListingChanges"]


class FleetSync:
    def __init__(
        self,
        client: PortalClient,
        report: RunReport,
        *,
        details_max_age: dt.timedelta,
        concurrency: int,
    ) -> None:
        self.client = client
        self.report = report
        self.run_at = report.run_at
        self.details_max_age = details_max_age
        self.fan_out = FanOut(concurrency)
        self.failures = FailureStreak()
        self.progress = Progress()
        self._listing: PumpListing | None = None
        self._users: UserDirectory | None = None
        self._versions_noted: set[str] = set()
        self._active = 0
        # Also when the source is dropped without being run (or at exit).
        self._closer = weakref.finalize(self, _close, self.fan_out, client)

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Held by every resource generator while it runs. dlt gives a source no end hook, so
        when the last one ends the worker pools and the HTTP session's connections close; a
        resource that starts later opens them again."""
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                _close(self.fan_out, self.client)

    def pump_listing(self) -> PumpListing:
        """GET /v1/pumps, read on the first call of the run (by the listing resource, or by the
        fleet snapshot's fallback) and shared after that."""
        if self._listing is None:
            self._listing = read_pump_listing(self.client, self.report, self.progress)
            self._note_api_versions()
        return self._listing

    def controller_changes(
        self, listing: PumpListing, pumps: dict[str, list[Any]]
    ) -> ListingChanges:
        return controller_changes(listing, pumps, self.run_at, self.report)

    def fleet_snapshot(self) -> dict[str, Any] | None:
        return fleet_snapshot(self.client, self.report, self.pump_listing, self.run_at)

    def details(
        self,
        resource: str,
        listing: PumpListing,
        state: dict[str, Any],
        fetch: Callable[[str], dict[str, Any]],
        to_row: Callable[[str, dict[str, Any]], dict[str, Any]],
    ) -> Iterator[list[dict[str, Any]]]:
        """The due pumps' detail rows, in lists; `state` is the resource's own (`fetched`,
        `pace`: see state.py)."""

        def fetch_row(pump_id: str) -> dict[str, Any]:
            # Coercion runs in the worker too, off the main thread dlt extracts on.
            return to_row(pump_id, fetch(pump_id))

        fetched: dict[str, list[Any]] = state.setdefault("fetched", {})
        pace: dict[str, Any] = state.setdefault("pace", {})
        due = detail_calls.pumps_due(listing, fetched, self.run_at, self.details_max_age, pace)
        yield from detail_calls.fetch_details(
            resource,
            due,
            listing,
            fetched,
            fetch_row,
            run_at=self.run_at,
            fan_out=self.fan_out,
            failures=self.failures,
            report=self.report,
            progress=self.progress,
        )
        self._note_api_versions()

    def users(self) -> UserDirectory:
        """GET /v1/delegated-users, read on the first call of the run and shared after that."""
        if self._users is None:
            self._users = user_directory.read_users(self.client, self.report)
            self._note_api_versions()
        return self._users

    def user_links(
        self, directory: UserDirectory, links_state: dict[str, dict[str, list[Any]]]
    ) -> list[dict[str, Any]]:
        return user_directory.user_links(
            self.client,
            directory,
            links_state,
            run_at=self.run_at,
            fan_out=self.fan_out,
            failures=self.failures,
            report=self.report,
        )

    def _note_api_versions(self) -> None:
        for version in sorted(self.client.stats.unexpected_api_versions - self._versions_noted):
            self._versions_noted.add(version)
            self.report.warn(
                f"the portal answered api_version {version!r}; this sync implements v1 and read "
                "the answers as v1 (check the portal's changelog)"
            )

    def close(self) -> None:
        self._closer()


def _close(fan_out: FanOut, client: PortalClient) -> None:
    fan_out.close()
    client.close()
