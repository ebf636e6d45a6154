"""Readings of the API reference that our emulator does not make, against a scripted server.

Every test here scripts exact answers per path on a tiny stdlib HTTP server (127.0.0.1, port 0,
daemon thread) and checks what the client or a whole sync does with them: real HTTP, real DuckDB.
The quirks are the ones the reference allows ("JSON may omit undefined keys", numbers as strings,
a `Retry-After` in either form, ...) or a plausible server would produce (capped limits, pages
that never end, text/html error pages). The choices made where the reference is silent are named
in each test's docstring.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pendulum
import pytest
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from pipelines.pump_portal import errors, settings
from pipelines.pump_portal.client import Listing, PortalClient, connection_failure
from pipelines.pump_portal.pacing import RequestPacer
from pipelines.runner import run_sync
from tests.conftest import rows, scalar

KEY = "pcv_Quirk-Secret_0123456789abcdef"
RUN_AT = pendulum.datetime(2025, 3, 20, 12, 0, tz="UTC")
OMIT = object()  # a header or key the server leaves out


# --- the scripted server -------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or bytes/str sent as is
    headers: dict[str, Any] = field(default_factory=dict)  # a value of OMIT drops the header
    reset: bool = False  # close the connection without answering


@dataclass
class Call:
    path: str
    query: dict[str, str]
    authorization: str | None

    @property
    def page(self) -> int:
        return int(self.query.get("page", "1"))

    @property
    def limit(self) -> int:
        return int(self.query.get("limit", "50"))


Answer = Callable[[Call], Any]


class ScriptedPortal:
    """Answers per path template (`/v1/pumps/:id/summary`); unknown paths answer 404."""

    def __init__(self) -> None:
        self.routes: list[tuple[re.Pattern[str], str, Answer]] = []
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        portal = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # one write per answer: no delayed-ACK stall on keep-alive

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                call = Call(parts.path, dict(parse_qsl(parts.query)), self.headers["Authorization"])
                reply = portal.answer(call)
                if reply.reset:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                body = reply.body
                if isinstance(body, str):
                    payload = body.encode()
                elif isinstance(body, bytes):
                    payload = body
                else:
                    payload = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **reply.headers}
                self.send_response(reply.status)
                for name, value in headers.items():
                    if value is not OMIT:
                        self.send_header(name, str(value))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def on(self, template: str, answer: Any) -> None:
        """Answer `template` with `answer`: a Reply, a JSON-able body, or a function of the Call."""
        pattern = re.compile("^" + re.sub(r":\w+", r"[^/]+", template) + "$")
        function = answer if callable(answer) else (lambda call: answer)
        self.routes.insert(0, (pattern, template, function))

    def answer(self, call: Call) -> Reply:
        with self._lock:
            self.calls.append(call)
        for pattern, _, function in self.routes:
            if pattern.match(call.path):
                result = function(call)
                return result if isinstance(result, Reply) else Reply(body=result)
        return Reply(404, {"error": {"code": "not_found", "message": "no route"}})

    def count(self, template: str) -> int:
        pattern = re.compile("^" + re.sub(r":\w+", r"[^/]+", template) + "$")
        return sum(1 for call in self.calls if pattern.match(call.path))


@pytest.fixture
def portal() -> Iterator[ScriptedPortal]:
    server = ScriptedPortal()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def sequence(*answers: Any) -> Answer:
    """Answers in order, then the last one forever."""
    it = iter(answers)
    last: list[Any] = [None]

    def answer(call: Call) -> Any:
        last[0] = next(it, last[0])
        value = last[0]
        return value(call) if callable(value) else value

    return answer


# --- fleets ---------------------------------------------------------------------------------

STATS = {
    "total_controllers": 1,
    "active_controllers": 1,
    "offline_controllers": 0,
    "total_water_delivered": 15420.5,
    "average_battery_soc": 85,
    "wireguard_connections": 0,
}


def controller(pump_id: Any, **fields: Any) -> dict[str, Any]:
    row = {
        "pump_id": pump_id,
        "custom_name": f"pump {pump_id}",
        "is_owner": 1,
        "last_seen": "2025-03-20T10:00:00.000Z",
        "last_heartbeat": "2025-03-20T10:00:00.000Z",
        "installation": {"installation_name": "Main", "location_name": "Site A", "lat": 52.0},
        "pump": {"status": "running", "total_water_delivered": 15420.5, "running": True},
        "battery": {"voltage": 12.6, "soc": 85, "current": -2.3},
        "communication_method": "MQTT",
        "current_pressure": 4.2,
        "active_alarms_count": 0,
        "highest_alarm_level": None,
        "total_sessions": 12,
        "uptime": 86400,
        "profile": "IRRIGATION",
    }
    row.update(fields)
    return {k: v for k, v in row.items() if v is not OMIT}


def paged(items: list[dict[str, Any]], *, cap: int | None = None, **overrides: Any) -> Answer:
    """A listing answer honouring page/limit; `overrides` replace (or OMIT) pagination keys.

    `cap` is the server's own maximum limit. `extra` adds top-level keys to the body.
    """
    extra = overrides.pop("extra", {})

    def answer(call: Call) -> dict[str, Any]:
        limit = min(call.limit, cap) if cap else call.limit
        start = (call.page - 1) * limit
        pages = -(-len(items) // limit)
        pagination = {
            "page": call.page,
            "limit": limit,
            "total": len(items),
            "pages": pages,
            "has_next": call.page < pages,
            "has_prev": call.page > 1,
        }
        for key, value in overrides.items():
            pagination[key] = value(call) if callable(value) else value
        pagination = {k: v for k, v in pagination.items() if v is not OMIT}
        body = {
            "api_version": "1",
            "controllers": items[start : start + limit],
            "statistics": STATS,
            "pagination": pagination,
            **extra,
        }
        return {k: v for k, v in body.items() if v is not OMIT}

    return answer


def serve_fleet(
    portal: ScriptedPortal,
    controllers: list[dict[str, Any]],
    users: list[dict[str, Any]] | None = None,
    links: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """Every endpoint, in the reference's shapes; tests override single paths after this."""
    portal.on("/v1/pumps", paged(controllers))
    portal.on("/v1/stats", {"api_version": "1", "statistics": STATS})
    portal.on(
        "/v1/delegated-users",
        {
            "api_version": "1",
            "user_identity_policy": "user_id_and_name",
            "delegated_users": users if users is not None else [{"user_id": 101, "name": "Acme"}],
        },
    )
    link_rows = links or {}

    def user_summary(call: Call) -> Any:
        user = call.path.split("/")[3]
        return paged(link_rows.get(user, []), extra={"user_id": user, "statistics": STATS})(call)

    portal.on("/v1/users/:id/summary", user_summary)
    portal.on(
        "/v1/pumps/:id/metadata",
        lambda call: {
            "api_version": "1",
            "pump_id": call.path.split("/")[3],
            "metadata": {"pump_id": call.path.split("/")[3], "latitude": 52.0},
        },
    )
    portal.on(
        "/v1/pumps/:id/summary",
        lambda call: {"api_version": "1", "pump_id": call.path.split("/")[3]},
    )


