"""Every error row of the API reference, through real HTTP: what the run does, what it says."""

from __future__ import annotations

import pytest

from pipelines import cli
from pipelines.pump_portal import settings
from tests.conftest import cli_environment, rows, scalar, sync
from tests.portal_emulator import Fleet, PortalEmulator

PUMP_METADATA = "/v1/pumps/:pumpId/metadata"
USER_SUMMARY = "/v1/users/:userId/summary"


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.generate(pumps=40, users=4, seed=11)


def run_cli(emu: PortalEmulator, key: str, tmp_path, monkeypatch, capsys, *args: str):
    for name, value in cli_environment(emu, tmp_path, key).items():
        monkeypatch.setenv(name, value)
    code = cli.main(["--log-level", "WARNING", "run", *args])
    out, err = capsys.readouterr()
    return code, out, err


def last_error_line(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("ERROR:"))


@pytest.mark.parametrize(
    ("key_name", "code"), [("revoked", "invalid_api_key"), ("malformed", "unauthorized")]
)
def test_401_stops_the_run_with_one_clear_line(
    emulator, tmp_path, monkeypatch, capsys, key_name, code
):
    key = "not a pcv key" if key_name == "malformed" else emulator.keys.revoked
    exit_code, _, err = run_cli(emulator, key, tmp_path, monkeypatch, capsys)

    assert exit_code == cli.EXIT_AUTH
    request_id = emulator.requests[-1].request_id
    line = last_error_line(err)
    assert code in line and "HTTP 401" in line and request_id in line
    assert "SOURCES__PUMP_PORTAL__API_KEY" in err
    assert "Traceback" not in err


def test_500_internal_error_retries_then_stops(emulator, tmp_path, monkeypatch, capsys):
    exit_code, _, err = run_cli(emulator, emulator.keys.broken, tmp_path, monkeypatch, capsys)

    assert exit_code == cli.EXIT_API_UNAVAILABLE
    # one attempt + every retry on the first request; nothing else is attempted
    assert sum(emulator.counts.values()) == 1 + settings.DEFAULT_MAX_RETRIES
    line = last_error_line(err)
    assert "internal_error" in line and emulator.requests[-1].request_id in line
    assert "Traceback" not in err


def test_500_then_success_is_retried_transparently(emulator, pipeline):
    emulator.inject(PUMP_METADATA, status=500, code="internal_error", times=2)
    emulator.inject("/v1/stats", status=502, kind="html", times=1)
    emulator.inject("/v1/delegated-users", kind="bad_json", times=1)
    emulator.inject("/v1/pumps", kind="reset", times=1)

    result = sync(emulator, pipeline)

    assert result.error is None
    assert result.report.client_stats.retries == 5
    assert scalar(pipeline, "select count(*) from fleet_snapshots") == 1
    assert scalar(pipeline, "select count(*) from delegated_users") == 4


def test_403_no_delegated_users_loads_no_users_and_succeeds(emulator, pipeline):
    result = sync(emulator, pipeline, key=emulator.keys.no_users)

    assert result.outcome == "success"
    assert any("no delegated users" in w for w in result.report.warnings)
    assert scalar(pipeline, "select count(*) from fleet_snapshots") == 1
    tables = {r[0] for r in rows(pipeline, "select table_name from information_schema.tables")}
    assert (
        "delegated_users" not in tables
        or scalar(pipeline, "select count(*) from delegated_users") == 0
    )


def test_403_insufficient_scope_pumps_only_key(emulator, fleet, pipeline):
    result = sync(emulator, pipeline, key=emulator.keys.pumps_only)

    assert result.outcome == "partial"
    assert scalar(pipeline, "select count(*) from controllers") == 40
    # the fleet history still gets its snapshot, from GET /v1/pumps
    assert rows(pipeline, "select source_endpoint, total_controllers from fleet_snapshots") == [
        ("/v1/pumps", 40)
    ]
    skipped = rows(
        pipeline, "select resource, code from skipped_items where item_kind = 'resource'"
    )
    assert skipped == [("delegated_users", "insufficient_scope")]
    assert len([w for w in result.report.warnings if "delegated_users" in w]) == 1


