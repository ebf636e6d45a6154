"""Tests of the Pump Portal API emulator (tests/portal_emulator), over real HTTP with requests."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.portal_emulator import (
    ACTIVE_WINDOW,
    Fleet,
    PortalEmulator,
    RateLimit,
    RequestInfo,
    iso_ms,
)

ROOT = Path(__file__).resolve().parents[1]
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TEMPLATE_PATHS = {
    "/v1/pumps": "/v1/pumps",
    "/v1/stats": "/v1/stats",
    "/v1/delegated-users": "/v1/delegated-users",
    "/v1/users/:userId/summary": "/v1/users/101/summary",
    "/v1/pumps/:pumpId/metadata": "/v1/pumps/pump-001/metadata",
    "/v1/pumps/:pumpId/summary": "/v1/pumps/pump-001/summary",
}


# ----------------------------------------------------------------------------- helpers
def call(
    emu: PortalEmulator, path: str, key: str | None = "full", **params: Any
) -> requests.Response:
    """GET ``path``; ``key`` is a key role name, a raw header value via ``raw:``, or None."""
    headers = {}
    if key is not None:
        value = key[4:] if key.startswith("raw:") else f"Bearer {getattr(emu.keys, key)}"
        headers["Authorization"] = value
    return requests.get(emu.url + path, params=params or None, headers=headers, timeout=5)


def error_code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


def all_pages(emu: PortalEmulator, path: str, limit: int) -> list[str]:
    ids: list[str] = []
    page = 1
    while True:
        body = call(emu, path, page=page, limit=limit).json()
        ids += [row["pump_id"] for row in body["controllers"]]
        if not body["pagination"]["has_next"]:
            return ids
        page += 1


@pytest.fixture(scope="module")
def shared() -> Iterator[PortalEmulator]:
    """Read-only tests share one emulator (nothing may mutate it)."""
    with PortalEmulator(Fleet.generate(pumps=300, users=12, seed=7)) as emu:
        yield emu


@pytest.fixture
def emu() -> Iterator[PortalEmulator]:
    """A fresh emulator for tests that mutate the fleet, clock, faults or counters."""
    with PortalEmulator(Fleet.generate(pumps=300, users=12, seed=7)) as emulator:
        yield emulator


# ----------------------------------------------------------------------------- generation
def test_generate_same_seed_same_fleet() -> None:
    one, two = Fleet.generate(pumps=50, users=4, seed=3), Fleet.generate(pumps=50, users=4, seed=3)
    assert one.pump_ids() == two.pump_ids()
    assert one.pumps == two.pumps
    assert one.users == two.users


def test_generate_different_seed_differs() -> None:
    one, two = Fleet.generate(pumps=50, seed=3), Fleet.generate(pumps=50, seed=4)
    assert one.pumps != two.pumps


def test_generate_ids_and_clock_start() -> None:
    fleet = Fleet.generate(pumps=300, users=12, seed=7)
    assert fleet.pump_ids()[:2] == ["pump-001", "pump-002"]
    assert fleet.user_ids() == list(range(101, 113))
    assert fleet.clock.now.isoformat() == "2025-03-20T10:00:00+00:00"


def test_generate_every_pump_has_a_user_and_some_are_shared() -> None:
    fleet = Fleet.generate(pumps=300, users=12, seed=7)
    holders = {pid: [u for u in fleet.users.values() if pid in u.pumps] for pid in fleet.pumps}
    assert all(1 <= len(users) <= 2 for users in holders.values())
    shared = [users for users in holders.values() if len(users) == 2]
    assert 30 <= len(shared) <= 90  # about 20% of 300
    assert all(
        sorted(u.pumps[pid] for u in users) == [False, True]
        for pid, users in holders.items()
        if len(users) == 2
    )


def test_generate_omitted_keys_present_in_fleet() -> None:
    pumps = list(Fleet.generate(pumps=300, users=12, seed=7).pumps.values())
    assert any(p.last_seen is None for p in pumps)
    assert any(p.last_seen is not None and p.battery is None for p in pumps)
    assert any(p.installation is None for p in pumps)
    assert any(p.custom_name is None for p in pumps)
    assert any(p.numbers_as_strings for p in pumps)
    socs = [p.battery["soc"] for p in pumps if p.battery is not None]
    assert any(isinstance(s, int) for s in socs) and any(isinstance(s, float) for s in socs)


def test_keys_shape_and_determinism() -> None:
    one = PortalEmulator(Fleet.generate(pumps=5, seed=7)).keys.as_dict()
    two = PortalEmulator(Fleet.generate(pumps=5, seed=7)).keys.as_dict()
    assert one == two
    assert set(one) == {
        "full",
        "pumps_only",
        "stats_only",
        "revoked",
        "no_users",
        "broken",
        "no_scope",
    }
    assert all(re.fullmatch(r"pcv_[0-9a-f]{32}", value) for value in one.values())
    assert len(set(one.values())) == 7


# ----------------------------------------------------------------------------- listing
def test_pumps_rows_match_fleet_truth(shared: PortalEmulator) -> None:
    response = call(shared, "/v1/pumps", page=1, limit=100)
    body = response.json()
    assert response.status_code == 200
    assert body["api_version"] == "1"
    assert response.headers["X-Request-ID"].startswith("req_")
    fleet = shared.fleet
    assert body["controllers"] == [
        fleet.listing_row(pid, shared.now) for pid in fleet.pump_ids()[:100]
    ]
    assert body["statistics"] == fleet.statistics(shared.now)


def test_pumps_row_shape_follows_reference(shared: PortalEmulator) -> None:
    row = call(shared, "/v1/pumps", limit=1).json()["controllers"][0]
    assert list(row) == [
        "pump_id",
        "custom_name",
        "is_owner",
        "last_seen",
        "last_heartbeat",
        "installation",
        "pump",
        "battery",
        "communication_method",
        "current_pressure",
        "active_alarms_count",
        "highest_alarm_level",
        "total_sessions",
        "uptime",
        "profile",
    ]
    assert ISO_MS.fullmatch(row["last_seen"]) and ISO_MS.fullmatch(row["last_heartbeat"])
    assert set(row["installation"]) == {"installation_name", "location_name", "lat", "lon"}
    assert set(row["pump"]) == {"status", "total_water_delivered", "running"}
    assert set(row["battery"]) == {"voltage", "soc", "current"}
    assert row["is_owner"] in (0, 1)


def test_pumps_omitted_keys_and_string_numbers(shared: PortalEmulator) -> None:
    rows = call(shared, "/v1/pumps", limit=100, page=1).json()["controllers"]
    rows += call(shared, "/v1/pumps", limit=100, page=2).json()["controllers"]
    rows += call(shared, "/v1/pumps", limit=100, page=3).json()["controllers"]
    never = [r for r in rows if "last_seen" not in r]
    assert never and all("last_heartbeat" not in r and "battery" not in r for r in never)
    assert all(r["pump"]["status"] == "never_seen" for r in never)
    assert any("last_seen" in r and "battery" not in r for r in rows)
    assert any("installation" not in r for r in rows)
    assert any("custom_name" not in r for r in rows)
    texts = [r for r in rows if isinstance(r["pump"]["total_water_delivered"], str)]
    assert texts and all(float(r["pump"]["total_water_delivered"]) >= 0 for r in texts)
    assert any(isinstance(r.get("battery", {}).get("soc"), str) for r in rows)
    assert any(isinstance(r["current_pressure"], str) for r in rows)
    assert {r["communication_method"] for r in rows} == {"MQTT", "WireGuard", "LTE"}
    assert {r["highest_alarm_level"] for r in rows} == {None, "warning", "critical"}


def test_pagination_math_limit_7(shared: PortalEmulator) -> None:
    body = call(shared, "/v1/pumps", page=43, limit=7).json()
    assert body["pagination"] == {
        "page": 43,
        "limit": 7,
        "total": 300,
        "pages": 43,
        "has_next": False,
        "has_prev": True,
    }
    assert [r["pump_id"] for r in body["controllers"]] == shared.fleet.pump_ids()[294:]


def test_pagination_defaults(shared: PortalEmulator) -> None:
    body = call(shared, "/v1/pumps").json()
    assert body["pagination"] == {
        "page": 1,
        "limit": 50,
        "total": 300,
        "pages": 6,
        "has_next": True,
        "has_prev": False,
    }
    assert len(body["controllers"]) == 50


def test_pagination_past_end_is_empty(shared: PortalEmulator) -> None:
    body = call(shared, "/v1/pumps", page=99, limit=50).json()
    assert body["controllers"] == []
    assert body["pagination"]["has_next"] is False
    assert body["statistics"]["total_controllers"] == 300


def test_pagination_pages_cover_listing_exactly(shared: PortalEmulator) -> None:
    assert all_pages(shared, "/v1/pumps", limit=100) == shared.fleet.pump_ids()


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=1.5", "page"),
        ("page=", "page"),
        ("page=1&page=2", "page"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("limit=%2B5", "limit"),
    ],
)
def test_pagination_invalid(shared: PortalEmulator, query: str, name: str) -> None:
    for path in ("/v1/pumps", "/v1/users/101/summary"):
        response = call(shared, f"{path}?{query}")
        assert response.status_code == 400
        assert error_code(response) == "invalid_pagination"
        assert name in response.json()["error"]["message"]


def test_pagination_max_limit_configurable() -> None:
    with PortalEmulator(Fleet.generate(pumps=30, seed=1), max_limit=20) as emu:
        assert call(emu, "/v1/pumps", limit=20).status_code == 200
        assert error_code(call(emu, "/v1/pumps", limit=21)) == "invalid_pagination"
        assert call(emu, "/v1/pumps").json()["pagination"]["limit"] == 20


# ----------------------------------------------------------------------------- errors / auth
@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("raw:Token abc", 401, "unauthorized"),
        ("raw:Bearer", 401, "unauthorized"),
        ("raw:Bearer sk_live_123", 401, "unauthorized"),
        ("raw:Bearer pcv_" + "0" * 32, 401, "invalid_api_key"),
        ("revoked", 401, "invalid_api_key"),
        ("broken", 500, "internal_error"),
        ("no_scope", 403, "insufficient_scope"),
    ],
)
def test_auth_errors_on_every_endpoint(
    shared: PortalEmulator, key: str | None, status: int, code: str
) -> None:
    for path in TEMPLATE_PATHS.values():
        response = call(shared, path, key=key)
        assert (response.status_code, error_code(response)) == (status, code), path


def test_auth_broken_message(shared: PortalEmulator) -> None:
    assert (
        call(shared, "/v1/stats", key="broken").json()["error"]["message"] == "Auth lookup failed"
    )


def test_error_body_request_id_matches_header(shared: PortalEmulator) -> None:
    response = call(shared, "/v1/stats", key="revoked")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert response.headers["X-Request-ID"] == error["request_id"]


def test_request_ids_unique(shared: PortalEmulator) -> None:
    ids = {call(shared, "/v1/stats", key=None).json()["error"]["request_id"] for _ in range(20)}
    assert len(ids) == 20


def test_unknown_paths_not_found(shared: PortalEmulator) -> None:
    for path in ("/v1/nope", "/v1/pumps/pump-001/other", "/v2/pumps", "/"):
        response = call(shared, path)
        assert (response.status_code, error_code(response)) == (404, "not_found"), path
    post = requests.post(
        shared.url + "/v1/pumps", timeout=5, headers={"Authorization": f"Bearer {shared.keys.full}"}
    )
    assert (post.status_code, error_code(post)) == (404, "not_found")


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        (
            "pumps_only",
            {
                "/v1/pumps",
                "/v1/users/:userId/summary",
                "/v1/pumps/:pumpId/metadata",
                "/v1/pumps/:pumpId/summary",
            },
        ),
        ("stats_only", {"/v1/stats", "/v1/delegated-users"}),
        ("full", set(TEMPLATE_PATHS)),
    ],
)
def test_scopes_per_endpoint(shared: PortalEmulator, key: str, allowed: set[str]) -> None:
    for template, path in TEMPLATE_PATHS.items():
        response = call(shared, path, key=key)
        if template in allowed:
            assert response.status_code == 200, path
        else:
            assert (response.status_code, error_code(response)) == (403, "insufficient_scope")


def test_no_users_integration(shared: PortalEmulator) -> None:
    for path in ("/v1/delegated-users", "/v1/users/101/summary"):
        response = call(shared, path, key="no_users")
        assert (response.status_code, error_code(response)) == (403, "no_delegated_users")
    for path in ("/v1/pumps/pump-001/metadata", "/v1/pumps/pump-001/summary"):
        response = call(shared, path, key="no_users")
        assert (response.status_code, error_code(response)) == (403, "forbidden")
    zero = {
        "total_controllers": 0,
        "active_controllers": 0,
        "offline_controllers": 0,
        "total_water_delivered": 0.0,
        "average_battery_soc": None,
        "wireguard_connections": 0,
    }
    listing = call(shared, "/v1/pumps", key="no_users").json()
    assert listing["controllers"] == [] and listing["statistics"] == zero
    assert listing["pagination"] == {
        "page": 1,
        "limit": 50,
        "total": 0,
        "pages": 0,
        "has_next": False,
        "has_prev": False,
    }
    assert call(shared, "/v1/stats", key="no_users").json()["statistics"] == zero


# ----------------------------------------------------------------------------- stats / users
def test_stats_equals_listing_statistics(shared: PortalEmulator) -> None:
    body = call(shared, "/v1/stats").json()
    assert body == {"api_version": "1", "statistics": shared.fleet.statistics(shared.now)}
    stats = body["statistics"]
    assert stats["offline_controllers"] == 300 - stats["active_controllers"]
    assert 0 < stats["active_controllers"] < 300


def test_delegated_users_rows(shared: PortalEmulator) -> None:
    body = call(shared, "/v1/delegated-users").json()
    fleet = shared.fleet
    assert body["user_identity_policy"] == "user_id_and_name"
    assert [row["user_id"] for row in body["delegated_users"]] == fleet.user_ids()
    for row in body["delegated_users"]:
        uid = row["user_id"]
        stats = fleet.statistics(shared.now, fleet.user_pump_ids(uid))
        assert row == {"user_id": uid, "name": fleet.users[uid].name, **stats}
    assert any(row["name"] is None for row in body["delegated_users"])
    assert all("email" not in row for row in body["delegated_users"])


def test_user_summary_body(shared: PortalEmulator) -> None:
    fleet = shared.fleet
    body = call(shared, "/v1/users/101/summary", limit=100).json()
    mine = fleet.user_pump_ids(101)
    assert body["user_id"] == 101 and body["name"] == fleet.users[101].name
    assert body["statistics"] == fleet.statistics(shared.now, mine)
    assert [r["pump_id"] for r in body["controllers"]] == mine
    assert [r["is_owner"] for r in body["controllers"]] == [
        int(fleet.users[101].pumps[p]) for p in mine
    ]
    assert body["controllers"][0] == fleet.user_row(101, mine[0], shared.now)
    assert body["pagination"]["total"] == len(mine)


def test_user_summary_shared_pump_is_owner_differs(shared: PortalEmulator) -> None:
    fleet = shared.fleet
    uid, pid = next(
        (u.user_id, p) for u in fleet.users.values() for p, own in u.pumps.items() if not own
    )
    row = next(
        r
        for r in call(shared, f"/v1/users/{uid}/summary", limit=100).json()["controllers"]
        if r["pump_id"] == pid
    )
    assert row["is_owner"] == 0


def test_user_summary_errors(shared: PortalEmulator) -> None:
    response = call(shared, "/v1/users/abc/summary")
    assert (response.status_code, error_code(response)) == (400, "invalid_user_id")
    response = call(shared, "/v1/users/999/summary")
    assert (response.status_code, error_code(response)) == (403, "forbidden")


def test_user_summary_inactive_user_forbidden_but_listed(emu: PortalEmulator) -> None:
    emu.fleet.inactive_users.add(102)
    response = call(emu, "/v1/users/102/summary")
    assert (response.status_code, error_code(response)) == (403, "forbidden")
    users = call(emu, "/v1/delegated-users").json()["delegated_users"]
    assert 102 in [row["user_id"] for row in users]


# ----------------------------------------------------------------------------- details
def test_metadata_body(shared: PortalEmulator) -> None:
    pid = next(
        p
        for p, pump in shared.fleet.pumps.items()
        if pump.installation is not None
        and pump.last_seen is not None
        and not pump.numbers_as_strings
    )
    pump = shared.fleet.pumps[pid]
    body = call(shared, f"/v1/pumps/{pid}/metadata").json()
    assert body == {
        "api_version": "1",
        "pump_id": pid,
        "metadata": {
            "pump_id": pid,
            "installation_name": pump.installation["installation_name"],
            "location_name": pump.installation["location_name"],
            "latitude": pump.installation["lat"],
            "longitude": pump.installation["lon"],
            "last_seen": iso_ms(pump.last_seen),
            "total_water_delivered": pump.total_water_delivered,
        },
    }


def test_metadata_never_seen_not_found(shared: PortalEmulator) -> None:
    pid = next(p for p, pump in shared.fleet.pumps.items() if pump.last_seen is None)
    for kind in ("metadata", "summary"):
        response = call(shared, f"/v1/pumps/{pid}/{kind}")
        assert (response.status_code, error_code(response)) == (404, "not_found")


def test_metadata_unknown_pump_forbidden(shared: PortalEmulator) -> None:
    for kind in ("metadata", "summary"):
        response = call(shared, f"/v1/pumps/pump-999/{kind}")
        assert (response.status_code, error_code(response)) == (403, "forbidden")


def test_details_forbidden_set_and_removed(emu: PortalEmulator) -> None:
    emu.fleet.forbidden_detail_pumps.add("pump-001")
    emu.fleet.remove_pump("pump-002")
    for pid in ("pump-001", "pump-002"):
        for kind in ("metadata", "summary"):
            response = call(emu, f"/v1/pumps/{pid}/{kind}")
            assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert "pump-001" in emu.fleet.pump_ids() and "pump-002" not in emu.fleet.pump_ids()


def test_metadata_extra_fields_and_encoded_id(emu: PortalEmulator) -> None:
    odd = emu.fleet.add_pump(pump_id="pump/ä 1", user_ids=(101,))
    emu.fleet.set_metadata_extra(None, firmware="2.1.0")
    emu.fleet.set_metadata_extra(odd, tank_litres=5000)
    body = call(emu, f"/v1/pumps/{quote(odd, safe='')}/metadata").json()
    assert body["pump_id"] == odd
    assert body["metadata"]["firmware"] == "2.1.0" and body["metadata"]["tank_litres"] == 5000
    other = call(emu, "/v1/pumps/pump-001/metadata").json()["metadata"]
    assert other["firmware"] == "2.1.0" and "tank_litres" not in other


def test_summary_shape(shared: PortalEmulator) -> None:
    fleet = shared.fleet
    pid = next(p for p, pump in fleet.pumps.items() if pump.alarms and pump.history_days == 7)
    body = call(shared, f"/v1/pumps/{pid}/summary").json()
    assert list(body) == [
        "api_version",
        "pump_id",
        "metadata",
        "live_data",
        "today",
        "recent_alarms",
        "week_trends",
        "total_average_water",
        "lifetime_averages",
        "last_updated",
        "data_source",
    ]
    alarms = body["recent_alarms"]
    assert 1 <= alarms["count"] == len(alarms["alarms"]) <= 3
    assert alarms["critical"] + alarms["warning"] == alarms["count"]
    assert alarms["count"] == fleet.listing_row(pid, shared.now)["active_alarms_count"]
    assert set(alarms["alarms"][0]) == {
        "alarm_id",
        "code",
        "level",
        "message",
        "raised_at",
        "cleared_at",
    }
    week = body["week_trends"]
    assert len(week["daily_summaries"]) == 7
    assert set(week["daily_summaries"][0]) == {
        "date",
        "water_delivered",
        "avg_pressure",
        "avg_battery_soc",
        "snapshot_count",
    }
    assert week["daily_summaries"][-1]["date"] == "2025-03-19"
    assert isinstance(week["total_water_delivered"], str)
    assert isinstance(week["avg_uptime"], str)
    total = sum(float(d["water_delivered"]) for d in week["daily_summaries"])
    assert float(week["total_water_delivered"]) == pytest.approx(total, abs=0.051)
    assert body["today"]["date"] == "2025-03-20" and body["today"]["is_today"] is True
    assert body["last_updated"] == "2025-03-20T10:00:00.000Z"


def test_summary_no_alarms_and_placeholder(shared: PortalEmulator) -> None:
    fleet = shared.fleet
    quiet = next(p for p, pump in fleet.pumps.items() if pump.last_seen and not pump.alarms)
    body = call(shared, f"/v1/pumps/{quiet}/summary").json()
    assert body["recent_alarms"] == {"count": 0, "critical": 0, "warning": 0, "alarms": []}
    placeholder = next(
        p for p, pump in fleet.pumps.items() if pump.last_seen and pump.placeholder_last_updated
    )
    live = call(shared, f"/v1/pumps/{placeholder}/summary").json()["live_data"]
    assert live["last_updated"] == "…"


def test_summary_deterministic(shared: PortalEmulator) -> None:
    first = call(shared, "/v1/pumps/pump-001/summary").json()
    assert call(shared, "/v1/pumps/pump-001/summary").json() == first


# ----------------------------------------------------------------------------- simulated time
def test_advance_moves_pumps_offline(emu: PortalEmulator) -> None:
    before = call(emu, "/v1/stats").json()["statistics"]
    emu.advance(ACTIVE_WINDOW.total_seconds() + 1)
    after = call(emu, "/v1/stats").json()["statistics"]
    assert emu.now.isoformat() == "2025-03-20T10:15:01+00:00"
    assert after["active_controllers"] < before["active_controllers"]
    assert after["active_controllers"] == 0  # every generated last_seen is <= start
    assert after["total_water_delivered"] == before["total_water_delivered"]


def test_report_updates_row_and_totals(emu: PortalEmulator) -> None:
    pid = next(
        p
        for p, pump in emu.fleet.pumps.items()
        if pump.last_seen and pump.battery and not pump.numbers_as_strings
    )
    pump = emu.fleet.pumps[pid]
    water, sessions, uptime = pump.total_water_delivered, pump.total_sessions, pump.uptime
    elapsed = int((emu.now + timedelta(hours=1) - pump.last_seen).total_seconds())
    stats_before = call(emu, "/v1/stats").json()["statistics"]
    emu.advance(3600)
    emu.report([pid], water=12.5)
    row = next(r for r in all_rows(emu) if r["pump_id"] == pid)
    assert row["last_seen"] == row["last_heartbeat"] == "2025-03-20T11:00:00.000Z"
    assert row["pump"]["total_water_delivered"] == round(water + 12.5, 1)
    assert row["total_sessions"] == sessions + 1
    assert row["uptime"] == uptime + elapsed
    stats = call(emu, "/v1/stats").json()["statistics"]
    assert stats["active_controllers"] == 1
    assert stats["total_water_delivered"] == round(stats_before["total_water_delivered"] + 12.5, 1)


def all_rows(emu: PortalEmulator) -> list[dict[str, Any]]:
    return [
        row
        for page in (1, 2, 3)
        for row in call(emu, "/v1/pumps", page=page, limit=100).json()["controllers"]
    ]


def test_report_default_water_deterministic() -> None:
    totals = []
    for _ in range(2):
        fleet = Fleet.generate(pumps=20, seed=5)
        fleet.report(["pump-001"])
        totals.append(fleet.pumps["pump-001"].total_water_delivered)
    start = Fleet.generate(pumps=20, seed=5).pumps["pump-001"].total_water_delivered
    assert totals[0] == totals[1] > start


def test_report_moves_battery_and_pressure(emu: PortalEmulator) -> None:
    pid = next(
        p for p, pump in emu.fleet.pumps.items() if pump.battery and 10 < pump.battery["soc"] < 90
    )
    pump = emu.fleet.pumps[pid]
    before = (dict(pump.battery), pump.current_pressure)
    emu.report([pid])
    assert pump.battery["soc"] != before[0]["soc"]
    assert type(pump.battery["soc"]) is type(before[0]["soc"])
    assert pump.battery["voltage"] != before[0]["voltage"] or pump.current_pressure != before[1]


def test_report_never_seen_gets_details(emu: PortalEmulator) -> None:
    pid = next(p for p, pump in emu.fleet.pumps.items() if pump.last_seen is None)
    emu.report([pid])
    assert call(emu, f"/v1/pumps/{pid}/metadata").status_code == 200
    assert emu.fleet.listing_row(pid, emu.now)["pump"]["status"] == "running"


def test_set_last_seen_counter_reboot(emu: PortalEmulator) -> None:
    fleet = emu.fleet
    fleet.set_last_seen("pump-001", None)
    fleet.set_counter("pump-002", 3.5)
    fleet.reboot("pump-003")
    rows = call(emu, "/v1/pumps", limit=3).json()["controllers"]
    assert "last_seen" not in rows[0] and "last_heartbeat" not in rows[0]
    assert float(rows[1]["pump"]["total_water_delivered"]) == 3.5
    assert rows[2]["uptime"] == 0
    emu.advance(600)
    emu.report(["pump-003"])
    assert fleet.pumps["pump-003"].uptime == 600  # counted from the reboot, not the last report


def test_set_last_seen_backwards_is_offline(emu: PortalEmulator) -> None:
    active = call(emu, "/v1/stats").json()["statistics"]["active_controllers"]
    pid = next(
        p
        for p in emu.fleet.pump_ids()
        if emu.fleet.listing_row(p, emu.now)["pump"]["status"] in ("running", "idle")
    )
    emu.fleet.set_last_seen(pid, emu.now - timedelta(days=400))
    assert call(emu, "/v1/stats").json()["statistics"]["active_controllers"] == active - 1
    assert emu.fleet.listing_row(pid, emu.now)["last_seen"].startswith("2024-02-14")


# ----------------------------------------------------------------------------- listing changes
def test_add_pump_shifts_page_boundary(emu: PortalEmulator) -> None:
    first = [r["pump_id"] for r in call(emu, "/v1/pumps", page=1, limit=10).json()["controllers"]]
    new = emu.fleet.add_pump(user_ids=(101,))
    second = [r["pump_id"] for r in call(emu, "/v1/pumps", page=2, limit=10).json()["controllers"]]
    assert new == "pump-301"
    assert emu.fleet.pump_ids()[0] == new
    assert second[0] == first[-1]  # the last row of page 1 is served again on page 2
    assert call(emu, "/v1/stats").json()["statistics"]["total_controllers"] == 301


def test_remove_and_restore_pump(emu: PortalEmulator) -> None:
    before = emu.fleet.pump_ids()
    emu.fleet.remove_pump(before[3])
    page2 = [r["pump_id"] for r in call(emu, "/v1/pumps", page=2, limit=10).json()["controllers"]]
    assert page2 == before[11:21]  # before[10] moved to page 1: a real offset-paging skip
    assert call(emu, "/v1/stats").json()["statistics"]["total_controllers"] == 299
    assert all(before[3] not in emu.fleet.user_pump_ids(uid) for uid in emu.fleet.user_ids())
    emu.fleet.restore_pump(before[3])
    assert emu.fleet.pump_ids() == before


def test_add_pump_position_and_owner(emu: PortalEmulator) -> None:
    pid = emu.fleet.add_pump(pump_id="pump-x", user_ids=(101, 102), owner_user_id=102, position=5)
    assert emu.fleet.pump_ids()[5] == pid
    assert emu.fleet.users[101].pumps[pid] is False and emu.fleet.users[102].pumps[pid] is True
    outside = emu.fleet.add_pump(user_ids=(103,), owner_user_id=0, position=None)
    assert emu.fleet.pump_ids()[-1] == outside
    assert emu.fleet.listing_row(outside, emu.now)["is_owner"] == 0


def test_move_pump_changes_user_views(emu: PortalEmulator) -> None:
    fleet = emu.fleet
    pid = next(p for p, own in fleet.users[101].pumps.items() if own)
    fleet.move_pump(pid, 101, 105, is_owner=True)
    assert pid not in fleet.user_pump_ids(101) and pid in fleet.user_pump_ids(105)
    rows = call(emu, "/v1/users/105/summary", limit=100).json()["controllers"]
    assert any(r["pump_id"] == pid and r["is_owner"] == 1 for r in rows)


def test_on_request_callback_shifts_listing_between_pages(emu: PortalEmulator) -> None:
    seen: list[RequestInfo] = []

    def hook(info: RequestInfo) -> None:
        seen.append(info)
        if info.template == "/v1/pumps" and info.query.get("page") == "2":
            emu.fleet.add_pump(user_ids=(101,), position=0)

    emu.on_request(hook)
    page1 = call(emu, "/v1/pumps", page=1, limit=10).json()["controllers"]
    page2 = call(emu, "/v1/pumps", page=2, limit=10).json()["controllers"]
    emu.on_request(None)
    call(emu, "/v1/pumps", page=2, limit=10)
    assert page2[0]["pump_id"] == page1[-1]["pump_id"]
    assert len(seen) == 2 and seen[1].path == "/v1/pumps"
    assert len(emu.fleet.pump_ids()) == 301


# ----------------------------------------------------------------------------- observation
def test_counts_and_records(emu: PortalEmulator) -> None:
    emu.reset_counts()
    call(emu, "/v1/pumps", page=2, limit=5)
    call(emu, "/v1/pumps/pump-001/metadata", key="revoked")
    call(emu, "/v1/nothing")
    assert emu.counts == {"/v1/pumps": 1, "/v1/pumps/:pumpId/metadata": 1, "other": 1}
    assert emu.status_counts == {
        ("/v1/pumps", 200): 1,
        ("/v1/pumps/:pumpId/metadata", 401): 1,
        ("other", 404): 1,
    }
    first, second, _ = emu.requests
    assert (first.method, first.path, first.query, first.status, first.key_name) == (
        "GET",
        "/v1/pumps",
        {"page": "2", "limit": "5"},
        200,
        "full",
    )
    assert second.key_name == "revoked" and second.request_id.startswith("req_")
    emu.reset_counts()
    assert not emu.counts and not emu.status_counts and emu.requests == []


# ----------------------------------------------------------------------------- faults
def test_inject_error_with_retry_after(emu: PortalEmulator) -> None:
    emu.inject("/v1/pumps", status=503, code="unavailable", times=2, retry_after=3)
    for _ in range(2):
        response = call(emu, "/v1/pumps")
        assert (response.status_code, error_code(response)) == (503, "unavailable")
        assert response.headers["Retry-After"] == "3"
        assert response.headers["X-Request-ID"] == response.json()["error"]["request_id"]
    assert call(emu, "/v1/pumps").status_code == 200
    assert call(emu, "/v1/stats").status_code == 200


def test_inject_without_request_id_header(emu: PortalEmulator) -> None:
    emu.inject("/v1/stats", request_id_header=False)
    response = call(emu, "/v1/stats")
    assert response.status_code == 500 and "X-Request-ID" not in response.headers
    assert response.json()["error"]["request_id"].startswith("req_")


def test_inject_match_targets_one_page(emu: PortalEmulator) -> None:
    emu.inject("/v1/pumps", status=500, match="page=3")
    assert call(emu, "/v1/pumps", page=2).status_code == 200
    assert call(emu, "/v1/pumps", page=3).status_code == 500
    assert call(emu, "/v1/pumps", page=3).status_code == 200


def test_inject_bad_json(emu: PortalEmulator) -> None:
    emu.inject("/v1/pumps", kind="bad_json")
    response = call(emu, "/v1/pumps")
    assert response.status_code == 200 and response.content
    with pytest.raises(ValueError):
        json.loads(response.content)


def test_inject_html(emu: PortalEmulator) -> None:
    emu.inject("/v1/pumps/:pumpId/summary", kind="html", status=502)
    response = call(emu, "/v1/pumps/pump-001/summary")
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text


def test_inject_empty(emu: PortalEmulator) -> None:
    emu.inject("/v1/stats", kind="empty")
    response = call(emu, "/v1/stats")
    assert response.status_code == 200 and response.content == b""


def test_inject_reset(emu: PortalEmulator) -> None:
    emu.inject("/v1/stats", kind="reset")
    with pytest.raises(requests.ConnectionError):
        call(emu, "/v1/stats")
    assert call(emu, "/v1/stats").status_code == 200
    assert emu.status_counts[("/v1/stats", 0)] == 1


def test_inject_rejects_unknown_template(emu: PortalEmulator) -> None:
    with pytest.raises(ValueError):
        emu.inject("/v1/pump")


# ----------------------------------------------------------------------------- rate limit
def test_rate_limit_429_with_retry_after() -> None:
    limit = RateLimit(requests=5, window=0.5)
    with PortalEmulator(Fleet.generate(pumps=10, seed=1), rate_limit=limit) as emu:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {emu.keys.full}"}
        responses = [
            session.get(emu.url + "/v1/stats", headers=headers, timeout=5) for _ in range(8)
        ]
        limited = [r for r in responses if r.status_code == 429]
        assert [r.status_code for r in responses].count(200) == 5
        assert len(limited) == 3
        assert all(
            error_code(r) == "rate_limited" and r.headers["Retry-After"] == "1" for r in limited
        )
        assert emu.rate_limited_per_window == {0: 3}
        time.sleep(0.5)
        assert session.get(emu.url + "/v1/stats", headers=headers, timeout=5).status_code == 200


# ----------------------------------------------------------------------------- transport
def test_latency_overlaps_concurrent_requests() -> None:
    with PortalEmulator(Fleet.generate(pumps=10, seed=1), latency=0.2) as emu:
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: call(emu, "/v1/stats").status_code, range(8)))
        elapsed = time.perf_counter() - started
    assert statuses == [200] * 8
    assert 0.2 <= elapsed < 0.8


def test_keep_alive_reuses_connection(shared: PortalEmulator) -> None:
    host, port = shared.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"Authorization": f"Bearer {shared.keys.full}"}
    statuses = []
    for path in ("/v1/stats", "/v1/pumps/nope/metadata", "/v1/pumps?limit=3"):
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        assert response.getheader("Content-Length") == str(len(response.read()))
        statuses.append(response.status)
        if path == "/v1/stats":
            sock = connection.sock
        assert connection.sock is sock and not response.will_close
    connection.close()
    assert statuses == [200, 403, 200]


def test_stop_refuses_connections() -> None:
    emu = PortalEmulator(Fleet.generate(pumps=5, seed=1))
    url = emu.start()
    session = requests.Session()
    assert session.get(url + "/v1/stats", timeout=5).status_code == 401
    emu.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url + "/v1/stats", timeout=5)


def test_handler_threads_see_hook_errors(emu: PortalEmulator) -> None:
    def boom(info: RequestInfo) -> None:
        raise RuntimeError("hook failed")

    emu.on_request(boom)
    response = call(emu, "/v1/stats")
    emu.on_request(None)
    assert (response.status_code, error_code(response)) == (500, "internal_error")
    assert isinstance(emu.errors[0], RuntimeError)


def test_concurrent_mutation_is_safe(emu: PortalEmulator) -> None:
    stop = threading.Event()

    def mutate() -> None:
        while not stop.is_set():
            pid = emu.fleet.add_pump(user_ids=(101,))
            emu.report([pid])
            emu.fleet.remove_pump(pid)

    worker = threading.Thread(target=mutate)
    worker.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            statuses = list(
                pool.map(
                    lambda p: call(emu, "/v1/pumps", page=p).status_code, [1, 2, 3, 4, 5, 6] * 5
                )
            )
    finally:
        stop.set()
        worker.join()
    assert statuses == [200] * 30
    assert emu.errors == []


def test_emulator_does_not_import_pipelines() -> None:
    sources = (ROOT / "tests" / "portal_emulator").glob("*.py")
    assert not any(
        re.search(r"^\s*(from|import)\s+pipelines", path.read_text(), re.M) for path in sources
    )


# ----------------------------------------------------------------------------- CLI
def test_cli_ready_file_start_and_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.portal_emulator",
            "--pumps",
            "40",
            "--users",
            "3",
            "--seed",
            "7",
            "--port",
            "0",
            "--latency-ms",
            "0",
            "--rate-limit",
            "50/1",
            "--ready-file",
            str(ready),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 5
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        assert info["pid"] == process.pid
        assert set(info["keys"]) >= {"full", "revoked", "broken"}
        response = requests.get(
            info["url"] + "/v1/stats",
            timeout=5,
            headers={"Authorization": f"Bearer {info['keys']['full']}"},
        )
        assert response.json()["statistics"]["total_controllers"] == 40
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert f"url {info['url']}" in out and f"key full {info['keys']['full']}" in out
    assert not ready.exists()