def sync(portal: ScriptedPortal, pipeline: Any, **options: Any) -> Any:
    options.setdefault("backoff_seconds", 0.001)
    options.setdefault("run_at", RUN_AT)
    return run_sync(pipeline, base_url=portal.url, api_key=KEY, **options)


def variant_columns(pipeline: Any) -> list[tuple[str, str]]:
    return rows(
        pipeline,
        "select table_name, column_name from information_schema.columns "
        "where column_name like '%\\_\\_v\\_%' escape '\\'",
    )


# --- a client with a fake clock -------------------------------------------------------------


class FakeTime:
    """The pacer's clock and sleep: waits are recorded, never slept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make_client(portal: ScriptedPortal, **options: Any) -> tuple[PortalClient, FakeTime]:
    fake = FakeTime()
    options.setdefault("backoff_seconds", 0.001)
    options.setdefault("max_retries", 3)
    options.setdefault("pacer", RequestPacer(learn=False, clock=fake.clock, sleep=fake.sleep))
    return PortalClient(portal.url, KEY, **options), fake


def walk(portal: ScriptedPortal, page_size: int = 50) -> tuple[list[Any], Listing]:
    client, _ = make_client(portal, page_size=page_size)
    listing = Listing()
    ids = [item.get("pump_id") for page in client.pump_pages(listing) for item in page.items]
    return ids, listing


# --- pagination -----------------------------------------------------------------------------

FIVE = [controller(f"p{n}") for n in range(1, 6)]


def test_has_next_missing_follows_pages(portal):
    portal.on("/v1/pumps", paged(FIVE, has_next=OMIT))
    ids, listing = walk(portal, page_size=2)
    assert ids == ["p1", "p2", "p3", "p4", "p5"]
    assert listing.complete and portal.count("/v1/pumps") == 3


def test_pagination_numbers_and_has_next_as_strings(portal):
    portal.on(
        "/v1/pumps",
        paged(
            FIVE,
            page=lambda c: str(c.page),
            limit="2",
            total="5",
            pages="3",
            has_next=lambda c: "true" if c.page < 3 else "false",
            has_prev=lambda c: "false",
        ),
    )
    ids, listing = walk(portal, page_size=2)
    assert ids == ["p1", "p2", "p3", "p4", "p5"]
    assert listing.complete and listing.total == 5 and portal.count("/v1/pumps") == 3


def test_total_and_pages_missing_follows_has_next(portal):
    portal.on("/v1/pumps", paged(FIVE, total=OMIT, pages=OMIT))
    ids, listing = walk(portal, page_size=2)
    assert ids == ["p1", "p2", "p3", "p4", "p5"]
    assert listing.complete and portal.count("/v1/pumps") == 3


@pytest.mark.parametrize("keep", [("page", "limit"), ("page",), ()])
def test_only_page_sizes_tell_the_end(portal, keep):
    """No has_next, pages or total: a full page means "ask for the next", a short one ends it.
    (Before: the walk stopped after page 1 without a word - 3 of 5 pumps lost.)"""
    dropped = {k: OMIT for k in ("page", "limit", "total", "pages", "has_next", "has_prev")}
    for k in keep:
        dropped.pop(k)
    portal.on("/v1/pumps", paged(FIVE, **dropped))
    ids, listing = walk(portal, page_size=2)
    assert ids == ["p1", "p2", "p3", "p4", "p5"]
    assert listing.complete and portal.count("/v1/pumps") == 3


def test_exact_multiple_without_counts_ends_on_an_empty_page(portal):
    four = FIVE[:4]
    portal.on("/v1/pumps", paged(four, total=OMIT, pages=OMIT, has_next=OMIT))
    ids, listing = walk(portal, page_size=2)
    assert ids == ["p1", "p2", "p3", "p4"]
    assert listing.complete and portal.count("/v1/pumps") == 3


def test_probing_past_the_end_may_be_answered_400(portal):
    """A server may reject a page past the end with 400 invalid_pagination. When no page count
    promised that page, that is the end of the listing, not a failed run."""
    four = FIVE[:4]
    listing_answer = paged(four, total=OMIT, pages=OMIT, has_next=OMIT)

    def answer(call: Call) -> Any:
        if call.page > 2:
            return Reply(400, {"error": {"code": "invalid_pagination", "message": "page"}})
        return listing_answer(call)

    portal.on("/v1/pumps", answer)
    ids, listing = walk(portal, page_size=2)
    assert ids == ["p1", "p2", "p3", "p4"]
    assert listing.complete


def test_announced_page_that_disappears_is_flagged_not_fatal(portal):
    """has_next said page 3 exists; by then the fleet shrank and the server rejects it."""
    listing_answer = paged(FIVE)

    def answer(call: Call) -> Any:
        if call.page == 3:
            return Reply(400, {"error": {"code": "invalid_pagination", "message": "page"}})
        return listing_answer(call)

    portal.on("/v1/pumps", answer)
    ids, listing = walk(portal, page_size=2)
    assert ids == ["p1", "p2", "p3", "p4"]
    assert not listing.complete


@pytest.mark.parametrize("announce", ["limit", "total_only", "nothing"])
def test_server_caps_the_limit(portal, announce):
    """Asked for 50, the server sends 20 per page. Page numbers then count its pages of 20."""
    many = [controller(f"p{n:02d}") for n in range(45)]
    if announce == "limit":
        answer = paged(many, cap=20)  # pagination.limit = 20, has_next, pages
    elif announce == "total_only":
        answer = paged(many, cap=20, limit=OMIT, pages=OMIT, has_next=OMIT)
    else:
        answer = paged(many, cap=20, limit=OMIT, pages=OMIT, has_next=OMIT, total=OMIT)
    portal.on("/v1/pumps", answer)
    ids, listing = walk(portal, page_size=50)
    assert sorted(ids) == [f"p{n:02d}" for n in range(45)]
    assert listing.complete and portal.count("/v1/pumps") == 3


@pytest.mark.parametrize("controllers", [[], OMIT])
def test_empty_fleet_is_a_complete_empty_listing(portal, controllers):
    portal.on(
        "/v1/pumps",
        {
            "api_version": "1",
            "controllers": controllers,
            "statistics": {**STATS, "total_controllers": 0},
            "pagination": {"page": 1, "limit": 50, "total": 0, "pages": 0, "has_next": False},
        }
        if controllers is not OMIT
        else {
            "api_version": "1",
            "pagination": {"page": 1, "limit": 50, "total": 0, "pages": 0, "has_next": False},
        },
    )
    ids, listing = walk(portal)
    assert ids == [] and listing.complete and portal.count("/v1/pumps") == 1


def test_body_without_controllers_or_pagination_is_not_an_empty_fleet(portal):
    """`{"api_version": "1"}` says nothing about the fleet: no pump may be marked vanished."""
    portal.on("/v1/pumps", {"api_version": "1"})
    ids, listing = walk(portal)
    assert ids == [] and not listing.complete


@pytest.mark.parametrize("counts", ["pages", "none"])
def test_never_ending_pagination_stops_flagged(portal, counts):
    """has_next is always true and every page repeats the same items."""
    same = paged(FIVE[:2], page=OMIT, has_next=True)
    if counts == "none":
        same = paged(FIVE[:2], page=OMIT, has_next=True, total=OMIT, pages=OMIT)
    portal.on("/v1/pumps", same)
    ids, listing = walk(portal, page_size=2)
    assert set(ids) == {"p1", "p2"}
    assert not listing.complete
    assert portal.count("/v1/pumps") <= 2


def test_never_ending_pagination_with_new_items_is_bounded(portal):
    """Fresh ids on every page and has_next forever: stop a few pages past the announced end."""
    counter = itertools.count()

    def answer(call: Call) -> Any:
        return {
            "controllers": [controller(f"x{next(counter)}")],
            "pagination": {"page": call.page, "limit": 1, "total": 3, "pages": 3, "has_next": True},
        }

    portal.on("/v1/pumps", answer)
    _, listing = walk(portal, page_size=1)
    assert not listing.complete
    assert portal.count("/v1/pumps") == 3 + settings.EXTRA_PAGES_ALLOWED


def test_page_echo_mismatch_stops_flagged_without_failing(portal):
    """The server ignores `page` and answers page 1 again: keep what was read, flag, stop.
    (Before: PaginationError failed the whole run, losing every other resource too.)"""
    first = paged(FIVE)
    portal.on("/v1/pumps", lambda call: first(Call(call.path, {**call.query, "page": "1"}, None)))
    ids, listing = walk(portal, page_size=2)
    assert ids == ["p1", "p2", "p1", "p2"]
    assert not listing.complete
    # page 3 (announced) may have been requested ahead before the walk stopped; never page 4
    assert portal.count("/v1/pumps") in (2, 3)


def test_has_next_false_but_pages_says_more_reads_on(portal):
    """Conflicting signals: has_next false on page 1 of 3. Reading on costs a request; stopping
    would lose pages."""
    portal.on("/v1/pumps", paged(FIVE, has_next=False))
    ids, listing = walk(portal, page_size=2)
    assert ids == ["p1", "p2", "p3", "p4", "p5"]
    assert listing.complete


def test_incomplete_listing_in_a_sync_marks_nothing_vanished(portal, pipeline):
    serve_fleet(portal, FIVE)
    assert sync(portal, pipeline).outcome == "success"
    portal.on("/v1/pumps", {"api_version": "1", "statistics": STATS})

    result = sync(portal, pipeline, run_at=RUN_AT.add(hours=1))

    assert result.error is None and result.report.listing_complete is False
    assert result.report.pumps_vanished == 0
    assert scalar(pipeline, "select count(*) from controller_visibility where not is_visible") == 0


# --- values: one two-run scenario, read by the tests below ----------------------------------


def quirky_fleet(second_run: bool) -> list[dict[str, Any]]:
    """Each pump carries other quirks; the second run swaps the types around (strings where
    numbers were, floats where ints were), so no column's type may depend on the first run."""
    later = "2025-03-20T11:00:00.000Z" if second_run else "2025-03-20T10:00:00.000Z"
    return [
        controller(
            "pump-001",
            last_seen=later,
            battery={"voltage": "12.6", "soc": "82.5", "current": -2}
            if second_run
            else {"voltage": 12.6, "soc": 85, "current": -2.3},
            uptime=86400.5 if second_run else 86400,
            highest_alarm_level=3 if second_run else None,
            surprise={"nested": {"deep": "x"}},
        ),
        controller(
            "123" if second_run else 123,
            is_owner=True,
            last_seen="2025-03-20T10:00:00Z",
            battery={"voltage": "12.6", "soc": 90 if second_run else "85", "current": "-2.3"},
            uptime="86400",
            total_sessions="12",
            active_alarms_count="0",
            current_pressure="4.2",
            highest_alarm_level=2,
            pump={"status": "running", "total_water_delivered": "15420.5", "running": "true"},
            installation={"installation_name": "Main", "lat": "52.0", "lon": 5},
            firmware="1.2.3",
            wifi={"rssi": "-70", "ssid": "farm"},
        ),
        controller(
            "pump-003",
            is_owner="1",
            last_seen="2025-03-20T12:00:00+02:00",
            battery=None,
            installation=None,
            highest_alarm_level="critical",
        ),
        controller("pump-004", is_owner=False, last_seen=1742464800000, battery={"soc": 82.5}),
        controller("pump-005", is_owner="0", last_seen="", last_heartbeat="…"),
        controller("pump-006", is_owner=0, last_seen=OMIT, last_heartbeat=OMIT),
    ]


