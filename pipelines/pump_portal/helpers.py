"""The sync's decisions: what changed since the last load, what needs a detail call, what vanished.

`FleetSync` reads the portal through `PortalClient`: each top-level listing (GET /v1/pumps,
GET /v1/delegated-users) once per run, lazily, whichever resource asks first. What each resource
makes of a listing is decided against that resource's own state (layout in `state.py`), which
the resource passes in: the controllers diff against `pumps`, each detail resource against the
pumps it fetched, the user links against `links`. So any subset of resources loads complete
tables, and each decides "changed" from what it itself loaded.

A per-pump map instead of one high-water mark on `last_seen`: a pump missed by a shifting listing,
a clock reset that moves `last_seen` backwards, and pumps sharing one `last_seen` are then all
exact. dlt commits state only when the whole extract succeeds and ships it in the same load
package as the rows, so the map never gets ahead of the data that reached the destination.
State is touched only from the resource generators, which dlt runs on the main thread; the
worker pool does HTTP only.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import records, settings
from .client import Listing, PortalClient
from .errors import (
    InsufficientScope,
    InvalidResponse,
    ItemForbidden,
    ItemNotFound,
    NoDelegatedUsers,
    PortalUnavailable,
    RateLimited,
)
from .report import RunReport
from .state import FETCHED_AT, FETCHED_SEEN, FINGERPRINT, LAST_SEEN, VISIBLE

logger = logging.getLogger(__name__)
# Progress of the long phases; the command line shows it as a live line on a terminal and as a
# log line at a steady pace otherwise.
progress_logger = logging.getLogger("pipelines.progress")

T = TypeVar("T")
R = TypeVar("R")

# A request that still failed after every retry: the portal's trouble, asked again next run.
FAILED_AFTER_RETRIES = (PortalUnavailable, InvalidResponse, RateLimited)
# A 403 or 404 where the reference has none: the key cannot read that endpoint.
UNREADABLE = (InsufficientScope, ItemForbidden, ItemNotFound)


@dataclass
class PumpListing:
    """GET /v1/pumps as read this run, before any diff: every resource that needs the pumps
    compares it with its own state."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # pump_id -> the raw row
    complete: bool = False
    problems: list[str] = field(default_factory=list)
    statistics: dict[str, Any] | None = None
    readable: bool = True
    _seen: dict[str, str | None] = field(default_factory=dict, repr=False)

    def seen(self, pump_id: str) -> str | None:
        """The pump's `last_seen` as state stores it (ISO 8601, UTC); parsed once per run, for
        whichever resources ask."""
        if pump_id not in self._seen:
            stamp = records.to_timestamp(self.rows[pump_id].get("last_seen"))
            self._seen[pump_id] = records.iso(stamp)
        return self._seen[pump_id]