def test_403_insufficient_scope_stats_only_key(emulator, fleet, pipeline):
    result = sync(emulator, pipeline, key=emulator.keys.stats_only)

    assert result.outcome == "partial"
    assert rows(pipeline, "select source_endpoint, total_controllers from fleet_snapshots") == [
        ("/v1/stats", 40)
    ]
    assert scalar(pipeline, "select count(*) from delegated_users") == 4
    skipped = rows(pipeline, "select resource, code from skipped_items order by resource")
    assert skipped == [
        ("controllers", "insufficient_scope"),
        ("user_pump_links", "insufficient_scope"),
    ]
    # one warning per resource, and no per-pump calls at all
    assert emulator.counts[PUMP_METADATA] == 0
    assert emulator.counts[USER_SUMMARY] <= 4


def test_403_forbidden_user_is_skipped_and_recorded(emulator, fleet, pipeline):
    user_id = fleet.user_ids()[1]
    fleet.inactive_users.add(user_id)

    result = sync(emulator, pipeline)

    assert result.error is None
    skipped = rows(
        pipeline,
        "select item_kind, item_id, code, http_status from skipped_items "
        "where resource = 'user_pump_links'",
    )
    assert skipped == [("user", str(user_id), "forbidden", 403)]
    assert scalar(pipeline, f"select count(*) from user_pump_links where user_id = {user_id}") == 0
    others = sum(len(fleet.user_pump_ids(u)) for u in fleet.user_ids() if u != user_id)
    assert scalar(pipeline, "select count(*) from user_pump_links") == others


def test_400_invalid_pagination_names_the_parameter(emulator, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOURCES__PUMP_PORTAL__PAGE_SIZE", "500")
    exit_code, _, err = run_cli(emulator, emulator.keys.full, tmp_path, monkeypatch, capsys)

    assert exit_code == cli.EXIT_BAD_REQUEST
    line = last_error_line(err)
    assert "invalid_pagination" in line and "limit" in line
    assert "page_size" in err
    # a bad setting is not retried
    assert emulator.counts["/v1/pumps"] == 1


def test_400_invalid_user_id_is_a_clear_error(emulator, pipeline):
    emulator.inject(USER_SUMMARY, status=400, code="invalid_user_id", times=None)

    result = sync(emulator, pipeline)

    assert result.outcome == "failed"
    assert result.error.code == "invalid_user_id" and result.error.status == 400
    assert "/v1/users/" in str(result.error)
    # not retried: nothing transient about it (other users' calls were already in flight)
    paths = [r.path for r in emulator.requests if r.template == USER_SUMMARY]
    assert len(paths) == len(set(paths))


def test_failed_run_loads_nothing_and_keeps_state(emulator, fleet, pipeline):
    emulator.inject(PUMP_METADATA, status=500, code="internal_error", times=None)

    failed = sync(emulator, pipeline)
    emulator.clear_faults()
    emulator.reset_counts()
    recovered = sync(emulator, pipeline)

    assert failed.outcome == "failed"
    assert recovered.error is None
    assert recovered.report.pumps_changed == 40
    assert scalar(pipeline, "select count(*) from controllers") == 40
    assert scalar(pipeline, "select count(*) from pump_metadata") == 40 - len(
        fleet.missing_detail_pumps
    )


def test_429_waits_retry_after_and_never_fails(emulator, pipeline):
    emulator.inject("/v1/pumps", status=429, code="rate_limited", retry_after=1, times=2)
    emulator.inject("/v1/stats", status=429, code="rate_limited", retry_after=1, times=1)

    result = sync(emulator, pipeline)

    assert result.error is None
    assert result.report.client_stats.rate_limited == 3
    assert result.report.client_stats.retries == 0
    assert scalar(pipeline, "select count(*) from controllers") == 40


def test_403_key_without_any_read_scope_is_an_auth_failure(emulator, tmp_path, monkeypatch, capsys):
    exit_code, _, err = run_cli(emulator, emulator.keys.no_scope, tmp_path, monkeypatch, capsys)

    assert exit_code == cli.EXIT_AUTH
    assert "insufficient_scope" in last_error_line(err)
    assert emulator.counts["/v1/pumps/:pumpId/metadata"] == 0