QUIRKY_STATS = {
    "total_controllers": "6",
    "active_controllers": "4",
    "offline_controllers": "2",
    "total_water_delivered": "15420.5",
    "average_battery_soc": None,
    "wireguard_connections": "0",
    "new_stat": "7",
}


def quirky_metadata(call: Call, second_run: bool) -> dict[str, Any]:
    pump_id = call.path.split("/")[3]
    return {
        "api_version": "1",
        "pump_id": int(pump_id) if pump_id.isdigit() else pump_id,
        "metadata": {
            "pump_id": int(pump_id) if pump_id.isdigit() else pump_id,
            "installation_name": "Main",
            "latitude": "52.0",
            "longitude": 5,
            "last_seen": "2025-03-20T10:00:00Z",
            "total_water_delivered": "15420.5",
            "firmware": {"version": 1.3, "build": "8"}
            if second_run
            else {"version": "1.2", "build": 7},
            "serial": "00123",
        },
        "served_by": "node-7",
    }


def quirky_summary(call: Call, second_run: bool) -> dict[str, Any]:
    pump_id = call.path.split("/")[3]
    alarms: list[dict[str, Any]] = [
        {"id": 1, "level": "critical", "message": "Low pressure"},
        {"alarm_id": "a-2", "code": "E7", "level": 2, "value": "3.5", "cleared_at": None},
    ]
    if second_run:
        alarms = [{"id": "a-3", "level": "warning", "value": 4, "raised_at": 1742464800000}]
    return {
        "api_version": "1",
        "pump_id": pump_id,
        "metadata": {"pump_id": pump_id, "extra": {"a": 1}},
        "live_data": {
            "current_pressure": None,
            "battery_soc": "84" if second_run else 84,
            "battery_voltage": 12.5,
            "last_updated": "…" if pump_id == "pump-001" else "2025-03-20T10:00:00Z",
        },
        "today": {
            "date": "2025-03-20",
            "statistics": {}
            if pump_id == "pump-001"
            else {"water_delivered": "12.5", "avg_pressure": 4, "snapshots": "96"},
            "snapshot_count": "0",
            "is_today": "true",
        },
        "recent_alarms": {"count": "2", "critical": 1, "warning": "1", "alarms": alarms},
        "week_trends": {
            "daily_summaries": [
                {"date": "2025-03-19", "water_delivered": "12.5", "avg_pressure": 4},
                {"date": "2025-03-18", "water_delivered": 10, "snapshot_count": "96"},
            ],
            "total_water_delivered": "0.0",
            "avg_pressure": None,
            "avg_battery_soc": "80" if second_run else None,
            "avg_uptime": "0",
        },
        "total_average_water": {
            "avg_daily_water": "1.5" if second_run else 0,
            "total_water": 0,
            "days_with_data": "0",
            "calculation_method": "no_data",
        },
        "lifetime_averages": None,
        "last_updated": "2025-03-20T10:00:00.000Z",
        "data_source": "database",
        "cache": {"hit": True},
    }