@dataclass
class ListingChanges:
    """The controllers listing diffed against the `controllers` resource's state."""

    changed: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    visibility: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class UserDirectory:
    """Delegated users, as read this run."""

    users: list[dict[str, Any]] = field(default_factory=list)
    readable: bool = True


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
        self.concurrency = max(1, concurrency)
        self._listing: PumpListing | None = None
        self._users: UserDirectory | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._versions_noted: set[str] = set()
        self._failed_in_a_row = 0

    # --- controllers listing ------------------------------------------------------------------

    def pump_listing(self) -> PumpListing:
        """GET /v1/pumps, read on the first call of the run (by the listing resource, or by the
        fleet snapshot's fallback) and shared after that."""
        if self._listing is None:
            self._listing = self._read_listing()
        return self._listing

    def _read_listing(self) -> PumpListing:
        result = PumpListing()
        # Walked again while it moves under the walk (new pumps at its front, removals): the
        # listing is the first walk that saw it hold still, else the union of the walks, flagged.
        read = self.client.pump_listing()
        statistics_walk = 0
        try:
            for page in read.pages:
                statistics = page.body.get("statistics")
                if isinstance(statistics, dict) and page.walk > statistics_walk:
                    # The first statistics of each walk; the last walk's are the listing's.
                    result.statistics, statistics_walk = statistics, page.walk
                listed, total = read.listed()
                self._progress(
                    "controllers: page %d (walk %d), %d pumps listed of %s",
                    page.number,
                    page.walk,
                    listed,
                    total,
                )
        except InsufficientScope as error:
            self.report.skip_resource(
                "controllers", error, "the API key cannot read GET /v1/pumps (needs read:pumps)"
            )
            result.readable = False
            return result
        for raw in read.rows():
            pump_id = records.to_text(raw.get("pump_id"))
            if not (pump_id or "").strip():
                self.report.warn(f"a listing row without pump_id was ignored: {raw!r:.200}")
                continue
            # A pump seen twice (one shifting walk, or the union of walks): the later copy wins.
            result.rows[pump_id] = raw
        walk: Listing = read.listing
        if walk.walks > 1:
            logger.info("GET /v1/pumps took %d walks (it moved while paged)", walk.walks)
        result.complete, result.problems = walk.complete, list(walk.problems)
        self.report.listing_complete = walk.complete
        self.report.pumps_listed = len(result.rows)
        self._note_api_versions()
        return result

    def controller_changes(
        self, listing: PumpListing, pumps: dict[str, list[Any]]
    ) -> ListingChanges:
        """Diff the listing against `pumps` (the controllers resource's state) and update it:
        rows that changed, new `last_seen` observations, pumps that appeared or vanished."""
        result = ListingChanges()
        reported = 0
        for pump_id, raw in listing.rows.items():
            known = pumps.get(pump_id)
            # The raw row's hash first: an unchanged pump (most of them, most runs) costs one
            # hash and no coercion.
            mark = records.fingerprint(raw)
            if known is not None and known[FINGERPRINT] == mark and known[VISIBLE]:
                continue
            row = records.coerce(raw, records.CONTROLLER_FIELDS)
            row["pump_id"] = pump_id
            seen = listing.seen(pump_id)
            if known is None or known[LAST_SEEN] != seen:
                reported += 1
                if row.get("last_seen") is not None:
                    observation = {k: row[k] for k in records.OBSERVATION_FIELDS if k in row}
                    observation["observed_at"] = self.run_at
                    result.observations.append(observation)
            if known is None or known[FINGERPRINT] != mark:
                result.changed.append({**row, "listed_at": self.run_at})
            if known is None or not known[VISIBLE]:
                result.visibility.append(self._visibility_row(pump_id, True))
                if known is not None:
                    self.report.pumps_returned += 1
            pumps[pump_id] = [seen, mark, True]
        if listing.complete:
            for pump_id, known in pumps.items():
                if known[VISIBLE] and pump_id not in listing.rows:
                    known[VISIBLE] = False
                    result.visibility.append(self._visibility_row(pump_id, False))
                    self.report.pumps_vanished += 1
        elif listing.problems:
            self.report.warn(
                "controllers listing was not complete, so no pump is marked vanished this run: "
                + "; ".join(listing.problems)
            )
        self.report.pumps_changed = reported
        self.report.controllers_updated = len(result.changed)
        return result

    def _note_api_versions(self) -> None:
        for version in sorted(self.client.stats.unexpected_api_versions - self._versions_noted):
            self._versions_noted.add(version)
            self.report.warn(
                f"the portal answered api_version {version!r}; this sync implements v1 and read "
                "the answers as v1 (check the portal's changelog)"
            )

    def _visibility_row(self, pump_id: str, visible: bool) -> dict[str, Any]:
        return {"pump_id": pump_id, "changed_at": self.run_at, "is_visible": visible}

    # --- fleet statistics -------------------------------------------------------------------

    def fleet_snapshot(self) -> dict[str, Any] | None:
        """GET /v1/stats; with a `read:pumps`-only key, the `statistics` of GET /v1/pumps."""
        try:
            statistics = self.client.statistics().get("statistics")
            endpoint = "/v1/stats"
        except (*UNREADABLE, *FAILED_AFTER_RETRIES) as error:
            # 403 without the reference's code, or 404 (a portal without /v1/stats): the
            # listing carries the same object, so the snapshot is taken from there.
            listing = self.pump_listing()
            if not listing.readable or listing.statistics is None:
                self.report.skip_resource(
                    "fleet_snapshots", error, "the API key can read neither /v1/stats nor /v1/pumps"
                )
                return None
            if isinstance(error, InsufficientScope):
                logger.info("no read:stats scope: fleet statistics taken from GET /v1/pumps")
            else:
                self.report.warn(
                    f"GET /v1/stats answered {error}; fleet statistics taken from GET /v1/pumps"
                )
            statistics, endpoint = listing.statistics, "/v1/pumps"
        if not isinstance(statistics, dict):
            self.report.warn("GET /v1/stats answered without a statistics object")
            return None
        row = records.coerce(statistics, records.STATISTICS_FIELDS)
        return {"snapshot_at": self.run_at, "source_endpoint": endpoint, **row}

    # --- per-pump details -------------------------------------------------------------------

    def pumps_due(self, listing: PumpListing, fetched: dict[str, list[Any]]) -> list[str]:
        """Listed pumps this detail resource never fetched, fetched at another `last_seen` (the
        pump reported since), or fetched longer ago than the max age. `fetched` is the detail
        resource's own state, so a resource loaded alone or reset by `drop` decides for itself."""
        oldest = (self.run_at - self.details_max_age).timestamp()
        due = []
        for pump_id in listing.rows:
            entry = fetched.get(pump_id)
            if (
                entry is None
                or entry[FETCHED_AT] <= oldest
                or entry[FETCHED_SEEN] != listing.seen(pump_id)
            ):
                due.append(pump_id)
        return due

    def details(
        self,
        resource: str,
        listing: PumpListing,
        fetched: dict[str, list[Any]],
        fetch: Callable[[str], dict[str, Any]],
        to_row: Callable[[str, dict[str, Any]], dict[str, Any]],
    ) -> Iterator[list[dict[str, Any]]]:
        """Fan out one detail call per due pump; 403/404 skip that pump, the run goes on.

        `fetched` (the resource's state) records when, and at which `last_seen`, each pump was
        fetched. Rows come in lists of up to 100: dlt handles a list as one item."""
        due = self.pumps_due(listing, fetched)
        # Epoch seconds: compared for every pump on every run, parsed never.
        stamp = int(self.run_at.timestamp())
        logger.info("%s: %d detail calls due", resource, len(due))
        done = 0
        batch: list[dict[str, Any]] = []

        def fetch_row(pump_id: str) -> dict[str, Any]:
            # Coercion runs in the worker too, off the main thread dlt extracts on.
            return to_row(pump_id, fetch(pump_id))

        for pump_id, outcome in self._fan_out(fetch_row, due):
            done += 1
            self.report.detail_calls += 1
            if isinstance(outcome, ItemNotFound):
                # The reference's 404 on a pump's details: "no metadata/summary for that pump",
                # the normal state of a pump that has never reported, not a failure.
                self.report.no_data_yet(resource, pump_id, outcome)
                fetched[pump_id] = [stamp, listing.seen(pump_id)]
                continue
            if isinstance(outcome, ItemForbidden):
                self.report.skip_item(resource, "pump", pump_id, outcome)
                fetched[pump_id] = [stamp, listing.seen(pump_id)]
                continue
            if isinstance(outcome, InsufficientScope | NoDelegatedUsers):
                self.report.skip_resource(resource, outcome, "the API key cannot read it")
                return
            if self._failed_after_retries(outcome):
                self.report.skip_item(resource, "pump", pump_id, outcome)
                fetched.pop(pump_id, None)  # never fetched, as far as the next run knows
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            self._failed_in_a_row = 0
            fetched[pump_id] = [stamp, listing.seen(pump_id)]
            batch.append(outcome)
            if len(batch) >= 100:
                yield batch
                batch = []
            self._progress(
                "%s: %d of %d detail calls done, %d rate-limit waits",
                resource,
                done,
                len(due),
                self.client.stats.rate_limited,
            )
        if batch:
            yield batch
        self._progress("%s: %d of %d detail calls done", resource, done, len(due), force=True)
        self._note_api_versions()

    _last_progress = 0.0

    def _progress(self, message: str, *args: object, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= 1.0:
            self._last_progress = now
            progress_logger.info(message, *args)

    # --- users ------------------------------------------------------------------------------

    def users(self) -> UserDirectory:
        """GET /v1/delegated-users, read on the first call of the run and shared after that."""
        if self._users is None:
            self._users = self._read_users()
        return self._users

    def _read_users(self) -> UserDirectory:
        directory = UserDirectory()
        try:
            body = self.client.delegated_users()
        except NoDelegatedUsers as error:
            self.report.warn(
                "no delegated users: the integration has no portal users bound to it, so "
                f"delegated_users and user_pump_links load nothing (request id {error.request_id})"
            )
            directory.readable = False
            return directory
        except (*UNREADABLE, *FAILED_AFTER_RETRIES) as error:
            # A bare 403/404 here is not the reference's, and a failure after retries is the
            # portal's: neither is a reason to lose the pumps. Users and links stay as they were.
            why = (
                "GET /v1/delegated-users failed after its retries; read again next run"
                if isinstance(error, FAILED_AFTER_RETRIES)
                else "the API key cannot read GET /v1/delegated-users"
            )
            self.report.skip_resource("delegated_users", error, why)
            directory.readable = False
            return directory
        rows = _object_list(body.get("delegated_users"))
        if rows is None:
            # Omitted or null is not "no users" (that is [] or 403 no_delegated_users): ending
            # every link on it would rewrite history, so users and links stay as they were.
            self.report.warn(
                "GET /v1/delegated-users answered without a delegated_users list; users and "
                "their pump links are left as they were"
            )
            directory.readable = False
            return directory
        by_id: dict[int, dict[str, Any]] = {}
        for raw in rows:
            user = records.coerce(raw, records.DELEGATED_USER_FIELDS)
            if user.get("user_id") is None:
                self.report.warn(
                    f"a delegated user without a numeric user_id was ignored: {raw!r:.200}"
                )
                continue
            if user["user_id"] in by_id:
                self.report.warn(
                    f"delegated user {user['user_id']} listed twice; the last row is kept"
                )
            by_id[user["user_id"]] = user
        directory.users = list(by_id.values())
        self.report.users_listed = len(directory.users)
        self._note_api_versions()
        return directory

    def user_links(
        self, directory: UserDirectory, links_state: dict[str, dict[str, list[Any]]]
    ) -> list[dict[str, Any]]:
        """GET /v1/users/:userId/summary for every user, diffed against `links_state` (the
        user_pump_links resource's state) and updated: a link new or changed opens a row, a link
        gone from a complete listing (or of a user no longer delegated) gets `valid_to`."""
        user_ids = [user["user_id"] for user in directory.users]
        rows: list[dict[str, Any]] = []
        run_at = records.iso(self.run_at)
        seen_users: set[str] = set()
        for user_id, outcome in self._fan_out(self._user_links, user_ids):
            key = str(user_id)
            seen_users.add(key)
            if isinstance(outcome, ItemForbidden | ItemNotFound):
                self.report.skip_item("user_pump_links", "user", key, outcome)
                continue
            if isinstance(outcome, InsufficientScope | NoDelegatedUsers):
                self.report.skip_resource(
                    "user_pump_links", outcome, "the API key cannot read GET /v1/users/:id/summary"
                )
                return rows
            if self._failed_after_retries(outcome):
                # Its links stay as they were (none ended, none added): read again next run.
                self.report.skip_item("user_pump_links", "user", key, outcome)
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            self._failed_in_a_row = 0
            current, complete = outcome
            known = links_state.setdefault(key, {})
            for pump_id, is_owner in current.items():
                before = known.get(pump_id)
                if before is not None and before[0] == is_owner:
                    continue
                if before is not None:
                    rows.append(self._link_row(user_id, pump_id, before, ended=run_at))
                known[pump_id] = [is_owner, run_at]
                rows.append(self._link_row(user_id, pump_id, known[pump_id], ended=None))
            if complete:
                for pump_id in [p for p in known if p not in current]:
                    rows.append(self._link_row(user_id, pump_id, known.pop(pump_id), run_at))
        # Users no longer delegated to the integration: their links end.
        for key in [k for k in links_state if k not in seen_users]:
            for pump_id, before in links_state.pop(key).items():
                rows.append(self._link_row(int(key), pump_id, before, ended=run_at))
        return rows

    def _user_links(self, user_id: int) -> tuple[dict[str, bool], bool]:
        # Walked again while it moves, like the controllers listing: a complete walk ends links.
        read = self.client.user_summary_listing(user_id)
        for _ in read.pages:
            pass
        links: dict[str, bool] = {}
        for raw in read.rows():
            pump_id = records.to_text(raw.get("pump_id"))
            if pump_id is not None and pump_id.strip():
                links[pump_id] = bool(records.to_bool(raw.get("is_owner")))
        walk: Listing = read.listing
        return links, walk.complete

    @staticmethod
    def _link_row(user_id: int, pump_id: str, link: list[Any], ended: str | None) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "pump_id": pump_id,
            "is_owner": link[0],
            "valid_from": records.to_timestamp(link[1]),
            "valid_to": records.to_timestamp(ended),
        }

    def _failed_after_retries(self, outcome: Any) -> bool:
        """An item whose request still failed after its retries (5xx, no answer, not JSON, rate
        limited for hours) is skipped and asked again next run, while the rest of the run loads.
        Many in a row, none succeeding, is a portal that is down: that one raises."""
        if not isinstance(outcome, FAILED_AFTER_RETRIES):
            return False
        self._failed_in_a_row += 1
        if self._failed_in_a_row >= settings.MAX_FAILED_ITEMS_IN_A_ROW:
            raise outcome
        return True

    # --- concurrency ------------------------------------------------------------------------

    def _fan_out(self, call: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, Any]]:
        """Run `call` on items in the shared pool; yield (item, result or error) as they finish.

        At most 4 x concurrency calls are queued at once, so memory stays flat on big fleets.
        """
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
                max_workers=self.concurrency, thread_name_prefix="pump-portal"
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _object_list(value: Any) -> list[dict[str, Any]] | None:
    """The objects of a JSON list; an object keyed "0", "1", ... (a list with holes, as some
    encoders send it) counts as one. None when there is no list at all."""
    if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
        value = list(value.values())
    if not isinstance(value, list):
        return None
    return [item for item in value if isinstance(item, dict)]
