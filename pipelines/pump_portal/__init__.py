"""dlt source for the Pump Portal Integration API v1: controllers, fleet statistics, delegated
users, user <-> pump links and per-pump details, loaded incrementally on `last_seen`.

Each resource's docstring names its endpoint and how it loads. The decisions (what changed, what
needs a detail call) live in `helpers.FleetSync`; HTTP lives in `client.PortalClient`.

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
from .helpers import FleetSync
from .pacing import RequestPacer
from .report import RunReport

__all__ = ["pump_portal", "PortalClient", "RunReport"]


@dlt.source(name="pump_portal", max_table_nesting=2)
def pump_portal(
    base_url: str = dlt.config.value,
    api_key: str = dlt.secrets.value,
    page_size: int = settings.DEFAULT_PAGE_SIZE,
    page_read_ahead: int = settings.DEFAULT_PAGE_READ_AHEAD,
    concurrency: int = settings.DEFAULT_CONCURRENCY,
    details_max_age_hours: float = settings.DEFAULT_DETAILS_MAX_AGE_HOURS,
    requests_per_window: int | None = None,
    window_seconds: float = 1.0,
    max_retries: int = settings.DEFAULT_MAX_RETRIES,
    backoff_seconds: float = settings.DEFAULT_BACKOFF_SECONDS,
    retry_seconds: float = settings.DEFAULT_RETRY_SECONDS,
    allow_insecure_http: bool = False,
    run_at: Any = None,
    report: Any = None,
    stop: Any = None,
) -> Sequence[DltResource]:
    """All datasets of the portal. Configure under `[sources.pump_portal]`.

    `run_at` stamps snapshots and history rows (default: now); `report` (a `RunReport`) collects
    counts and skipped items for the caller; `stop` (a `threading.Event`), once set, makes the
    client start no new request and end every wait. None is read from configuration.
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
        stop=stop_event,
    )
    run_report.client_stats = client.stats
    sync = FleetSync(
        client,
        run_report,
        dlt.current.source_state,
        details_max_age=dt.timedelta(hours=details_max_age_hours),
        concurrency=concurrency,
    )
    # Types come from the hints and from records.coerce; guessing timestamps from strings would
    # make an undocumented field's type depend on which row came first.
    dlt.current.source_schema().remove_type_detection("iso_timestamp")
    return (
        controllers(sync),
        controller_observations(sync),
        controller_visibility(sync),
        fleet_snapshots(sync),
        delegated_users(sync),
        delegated_user_snapshots(sync),
        user_pump_links(sync),
        pump_metadata(sync),
        pump_summaries(sync),
    )


def _pause(stop: threading.Event, seconds: float) -> None:
    """The pacer's sleep: a rate-limit wait (up to Retry-After) ends when the run must stop."""
    if stop.wait(seconds):
        raise Stopped("the run was asked to stop while waiting for the rate limit")


@dlt.resource(
    write_disposition="merge",
    primary_key="pump_id",
    columns=records.column_hints(records.CONTROLLER_FIELDS, listed_at="timestamp"),
)
def controllers(sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/pumps, every page. Current state, merged on `pump_id`; only rows that changed
    since the last load are written."""
    yield sync.listing().changed


@dlt.resource(
    write_disposition="merge",
    primary_key=("pump_id", "last_seen"),
    columns=records.column_hints(
        {
            k: v
            for k, v in records.CONTROLLER_FIELDS.items()
            if k.split(".")[0] in records.OBSERVATION_FIELDS
        },
        observed_at="timestamp",
    ),
)
def controller_observations(sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/pumps. Per-pump history: one row per new `last_seen` a run saw, unique on
    (`pump_id`, `last_seen`)."""
    yield sync.listing().observations


@dlt.resource(
    write_disposition="merge",
    primary_key=("pump_id", "changed_at"),
    columns=records.column_hints(
        {"pump_id": "text", "changed_at": "timestamp", "is_visible": "bool"}
    ),
)
def controller_visibility(sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/pumps. A row when a pump first appears, vanishes from a complete listing, or
    comes back; a pump's latest row says whether the portal still lists it."""
    yield sync.listing().visibility


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
    snapshot = sync.fleet_snapshot()
    if snapshot is not None:
        yield snapshot


@dlt.resource(
    write_disposition="merge",
    primary_key="user_id",
    columns=records.column_hints(records.DELEGATED_USER_FIELDS, listed_at="timestamp"),
)
def delegated_users(sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/delegated-users. Current users, merged on `user_id`."""
    yield [{**user, "listed_at": sync.run_at} for user in sync.users().users]


@dlt.resource(
    write_disposition="merge",
    primary_key=("user_id", "snapshot_at"),
    columns=records.column_hints(records.DELEGATED_USER_FIELDS, snapshot_at="timestamp"),
)
def delegated_user_snapshots(sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/delegated-users. One row per user per run: the user history."""
    yield [{**user, "snapshot_at": sync.run_at} for user in sync.users().users]


@dlt.resource(
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
def user_pump_links(sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/users/:userId/summary, every page, for every delegated user. Which user sees
    which pump, with validity: a link that disappears gets `valid_to`; it is never deleted."""
    yield sync.users().link_rows


@dlt.resource(
    write_disposition="merge",
    primary_key="pump_id",
    columns=records.column_hints(records.METADATA_FIELDS, fetched_at="timestamp"),
)
def pump_metadata(sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/pumps/:pumpId/metadata for pumps that reported, are new, or are past the max age.
    Merged on `pump_id`; metadata fields that appear later become new columns."""

    def to_row(pump_id: str, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        row = records.coerce(metadata, records.METADATA_FIELDS)
        row["pump_id"] = row.get("pump_id") or pump_id
        row["fetched_at"] = sync.run_at
        return row

    yield from sync.details("pump_metadata", sync.client.pump_metadata, to_row)


@dlt.resource(
    write_disposition="merge",
    primary_key=("pump_id", "fetched_at"),
    columns=records.column_hints(records.SUMMARY_FIELDS, fetched_at="timestamp", pump_id="text"),
)
def pump_summaries(sync: FleetSync) -> Iterator[list[dict[str, Any]]]:
    """GET /v1/pumps/:pumpId/summary for the same pumps as the metadata. One row per fetch
    (history); `recent_alarms.alarms` and `week_trends.daily_summaries` become the child tables
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

    yield from sync.details("pump_summaries", sync.client.pump_summary, to_row)


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