QUIRKY_USERS = [
    {"user_id": "101", "name": "Acme Farms", "total_controllers": "2", "average_battery_soc": None},
    {"user_id": 102, "name": None, "average_battery_soc": 78.3, "email_hash": "ab12"},
    {"user_id": "101", "name": "Acme Farms", "total_controllers": "2"},
    {"name": "nobody"},
]
QUIRKY_LINKS = {
    "101": [{"pump_id": 123, "is_owner": "1"}, {"pump_id": "pump-001", "is_owner": True}],
    "102": [{"pump_id": "pump-003", "is_owner": 0, "custom_name": "x"}],
}


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    import dlt

    from pipelines.runner import make_pipeline

    folder = tmp_path_factory.mktemp("quirk_values")
    server = ScriptedPortal()
    server.thread.start()
    try:
        pipeline = make_pipeline(
            destination=dlt.destinations.duckdb(str(folder / "warehouse.duckdb")),
            dataset_name="pump_portal",
            pipelines_dir=str(folder / "pipelines"),
            progress=False,
        )
        results = []
        for second_run in (False, True):
            serve_fleet(server, quirky_fleet(second_run), QUIRKY_USERS, QUIRKY_LINKS)
            server.on("/v1/stats", {"api_version": "1", "statistics": QUIRKY_STATS})
            server.on("/v1/pumps/:id/metadata", lambda c, s=second_run: quirky_metadata(c, s))
            server.on("/v1/pumps/:id/summary", lambda c, s=second_run: quirky_summary(c, s))
            results.append(sync(server, pipeline, run_at=RUN_AT.add(hours=int(second_run))))
        yield pipeline, results, server
    finally:
        server.server.shutdown()
        server.server.server_close()


def test_values_runs_succeed(values):
    _, results, _ = values
    for result in results:
        assert result.error is None, result.error
        assert result.outcome == "success"


def test_values_create_no_variant_column(values):
    pipeline, _, _ = values
    assert variant_columns(pipeline) == []


