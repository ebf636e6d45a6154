"""dlt source for the Pump Portal Integration API v1: controllers, fleet statistics, delegated
users, user <-> pump links and per-pump details, loaded incrementally on `last_seen`.

Each resource's docstring names its endpoint and how it loads. `helpers.FleetSync` holds a run's
shared reads and worker pool; the decisions (what changed, what needs a detail call, which
links ended) live in `controllers.py`, `details.py` and `users.py`; HTTP in `client.py`, paging
in `pagination.py`; the state layout (one state per resource) and its migration in `state.py`.

The resources compose: any subset chosen with `with_resources` loads complete tables, and
`dlt pipeline pump_portal drop <resource>` resets that resource's tables and state only. Each
top-level listing is one unselected resource (`pump_listing`, `delegated_user_listing`) read once
per run and handed to the transformers that need it; dlt runs it whenever one of them is
selected and loads nothing from it unless it is selected itself.

History tables are merged on their natural key rather than appended: a load killed after the
destination committed a job but before dlt recorded it replays that job; a merge makes the replay
a no-op (a crash test caught the duplicate snapshot an append wrote).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import dlt
import pendulum
from dlt.sources import DltResource

from . import records, settings
from .client import PortalClient
from .errors import Stopped
from .helpers import FleetSync, PumpListing, UserDirectory
from .pacing import RequestPacer
from .report import RunReport
from .state import migrate_source_state

__all__ = ["pump_portal", "PortalClient", "RunReport", "RESOURCES"]

# The resources a run loads, by name: what `with_resources`, `pump-portal run --select` and
# `dlt pipeline pump_portal drop` accept. `controllers` writes three tables (see
# LISTING_TABLE_HINTS); the two listings are read for them and load nothing themselves.
RESOURCES = (
    "controllers",
    "pump_metadata",
    "pump_summaries",
    "fleet_snapshots",
    "delegated_users",
    "delegated_user_snapshots",
    "user_pump_links",
)


@dlt.source(name="pump_portal", max_table_nesting=2)
def pump_portal(
    base_url: str = dlt.config.value,
    api_key: str = dlt.secrets.value,
    page_size: int = settings.DEFAULT_PAGE_SIZE,
    page_read_ahead: int | None = None,
    concurrency: int = settings.DEFAULT_CONCURRENCY,
    details_max_age_hours: float = settings.DEFAULT_DETAILS_MAX_AGE_HOURS,
    requests_per_window: int | None = None,
    window_seconds: float = 1.0,
    max_retries: int = settings.DEFAULT_MAX_RETRIES,
    backoff_seconds: float = settings.DEFAULT_BACKOFF_SECONDS,
    retry_seconds: float = settings.DEFAULT_RETRY_SECONDS,
    allow_insecure_http: bool = False,
    request_timeout: float | None = None,
    run_at: Any = None,
    report: Any = None,
    stop: Any = None,
) -> Sequence[DltResource]:
    """All datasets of the portal. Configure under `[sources.pump_portal]`.

    `run_at` stamps snapshots and history rows (default: now); `report` (a `RunReport`) collects
    counts and skipped items for the caller; `stop` (a `threading.Event`), once set, makes the
    client start no new request and end every wait. None is read from configuration.
    `request_timeout` (seconds to wait for an answer) defaults to dlt's `[runtime]
    request_timeout` (60 s); `page_read_ahead` (listing pages requested ahead of the one being
    read) to `concurrency - 1`.
    """
    stop_event: threading.Event = stop if stop is not None else threading.Event()
    stamp = pendulum.instance(run_at) if run_at is not None else pendulum.now("UTC")
    run_report: RunReport = report if report is not None else RunReport(run_at=stamp)
    run_report.run_at = stamp.in_timezone("UTC")
    client = PortalClient(
        base_url,
        api_key,
        page_size=page_size,
        read_ahead=page_read_ahead,
        pool_size=concurrency,
        max_retries=max_retries,
        backoff_seconds=backoff_seconds,
        retry_seconds=retry_seconds,
        pacer=RequestPacer(
            requests_per_window, window_seconds, sleep=lambda seconds: _pause(stop_event, seconds)
        ),
        allow_insecure_http=allow_insecure_http,
        timeout=_timeouts(request_timeout),
        stop=stop_event,
    )
    run_report.client_stats = client.stats
    sync = FleetSync(
        client,
        run_report,
        details_max_age=dt.timedelta(hours=details_max_age_hours),
        concurrency=concurrency,
    )
    # Types come from the hints and from records.coerce; guessing timestamps from strings would
    # make an undocumented field's type depend on which row came first.
    dlt.current.source_schema().remove_type_detection("iso_timestamp")
    pumps = pump_listing(sync)
    users = delegated_user_listing(sync)
    # dlt starts extracting at the listing head of the first selected resource: GET /v1/pumps
    # comes first (a portal that is down fails there, before /v1/stats would fall back to it),
    # then /v1/stats, then the users; the per-pump and per-user calls follow.
    return (
        pumps,
        _with_listing_tables(pumps | controllers(sync)),
        pumps | pump_metadata(sync),
        pumps | pump_summaries(sync),
        fleet_snapshots(sync),
        users,
        users | delegated_users(sync),
        users | delegated_user_snapshots(sync),
        users | user_pump_links(sync),
    )


def _timeouts(request_timeout: float | None) -> tuple[float, float]:
    """(connect, read) timeouts: the source's own, else dlt's `[runtime] request_timeout`, which
    dlt's own REST helpers use too."""
    read = request_timeout
    if read is None:
        read = dlt.config.get("runtime.request_timeout", float)
    if read is None:
        return settings.DEFAULT_TIMEOUT
    if read <= 0:
        raise ValueError(f"request_timeout must be positive, not {read!r}")
    return (min(settings.CONNECT_TIMEOUT, read), float(read))


def _pause(stop: threading.Event, seconds: float) -> None:
    """The pacer's sleep: a rate-limit wait (up to Retry-After) ends when the run must stop."""
    if stop.wait(seconds):
        raise Stopped("the run was asked to stop while waiting for the rate limit")


def _own_state() -> dict[str, Any]:
    """The state of the resource that calls it, once the old source-level layout (if a run of
    an earlier version left it) has been moved into the resource states."""
    migrate_source_state(dlt.current.source_state(), dlt.current.source_schema())
    return dlt.current.resource_state()


# The three tables of the `controllers` resource: (primary key, column hints) of each.
LISTING_TABLE_HINTS: dict[str, tuple[str | tuple[str, ...], dict[str, Any]]] = {
    "controllers": (
        "pump_id",
        records.column_hints(records.CONTROLLER_FIELDS, listed_at="timestamp"),
    ),
    "controller_observations": (
        ("pump_id", "last_seen"),
        records.column_hints(
            {
                k: v
                for k, v in records.CONTROLLER_FIELDS.items()
                if k.split(".")[0] in records.OBSERVATION_FIELDS
            },
            observed_at="timestamp",
        ),
    ),
    "controller_visibility": (
        ("pump_id", "changed_at"),
        records.column_hints({"pump_id": "text", "changed_at": "timestamp", "is_visible": "bool"}),
    ),
}


def _with_listing_tables(resource: DltResource) -> DltResource:
    """Give each table the listing resource writes its own hints. A table variant starts from
    the resource's hints, so those carry none: the controllers' columns would leak into the
    other two tables."""
    for table, (primary_key, columns) in LISTING_TABLE_HINTS.items():
        resource.apply_hints(
            table_name=table,
            write_disposition="merge",
            primary_key=primary_key,
            columns=columns,
            create_table_variant=True,
        )
    return resource


@dlt.resource(selected=False, max_table_nesting=0)
def pump_listing(sync: FleetSync) -> Iterator[PumpListing]:
    """GET /v1/pumps, every page, read once per run and handed to the transformers
    `controllers`, `pump_metadata` and `pump_summaries`; each diffs it against its own state.

    Not selected: it loads nothing itself (selected explicitly, one JSON row per run)."""
    with sync.in_use():
        listing = sync.pump_listing()
        if listing.readable:
            yield listing


@dlt.transformer(write_disposition="merge")
def controllers(listing: PumpListing, sync: FleetSync) -> Iterator[Any]:
    """GET /v1/pumps (from `pump_listing`), diffed against this resource's `pumps` state; one
    resource for three tables, because one diff decides all three (hints: LISTING_TABLE_HINTS):

    - `controllers`: current state, merged on `pump_id`; only rows that changed since the last
      load are written.
    - `controller_observations`: per-pump history, one row per new `last_seen` a run saw,
      unique on (`pump_id`, `last_seen`).
    - `controller_visibility`: a row when a pump first appears, vanishes from a complete
      listing, or comes back; a pump's latest row says whether the portal still lists it.
    """
    with sync.in_use():
        changes = sync.controller_changes(listing, _own_state().setdefault("pumps", {}))
        yield dlt.mark.with_table_name(changes.changed, "controllers")
        yield dlt.mark.with_table_name(changes.observations, "controller_observations")
        yield dlt.mark.with_table_name(changes.visibility, "controller_visibility")


@dlt.resource(
    write_disposition="merge",
    primary_key="snapshot_at",
    columns=records.column_hints(
        records.STATISTICS_FIELDS, snapshot_at="timestamp", source_endpoint="text"
    ),
)
def fleet_snapshots(sync: FleetSync) -> Iterator[dict[str, Any]]:
    """GET /v1/stats (or the `statistics` of GET /v1/pumps for `read:pumps`-only keys).
    One row per run, stamped with the run's time: the fleet history."""
    with sync.in_use():
        snapshot = sync.fleet_snapshot()
        if snapshot is not None:
            yield snapshot


@dlt.resource(selected=False, max_table_nesting=0)
def delegated_user_listing(sync: FleetSync) -> Iterator[UserDirectory]:
    """GET /v1/delegated-users, read once per run and handed to the transformers
    `delegated_users`, `delegated_user_snapshots` and `user_pump_links`.

    Not selected: it loads nothing itself (selected explicitly, one JSON row per run)."""
    with sync.in_use():
        directory = sync.users()
        if directory.readable:
            yield directory


@dlt.transformer(
    write_disposition="merge",
    primary_key="user_id",
    columns=records.column_hints(records.DELEGATED_USER_FIELDS, listed_at="timestamp"),
)
def delegated_users(directory: UserDirectory, sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/delegated-users (from `delegated_user_listing`). Current users, merged on
    `user_id`. Keeps no state: every run writes every user."""
    yield [{**user, "listed_at": sync.run_at} for user in directory.users]


@dlt.transformer(
    write_disposition="merge",
    primary_key=("user_id", "snapshot_at"),
    columns=records.column_hints(records.DELEGATED_USER_FIELDS, snapshot_at="timestamp"),
)
def delegated_user_snapshots(
    directory: UserDirectory, sync: FleetSync
) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/delegated-users (from `delegated_user_listing`). One row per user per run: the
    user history. Keeps no state."""
    yield [{**user, "snapshot_at": sync.run_at} for user in directory.users]


@dlt.transformer(
    write_disposition="merge",
    primary_key=("user_id", "pump_id", "valid_from"),
    columns=records.column_hints(
        {
            "user_id": "bigint",
            "pump_id": "text",
            "is_owner": "bool",
            "valid_from": "timestamp",
            "valid_to": "timestamp",
        }
    ),
)
def user_pump_links(directory: UserDirectory, sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/users/:userId/summary, every page, for every user of `delegated_user_listing`.
    Which user sees which pump, with validity: a link that disappears gets `valid_to`; it is
    never deleted. The open links are this resource's `links` state."""
    with sync.in_use():
        yield sync.user_links(directory, _own_state().setdefault("links", {}))


@dlt.transformer(
    write_disposition="merge",
    primary_key="pump_id",
    columns=records.column_hints(records.METADATA_FIELDS, fetched_at="timestamp"),
)
def pump_metadata(listing: PumpListing, sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/pumps/:pumpId/metadata for the pumps of `pump_listing` this resource never
    fetched, fetched before their last report, or whose turn it is to be refreshed (its `fetched`
    and `pace` state, details.py). Merged on `pump_id`; metadata fields that appear later become
    new columns."""

    def to_row(pump_id: str, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body.get("metadata")
        row = records.coerce(
            metadata if isinstance(metadata, dict) else {}, records.METADATA_FIELDS
        )
        row["pump_id"] = row.get("pump_id") or pump_id
        row["fetched_at"] = sync.run_at
        return row

    with sync.in_use():
        yield from sync.details(
            "pump_metadata", listing, _own_state(), sync.client.pump_metadata, to_row
        )


@dlt.transformer(
    write_disposition="merge",
    primary_key=("pump_id", "fetched_at"),
    columns=records.column_hints(records.SUMMARY_FIELDS, fetched_at="timestamp", pump_id="text"),
)
def pump_summaries(listing: PumpListing, sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/pumps/:pumpId/summary for the pumps of `pump_listing` due by this resource's own
    `fetched` state (as for the metadata). One row per fetch (history); `recent_alarms.alarms`
    and `week_trends.daily_summaries` become the child tables
    `pump_summaries__recent_alarms__alarms` and `pump_summaries__week_trends__daily_summaries`."""

    def to_row(pump_id: str, body: dict[str, Any]) -> dict[str, Any]:
        row = records.coerce(body, records.SUMMARY_FIELDS)
        row["pump_id"] = row.get("pump_id") or pump_id
        row["fetched_at"] = sync.run_at
        alarms = _field(row, "recent_alarms", "alarms")
        if isinstance(alarms, list):
            for alarm in alarms:
                if isinstance(alarm, dict):
                    _drop_nulls(alarm)
                    # The reference leaves the alarm's shape open; its content identifies it.
                    alarm["alarm_key"] = records.fingerprint({"pump_id": row["pump_id"], **alarm})
                    alarm["pump_id"] = row["pump_id"]
        days = _field(row, "week_trends", "daily_summaries")
        if isinstance(days, list):
            for day in days:
                if isinstance(day, dict):
                    _drop_nulls(day)
                    day["pump_id"] = row["pump_id"]
        return row

    with sync.in_use():
        yield from sync.details(
            "pump_summaries", listing, _own_state(), sync.client.pump_summary, to_row
        )


def _drop_nulls(element: dict[str, Any]) -> None:
    """In list elements of undocumented shape a null says nothing about the column's type; left
    in, dlt warns on every load that it cannot materialize the column. It appears with a value."""
    for key in [k for k, v in element.items() if v is None]:
        del element[key]


def _field(row: dict[str, Any], group: str, key: str) -> Any:
    """`row[group][key]`, or None when the group is missing or not an object (the API may omit
    or reshape it)."""
    container = row.get(group)
    return container.get(key) if isinstance(container, dict) else None
