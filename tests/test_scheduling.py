"""The sync as a scheduled job beside BI readers, with real processes.

Overlapping runs, a reader holding the warehouse, a writer holding the working file, exit codes,
status, HTTPS and redirects.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from pipelines import cli
from tests.conftest import cli_environment
from tests.portal_emulator import Fleet, PortalEmulator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.generate(pumps=30, users=3, seed=13)


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "--log-level", "WARNING", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    process = start(env, *args)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_overlapping_run_exits_at_once_naming_the_running_one(emulator, tmp_path):
    env = cli_environment(emulator, tmp_path)
    first_detail = threading.Event()
    release = threading.Event()

    def hold_first_run(request):
        if request.template.startswith("/v1/pumps/:pumpId"):
            first_detail.set()
            release.wait(30)

    emulator.on_request(hold_first_run)
    first = start(env, "run")
    try:
        assert first_detail.wait(30)
        began = time.monotonic()
        second = run(env, "run")
        took = time.monotonic() - began
    finally:
        release.set()
        emulator.on_request(None)
    first.communicate(timeout=120)

    assert second.returncode == cli.EXIT_LOCKED
    assert f"pid {first.pid}" in second.stderr
    assert "another run of this pipeline is in progress" in second.stderr
    assert took < 15  # at once: no waiting on the other run
    assert first.returncode == cli.EXIT_OK


def test_killed_run_leaves_no_lock_behind(emulator, tmp_path):
    env = cli_environment(emulator, tmp_path)
    holding = threading.Event()

    def stall(request):
        if request.template.startswith("/v1/pumps/:pumpId"):
            holding.set()
            time.sleep(0.2)

    emulator.on_request(stall)
    first = start(env, "run")
    assert holding.wait(30)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    emulator.on_request(None)

    second = run(env, "run")

    assert second.returncode == cli.EXIT_OK, second.stderr


def test_reader_holding_the_warehouse_neither_blocks_nor_sees_half_a_load(emulator, tmp_path):
    env = cli_environment(emulator, tmp_path)
    assert run(env, "run").returncode == cli.EXIT_OK
    warehouse = tmp_path / "pump_portal_warehouse.duckdb"
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
            "print(c.execute('select count(*) from pump_portal.fleet_snapshots').fetchone()[0], "
            "flush=True); sys.stdin.readline(); "
            "print(c.execute('select count(*) from pump_portal.fleet_snapshots').fetchone()[0], "
            "flush=True)",
            str(warehouse),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "1"  # the reader holds the file open now
        emulator.advance(600)
        second = run(env, "run")
        reader.stdin.write("\n")
        reader.stdin.flush()
        still_reading = reader.stdout.readline().strip()
    finally:
        reader.kill()

    assert second.returncode == cli.EXIT_OK, second.stderr
    assert still_reading == "1"  # its snapshot stays whole while the new one is published
    with duckdb.connect(str(warehouse), read_only=True) as fresh:
        assert fresh.execute("select count(*) from pump_portal.fleet_snapshots").fetchone() == (2,)


def test_writer_holding_the_working_file_fails_the_run_clearly_after_bounded_waits(
    emulator, tmp_path
):
    env = {**cli_environment(emulator, tmp_path), "SYNC__LOCK_WAIT_SECONDS": "1.5"}
    working = tmp_path / "pump_portal_sync.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.readline()",
            str(working),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        emulator.reset_counts()
        blocked = run(env, "run")
    finally:
        holder.kill()
        holder.wait()

    assert blocked.returncode == cli.EXIT_DESTINATION
    assert f"(pid {holder.pid})" in blocked.stderr
    assert "waiting" in blocked.stderr  # the waits were logged
    assert "Traceback" not in blocked.stderr
    assert sum(emulator.counts.values()) == 0  # nothing extracted, so nothing can be lost

    recovered = run(env, "run")
    assert recovered.returncode == cli.EXIT_OK, recovered.stderr


def test_exit_code_success_then_partial(fleet, tmp_path):
    fleet.missing_detail_pumps.clear()
    with PortalEmulator(fleet) as emu:
        env = cli_environment(emu, tmp_path)
        assert run(env, "run").returncode == cli.EXIT_OK
        pump = fleet.pump_ids()[0]
        fleet.forbidden_detail_pumps.add(pump)
        emu.advance(600)
        emu.report([pump])  # it reported, so its details are fetched, and refused
        partial = run(env, "run")
    assert partial.returncode == cli.EXIT_PARTIAL
    assert "skipped 2 (forbidden 2)" in partial.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"SOURCES__PUMP_PORTAL__API_KEY": ""}, "api_key"),
        ({"SOURCES__PUMP_PORTAL__BASE_URL": "ftp://portal.example.com"}, "http(s) origin"),
        ({"SOURCES__PUMP_PORTAL__BASE_URL": "http://portal.example.com"}, "plain HTTP"),
    ],
)
def test_exit_code_configuration_error(emulator, tmp_path, change, expected):
    env = {**cli_environment(emulator, tmp_path), **change}
    if change.get("SOURCES__PUMP_PORTAL__API_KEY") == "":
        del env["SOURCES__PUMP_PORTAL__API_KEY"]
        env["DLT_PROJECT_DIR"] = str(tmp_path)  # no .dlt/secrets.toml to fall back to
    emulator.reset_counts()

    completed = run(env, "run")

    assert completed.returncode == cli.EXIT_CONFIG, completed.stderr
    assert expected in completed.stderr
    assert "Traceback" not in completed.stderr
    assert sum(emulator.counts.values()) == 0


class _Recorder(BaseHTTPRequestHandler):
    seen_authorization: list[str | None] = []
    redirect_to = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        type(self).seen_authorization.append(self.headers.get("Authorization"))
        body = b'{"statistics": {}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_authorization_never_follows_a_redirect_to_another_origin(tmp_path):
    class Elsewhere(_Recorder):
        seen_authorization: list[str | None] = []

    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)

    class Portal(_Recorder):
        redirect_to = f"http://127.0.0.1:{elsewhere.server_address[1]}"

    portal = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    for server in (elsewhere, portal):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            "SOURCES__PUMP_PORTAL__BASE_URL": f"http://127.0.0.1:{portal.server_address[1]}",
            "SOURCES__PUMP_PORTAL__API_KEY": "pcv_redirect_test_key",
            "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "r.duckdb"),
            "SYNC__PUBLISH_TO": str(tmp_path / "w.duckdb"),
            "PIPELINES__PUMP_PORTAL__PIPELINES_DIR": str(tmp_path / "pipelines"),
        }
        completed = run(env, "run")
    finally:
        portal.shutdown()
        elsewhere.shutdown()

    assert Elsewhere.seen_authorization == []
    assert completed.returncode == cli.EXIT_CONFIG
    assert "another origin" in completed.stderr


def test_status_reports_freshness_and_exits_non_zero_when_stale(emulator, tmp_path):
    env = cli_environment(emulator, tmp_path)
    assert run(env, "status").returncode == 11  # nothing synced yet
    assert run(env, "run").returncode == cli.EXIT_OK

    fresh = run(env, "status")
    stale = run(env, "status", "--max-age-minutes", "0")

    assert fresh.returncode == 0, fresh.stdout
    assert "success" in fresh.stdout and "latest fleet snapshot" in fresh.stdout
    assert stale.returncode == 11
    assert "STALE" in stale.stdout