def column_types(pipeline: Any, table: str) -> dict[str, str]:
    return dict(
        rows(
            pipeline,
            "select column_name, data_type from information_schema.columns "
            f"where table_name = '{table}'",
        )
    )


def test_values_documented_controller_fields_are_typed(values):
    pipeline, _, _ = values
    types = column_types(pipeline, "controllers")
    assert types["pump_id"] == "VARCHAR"
    assert types["is_owner"] == "BOOLEAN"
    assert types["last_seen"].startswith("TIMESTAMP")
    assert types["battery__soc"] == "DOUBLE"
    assert types["uptime"] == "DOUBLE"
    assert types["total_sessions"] == "BIGINT"
    assert types["highest_alarm_level"] == "VARCHAR"
    assert types["installation__lon"] == "DOUBLE"


def test_values_controllers_are_coerced(values):
    pipeline, _, _ = values
    got = {
        r[0]: r[1:]
        for r in rows(
            pipeline,
            "select pump_id, is_owner, strftime(last_seen at time zone 'UTC', '%H:%M'), "
            "battery__soc, highest_alarm_level, total_sessions, uptime from controllers",
        )
    }
    assert got == {
        "pump-001": (True, "11:00", 82.5, "3", 12, 86400.5),
        "123": (True, "10:00", 90.0, "2", 12, 86400.0),
        "pump-003": (True, "10:00", None, "critical", 12, 86400.0),
        "pump-004": (False, "10:00", 82.5, None, 12, 86400.0),
        "pump-005": (False, None, 85.0, None, 12, 86400.0),
        "pump-006": (False, None, 85.0, None, 12, 86400.0),
    }


def test_values_pump_id_as_number_and_as_string_is_one_pump(values):
    pipeline, _, server = values
    assert scalar(pipeline, "select count(*) from controllers where pump_id = '123'") == 1
    # one observation per distinct last_seen: 123's did not move between the runs
    assert rows(
        pipeline,
        "select pump_id, count(*) from controller_observations group by 1 order by 1",
    ) == [("123", 1), ("pump-001", 2), ("pump-003", 1), ("pump-004", 1)]
    assert server.count("/v1/pumps/123/metadata") >= 1


def test_values_statistics_from_strings(values):
    pipeline, _, _ = values
    assert rows(
        pipeline,
        "select total_controllers, total_water_delivered, average_battery_soc, new_stat "
        "from fleet_snapshots order by snapshot_at",
    ) == [(6, 15420.5, None, 7.0), (6, 15420.5, None, 7.0)]


def test_values_metadata_nested_extras_and_numeric_pump_id(values):
    pipeline, _, _ = values
    types = column_types(pipeline, "pump_metadata")
    assert types["latitude"] == "DOUBLE" and types["longitude"] == "DOUBLE"
    assert types["firmware__version"] == "VARCHAR"
    # 123 did not report again, so only pump-001's metadata was fetched a second time
    assert rows(
        pipeline,
        "select pump_id, latitude, longitude, firmware__version, firmware__build, serial "
        "from pump_metadata where pump_id in ('123', 'pump-001') order by 1",
    ) == [("123", 52.0, 5.0, "1.2", 7.0, "00123"), ("pump-001", 52.0, 5.0, "1.3", 8.0, "00123")]


def test_values_summary_fields_and_children(values):
    pipeline, _, _ = values
    types = column_types(pipeline, "pump_summaries")
    for column in (
        "week_trends__total_water_delivered",
        "week_trends__avg_uptime",
        "live_data__battery_soc",
        "total_average_water__avg_daily_water",
    ):
        assert types[column] == "DOUBLE", column
    assert types["live_data__last_updated"].startswith("TIMESTAMP")
    assert types["today__is_today"] == "BOOLEAN"
    assert types["today__statistics__water_delivered"] == "DOUBLE"
    assert (
        scalar(
            pipeline,
            "select count(*) from pump_summaries where pump_id = 'pump-001' "
            "and live_data__last_updated is null",
        )
        == 2
    )
    alarm_types = column_types(pipeline, "pump_summaries__recent_alarms__alarms")
    assert alarm_types["id"] == "VARCHAR" and alarm_types["level"] == "VARCHAR"
    assert alarm_types["value"] == "DOUBLE"
    assert rows(
        pipeline,
        "select distinct id from pump_summaries__recent_alarms__alarms where id is not null "
        "order by 1",
    ) == [("1",), ("a-3",)]


def test_values_delegated_users_deduplicated_and_typed(values):
    pipeline, results, server = values
    assert rows(
        pipeline, "select user_id, name, total_controllers from delegated_users order by 1"
    ) == [
        (101, "Acme Farms", 2),
        (102, None, None),
    ]
    assert results[0].report.users_listed == 2
    assert any("user_id" in w for w in results[0].report.warnings)
    # each user's pumps are read once per run, not once per duplicate row
    assert server.count("/v1/users/:id/summary") == 4
    assert rows(
        pipeline, "select user_id, pump_id, is_owner from user_pump_links order by 1, 2"
    ) == [(101, "123", True), (101, "pump-001", True), (102, "pump-003", False)]


# --- errors ---------------------------------------------------------------------------------


def error_body(code: str | None, message: str = "detail", request_id: str | None = None) -> Any:
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["code"] = code
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def test_request_id_from_header_when_the_body_has_none(portal):
    portal.on("/v1/stats", Reply(401, error_body("invalid_api_key"), {"X-Request-ID": "hdr-1"}))
    client, _ = make_client(portal)
    with pytest.raises(errors.AuthenticationError) as caught:
        client.statistics()
    assert caught.value.request_id == "hdr-1" and "hdr-1" in str(caught.value)


def test_request_id_from_the_body_when_the_header_is_absent(portal):
    portal.on("/v1/stats", Reply(403, error_body("insufficient_scope", request_id="body-2")))
    client, _ = make_client(portal)
    with pytest.raises(errors.InsufficientScope) as caught:
        client.statistics()
    assert caught.value.request_id == "body-2"


