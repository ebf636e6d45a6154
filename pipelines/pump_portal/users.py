"""Delegated users (GET /v1/delegated-users) and each user's pump links (GET
/v1/users/:userId/summary), kept as history: a link that appears opens a row, one that goes
away gets `valid_to`. The open links are the `user_pump_links` resource's `links` state
(user_id -> pump_id -> [is_owner, valid_from])."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from . import records
from .client import PortalClient
from .errors import (
    FAILED_AFTER_RETRIES,
    UNREADABLE,
    InsufficientScope,
    ItemForbidden,
    ItemNotFound,
    NoDelegatedUsers,
)
from .fan_out import FailureStreak, FanOut
from .report import RunReport


@dataclass
class UserDirectory:
    """Delegated users, as read this run."""

    users: list[dict[str, Any]] = field(default_factory=list)
    readable: bool = True


def read_users(client: PortalClient, report: RunReport) -> UserDirectory:
    """The delegated users, coerced, one row per `user_id`; not readable when the portal's
    answer cannot say who the users are (then users and links stay as they were)."""
    directory = UserDirectory()
    try:
        body = client.delegated_users()
    except NoDelegatedUsers as error:
        report.warn(
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
        report.skip_resource("delegated_users", error, why)
        directory.readable = False
        return directory
    rows = _object_list(body.get("delegated_users"))
    if rows is None:
        # Omitted or null is not "no users" (that is [] or 403 no_delegated_users): ending every
        # link on it would rewrite history, so users and links stay as they were.
        report.warn(
            "GET /v1/delegated-users answered without a delegated_users list; users and their "
            "pump links are left as they were"
        )
        directory.readable = False
        return directory
    by_id: dict[int, dict[str, Any]] = {}
    for raw in rows:
        user = records.coerce(raw, records.DELEGATED_USER_FIELDS)
        if user.get("user_id") is None:
            report.warn(f"a delegated user without a numeric user_id was ignored: {raw!r:.200}")
            continue
        if user["user_id"] in by_id:
            report.warn(f"delegated user {user['user_id']} listed twice; the last row is kept")
        by_id[user["user_id"]] = user
    directory.users = list(by_id.values())
    report.users_listed = len(directory.users)
    return directory


def user_links(
    client: PortalClient,
    directory: UserDirectory,
    links_state: dict[str, dict[str, list[Any]]],
    *,
    run_at: dt.datetime,
    fan_out: FanOut,
    failures: FailureStreak,
    report: RunReport,
) -> list[dict[str, Any]]:
    """Every user's summary, diffed against `links_state` and updated: a link new or changed
    opens a row, a link gone from a complete listing (or of a user no longer delegated) gets
    `valid_to`. A user whose summary could not be read keeps its links as they were."""
    user_ids = [user["user_id"] for user in directory.users]
    rows: list[dict[str, Any]] = []
    now = records.iso(run_at)
    seen_users: set[str] = set()
    for user_id, outcome in fan_out.map_unordered(partial(current_links, client), user_ids):
        key = str(user_id)
        seen_users.add(key)
        if isinstance(outcome, ItemForbidden | ItemNotFound):
            report.skip_item("user_pump_links", "user", key, outcome)
            continue
        if isinstance(outcome, InsufficientScope | NoDelegatedUsers):
            report.skip_resource(
                "user_pump_links", outcome, "the API key cannot read GET /v1/users/:id/summary"
            )
            return rows
        if failures.skips(outcome):
            # Its links stay as they were (none ended, none added): read again next run.
            report.skip_item("user_pump_links", "user", key, outcome)
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        failures.succeeded()
        current, complete = outcome
        known = links_state.setdefault(key, {})
        for pump_id, is_owner in current.items():
            before = known.get(pump_id)
            if before is not None and before[0] == is_owner:
                continue
            if before is not None:
                rows.append(_link_row(user_id, pump_id, before, ended=now))
            known[pump_id] = [is_owner, now]
            rows.append(_link_row(user_id, pump_id, known[pump_id], ended=None))
        if complete:
            for pump_id in [p for p in known if p not in current]:
                rows.append(_link_row(user_id, pump_id, known.pop(pump_id), ended=now))
    # Users no longer delegated to the integration: their links end.
    for key in [k for k in links_state if k not in seen_users]:
        for pump_id, before in links_state.pop(key).items():
            rows.append(_link_row(int(key), pump_id, before, ended=now))
    return rows


def current_links(client: PortalClient, user_id: int) -> tuple[dict[str, bool], bool]:
    """The user's pumps (pump_id -> is_owner), and whether the listing was read complete. Walked
    again while it moves, like the controllers listing: only a complete walk ends links."""
    read = client.user_summary_listing(user_id)
    for _ in read.pages:
        pass
    links: dict[str, bool] = {}
    for raw in read.rows():
        pump_id = records.to_text(raw.get("pump_id"))
        if pump_id is not None and pump_id.strip():
            links[pump_id] = bool(records.to_bool(raw.get("is_owner")))
    return links, read.listing.complete


def _link_row(user_id: int, pump_id: str, link: list[Any], ended: str | None) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "pump_id": pump_id,
        "is_owner": link[0],
        "valid_from": records.to_timestamp(link[1]),
        "valid_to": records.to_timestamp(ended),
    }


def _object_list(value: Any) -> list[dict[str, Any]] | None:
    """The objects of a JSON list; an object keyed "0", "1", ... (a list with holes, as some
    encoders send it) counts as one. None when there is no list at all."""
    if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
        value = list(value.values())
    if not isinstance(value, list):
        return None
    return [item for item in value if isinstance(item, dict)]