def test_non_json_5xx_pages_are_retried(portal):
    html = {"Content-Type": "text/html"}
    portal.on(
        "/v1/stats",
        sequence(
            Reply(502, "<html><body>Bad Gateway</body></html>", html),
            Reply(503, "<html>Service Unavailable</html>", html),
            Reply(500, "oops", {"Content-Type": "text/plain"}),
            {"api_version": "1", "statistics": STATS},
        ),
    )
    client, _ = make_client(portal)
    assert client.statistics()["statistics"] == STATS
    assert client.stats.retries == 3


def test_non_json_5xx_forever_is_a_typed_error_after_retries(portal):
    portal.on("/v1/stats", Reply(502, "<html>Bad Gateway</html>", {"Content-Type": "text/html"}))
    client, _ = make_client(portal, max_retries=2)
    with pytest.raises(errors.PortalUnavailable) as caught:
        client.statistics()
    assert caught.value.status == 502 and portal.count("/v1/stats") == 3


def test_dropped_connection_and_truncated_json_are_retried(portal):
    portal.on(
        "/v1/stats",
        sequence(
            Reply(reset=True),
            Reply(200, '{"api_version": "1", "statist'),
            {"api_version": "1", "statistics": STATS},
        ),
    )
    client, _ = make_client(portal)
    assert client.statistics()["statistics"] == STATS
    assert client.stats.retries == 2


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        (OMIT, settings.DEFAULT_RETRY_AFTER_SECONDS, settings.DEFAULT_RETRY_AFTER_SECONDS),
        ("0", 0.0, 0.1),
        ("3", 3.0, 3.0),
        ("2.5", 2.5, 2.5),
        (lambda: http_date(120), 117.0, 121.0),
        (lambda: http_date(-60), 0.0, 0.1),
        ("99999999", settings.MAX_RETRY_AFTER_SECONDS, settings.MAX_RETRY_AFTER_SECONDS),
        ("-5", 0.0, 0.1),
        ("soon", settings.DEFAULT_RETRY_AFTER_SECONDS, settings.DEFAULT_RETRY_AFTER_SECONDS),
        ("1e400", settings.DEFAULT_RETRY_AFTER_SECONDS, settings.DEFAULT_RETRY_AFTER_SECONDS),
    ],
    ids=[
        "absent",
        "zero",
        "seconds",
        "fraction",
        "http-date",
        "past-date",
        "huge",
        "negative",
        "garbage",
        "infinite",
    ],
)
def test_429_waits_retry_after_in_every_form(portal, retry_after, low, high):
    """A 429 always waits (a default when the header is absent or unreadable, at most the cap)
    and retries; it never counts as a failed attempt."""

    def limited(call: Call) -> Reply:
        value = retry_after() if callable(retry_after) else retry_after
        return Reply(429, error_body("rate_limited"), {"Retry-After": value})

    portal.on("/v1/stats", sequence(limited, {"api_version": "1", "statistics": STATS}))
    client, fake = make_client(portal, max_retries=0)
    assert client.statistics()["statistics"] == STATS
    assert client.stats.rate_limited == 1 and client.stats.retries == 0
    assert len(fake.slept) == 1 and low <= fake.slept[0] <= high


def test_401_with_an_unknown_code_is_an_authentication_error_not_retried(portal):
    portal.on("/v1/stats", Reply(401, error_body("token_expired", "expired")))
    client, _ = make_client(portal)
    with pytest.raises(errors.AuthenticationError) as caught:
        client.statistics()
    assert caught.value.code == "token_expired" and portal.count("/v1/stats") == 1


@pytest.mark.parametrize("body", [b"", "Forbidden", {"detail": "no"}])
def test_403_without_an_error_body_is_item_forbidden(portal, body):
    portal.on("/v1/pumps/:id/metadata", Reply(403, body, {"Content-Type": "text/plain"}))
    client, _ = make_client(portal)
    with pytest.raises(errors.ItemForbidden) as caught:
        client.pump_metadata("p1")
    assert caught.value.status == 403 and caught.value.code is None
    assert "HTTP 403" in str(caught.value) and portal.count("/v1/pumps/:id/metadata") == 1


@pytest.mark.parametrize("body", ["[]", "[1, 2]", "null", '"ok"', "", "<html></html>"])
def test_200_that_is_not_a_json_object_is_retried_then_typed(portal, body):
    portal.on("/v1/stats", Reply(200, body))
    client, _ = make_client(portal, max_retries=2)
    with pytest.raises(errors.InvalidResponse):
        client.statistics()
    assert portal.count("/v1/stats") == 3


@pytest.mark.parametrize("content_type", [OMIT, "text/html", "text/plain; charset=utf-8"])
def test_json_body_is_read_whatever_the_content_type(portal, content_type):
    portal.on(
        "/v1/stats",
        Reply(200, {"api_version": "1", "statistics": STATS}, {"Content-Type": content_type}),
    )
    client, _ = make_client(portal)
    assert client.statistics()["statistics"] == STATS


@pytest.mark.parametrize(
    ("version", "noted"),
    [("1", False), (1, False), ("1.1", False), ("v1", False), ("2", True), (2, True)],
)
def test_other_api_versions_are_read_and_noted(portal, version, noted):
    portal.on("/v1/stats", {"api_version": version, "statistics": STATS})
    client, _ = make_client(portal)
    assert client.statistics()["statistics"] == STATS
    assert client.stats.unexpected_api_versions == ({str(version)} if noted else set())


def test_the_key_never_reaches_an_error_even_when_the_server_echoes_it(portal):
    echo = f"Authorization: Bearer {KEY}"
    portal.on(
        "/v1/stats",
        Reply(401, error_body(f"bad {KEY}", echo, request_id=KEY), {"X-Request-ID": echo}),
    )
    client, _ = make_client(portal)
    with pytest.raises(errors.AuthenticationError) as caught:
        client.statistics()
    error = caught.value
    for text in (str(error), repr(error), error.message, error.code, error.request_id):
        assert KEY not in (text or "")
    assert portal.calls[0].authorization == f"Bearer {KEY}"


# --- errors through a whole sync -------------------------------------------------------------


def test_404_on_stats_takes_statistics_from_the_listing(portal, pipeline):
    """Choice: /v1/stats answering 404 (or a bare 403) is a portal without that endpoint; the
    listing carries the same statistics object, so the snapshot comes from there, with a warning.
    (Before: ItemNotFound failed the whole run.) An api_version other than 1 is loaded as v1 and
    noted as a warning."""
    serve_fleet(portal, FIVE)
    portal.on("/v1/stats", Reply(404, error_body("not_found")))
    portal.on("/v1/pumps", paged(FIVE, extra={"api_version": "2"}))

    result = sync(portal, pipeline)

    assert result.error is None and result.outcome == "success"
    assert rows(pipeline, "select source_endpoint, total_controllers from fleet_snapshots") == [
        ("/v1/pumps", 1)
    ]
    assert any("/v1/stats" in w and "not_found" in w for w in result.report.warnings)
    assert any("api_version '2'" in w for w in result.report.warnings)
    assert scalar(pipeline, "select count(*) from controllers") == 5


def test_echoed_key_stays_out_of_the_warehouse(portal, pipeline):
    serve_fleet(portal, FIVE[:2])
    portal.on(
        "/v1/pumps/p1/summary",
        Reply(403, error_body("forbidden", f"token Bearer {KEY} may not read p1", KEY)),
    )
    first = sync(portal, pipeline)
    assert first.outcome == "partial"

    portal.on("/v1/pumps", Reply(401, error_body("invalid_api_key", f"bad key {KEY}", KEY)))
    second = sync(portal, pipeline, run_at=RUN_AT.add(hours=1))

    assert isinstance(second.error, errors.AuthenticationError)
    stored = rows(pipeline, "select * from skipped_items") + rows(
        pipeline, "select * from sync_runs"
    )
    assert stored and KEY not in repr(stored)
    assert KEY not in str(second.error) and KEY not in repr(first.report)


def test_5xx_forever_fails_the_run_with_a_typed_error(portal, pipeline):
    serve_fleet(portal, FIVE)
    portal.on("/v1/pumps", Reply(503, "<html>down</html>", {"Content-Type": "text/html"}))
    result = sync(portal, pipeline, max_retries=1)
    assert result.outcome == "failed"
    assert isinstance(result.error, errors.PortalUnavailable) and result.error.status == 503


# --- delegated users ------------------------------------------------------------------------


def test_delegated_users_omitted_or_null_keep_links_open_but_empty_list_ends_them(portal, pipeline):
    """Choice: `delegated_users` omitted or null says nothing (warned; users and links left as
    they were); `[]` is an integration with no users: every link ends. (Before: omitted or null
    ended every link.)"""
    links = {"101": [{"pump_id": "p1", "is_owner": 1}]}
    serve_fleet(portal, FIVE, [{"user_id": 101, "name": "Acme"}], links)
    sync(portal, pipeline)

    for hour, users in ((1, OMIT), (2, None), (3, [])):
        body = {"api_version": "1", "user_identity_policy": "user_id_and_name"}
        if users is not OMIT:
            body["delegated_users"] = users
        portal.on("/v1/delegated-users", body)
        result = sync(portal, pipeline, run_at=RUN_AT.add(hours=hour))
        assert result.error is None
        open_links = scalar(pipeline, "select count(*) from user_pump_links where valid_to is null")
        if users == []:
            assert open_links == 0
        else:
            assert open_links == 1
            assert any("delegated_users" in w for w in result.report.warnings)


# --- more shapes ----------------------------------------------------------------------------


def test_rows_without_pump_id_are_skipped_but_keep_the_listing_complete(portal):
    """Choice: a row without (or with a blank) pump_id is ignored with a warning, but still
    counts toward `total`, so one broken row does not stop vanished pumps being noticed."""
    items = [*FIVE[:3], controller(OMIT), controller(""), controller(None)]
    portal.on("/v1/pumps", paged(items))
    ids, listing = walk(portal, page_size=2)
    assert len(ids) == 6 and listing.complete


def test_controllers_as_an_object_keyed_by_index(portal):
    """Some encoders send a list with holes as {"0": {...}, "2": {...}}; `{}` for an empty list."""
    body = paged(FIVE[:2])(Call("/v1/pumps", {}, None))
    portal.on("/v1/pumps", {**body, "controllers": {"0": FIVE[0], "2": FIVE[1]}})
    ids, listing = walk(portal)
    assert ids == ["p1", "p2"] and listing.complete


def test_429_forever_ends_in_a_typed_error_not_a_loop(portal):
    portal.on("/v1/stats", Reply(429, "Too Many Requests", {"Content-Type": "text/plain"}))
    client, fake = make_client(portal)
    with pytest.raises(errors.RateLimited):
        client.statistics()
    assert portal.count("/v1/stats") == settings.MAX_RATE_LIMITED_ATTEMPTS + 1
    assert fake.slept[0] == settings.DEFAULT_RETRY_AFTER_SECONDS


def test_empty_objects_sent_as_empty_lists_load(portal, pipeline):
    """PHP-style `[]` for an empty object in the summary and metadata, and `{}` for an empty
    users list, must neither fail nor type a column."""
    serve_fleet(portal, FIVE[:1], users={})
    portal.on("/v1/pumps/:id/metadata", {"api_version": "1", "pump_id": "p1", "metadata": []})
    portal.on(
        "/v1/pumps/:id/summary",
        {
            "api_version": "1",
            "pump_id": "p1",
            "metadata": [],
            "live_data": [],
            "today": {"date": "2025-03-20", "statistics": [], "snapshot_count": 0},
            "recent_alarms": {"count": 0, "alarms": {}},
            "week_trends": {"daily_summaries": {}, "total_water_delivered": "0.0"},
            "lifetime_averages": [],
        },
    )
    result = sync(portal, pipeline)
    assert result.outcome == "success", result.error
    assert rows(pipeline, "select pump_id, today__snapshot_count from pump_summaries") == [
        ("p1", 0)
    ]
    assert scalar(pipeline, "select count(*) from pump_metadata") == 1
    assert variant_columns(pipeline) == []


def test_a_refused_default_limit_shrinks_the_page_size(portal):
    """The server rejects limit > 25 with 400 invalid_pagination instead of capping it: page 1 is
    retried with half the default limit until accepted; the smaller size holds for later walks."""
    many = [controller(f"p{n:02d}") for n in range(45)]
    listing_answer = paged(many)

    def answer(call: Call) -> Any:
        if call.limit > 25:
            return Reply(400, error_body("invalid_pagination", "limit must be <= 25"))
        return listing_answer(call)

    portal.on("/v1/pumps", answer)
    client, _ = make_client(portal)
    listing = Listing()
    ids = [item["pump_id"] for page in client.pump_pages(listing) for item in page.items]
    assert sorted(ids) == [f"p{n:02d}" for n in range(45)] and listing.complete
    assert client.page_size == 25
    assert [c.limit for c in portal.calls] == [50, 25, 25]


def test_a_refused_configured_limit_fails_at_once(portal):
    """A page size the operator raised above the default is their setting: not second-guessed."""
    portal.on("/v1/pumps", Reply(400, error_body("invalid_pagination", "limit must be <= 100")))
    client, _ = make_client(portal, page_size=500)
    with pytest.raises(errors.InvalidRequest):
        list(client.pump_pages(Listing()))
    assert [c.limit for c in portal.calls] == [500]


def test_a_limit_refused_down_to_the_floor_fails_typed(portal):
    portal.on("/v1/pumps", Reply(400, error_body("invalid_pagination", "no")))
    client, _ = make_client(portal)
    with pytest.raises(errors.InvalidRequest):
        list(client.pump_pages(Listing()))
    assert [c.limit for c in portal.calls] == [50, 25, 12]


def test_bare_403_on_top_level_endpoints(portal, pipeline):
    """Choice: a 403 without the reference's code on /v1/delegated-users skips users (partial
    run, pumps still load); on /v1/pumps it fails the run with a typed ItemForbidden."""
    serve_fleet(portal, FIVE)
    portal.on("/v1/delegated-users", Reply(403, b"", {"Content-Type": OMIT}))
    result = sync(portal, pipeline)
    assert result.outcome == "partial" and result.error is None
    assert scalar(pipeline, "select count(*) from controllers") == 5

    portal.on("/v1/pumps", Reply(403, "<html>Forbidden</html>", {"Content-Type": "text/html"}))
    result = sync(portal, pipeline, run_at=RUN_AT.add(hours=1))
    assert result.outcome == "failed"
    assert isinstance(result.error, errors.ItemForbidden) and result.error.status == 403


# --- the transport ---------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["/v1/stats-moved", "{url}/v1/stats-moved"])
def test_a_redirect_within_the_origin_is_followed_with_the_key(portal, location):
    portal.on("/v1/stats", Reply(301, b"", {"Location": location.format(url=portal.url)}))
    portal.on("/v1/stats-moved", {"api_version": "1", "statistics": STATS})
    client, _ = make_client(portal)
    assert client.statistics()["statistics"] == STATS
    assert [call.path for call in portal.calls] == ["/v1/stats", "/v1/stats-moved"]
    assert portal.calls[1].authorization == f"Bearer {KEY}"


def test_proxies_from_the_environment_are_not_used(portal, monkeypatch):
    """Like requests with trust_env off: a proxy would see the key, so none is ever taken from
    the environment (here one that nothing listens on)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    portal.on("/v1/stats", {"api_version": "1", "statistics": STATS})
    client, _ = make_client(portal)
    assert client.statistics()["statistics"] == STATS


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (
            "application/json; charset=iso-8859-1",
            '{"statistics": {"name": "Café"}}'.encode("latin-1"),
        ),
        ("application/json", '{"statistics": {"name": "Café"}}'.encode("utf-16")),
        ("text/html", '{"statistics": {"name": "Café"}}'.encode()),
    ],
)
def test_json_is_decoded_by_the_declared_charset_else_as_json(portal, content_type, body):
    portal.on("/v1/stats", Reply(200, body, {"Content-Type": content_type}))
    client, _ = make_client(portal)
    assert client.statistics()["statistics"] == {"name": "Café"}


def _raised(error: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise error from inner
    except BaseException as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            _raised(ConnectTimeoutError(None, "timed out. (connect timeout=5)"), TimeoutError()),
            "portal.example.com did not answer in time (ConnectTimeout)",
        ),
        (
            ReadTimeoutError(None, "/v1/stats", "Read timed out. (read timeout=60)"),
            "portal.example.com did not answer in time (ReadTimeout)",
        ),
        (
            MaxRetryError(None, "/v1/stats", ReadTimeoutError(None, "/v1/stats", "timed out")),
            "portal.example.com did not answer in time (ReadTimeout)",
        ),
        (
            _raised(NewConnectionError(None, "no route"), OSError(113, "No route to host")),
            "cannot reach portal.example.com: OSError: [Errno 113] No route to host",
        ),
        (
            _raised(
                NameResolutionError("portal.example.com", None, socket.gaierror(-2, "unknown")),
                socket.gaierror(-2, "unknown"),
            ),
            "cannot resolve host 'portal.example.com' (unknown host)",
        ),
        (
            ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer")),
            "cannot reach portal.example.com: ConnectionResetError: [Errno 104] reset by peer",
        ),
    ],
)
def test_urllib3_failures_read_as_one_line(error, message):
    """urllib3 makes every failed connect a ConnectTimeoutError (NewConnectionError): only a real
    timeout is named one, with the names requests gave them."""
    assert connection_failure(error, "https://portal.example.com") == message
