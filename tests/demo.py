"""`make demo`: an emulated portal, a full sync into var/demo/, what was loaded, the fleet report.

The emulator runs as its own process and the sync runs through the real command line
(`python -m pipelines.cli run`), configured by environment variables exactly as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "var" / "demo"
DATABASE = DEMO_DIR / "pump_portal_warehouse.duckdb"  # the published copy readers use


def start_emulator(ready_file: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.portal_emulator",
            "--pumps",
            "300",
            "--users",
            "12",
            "--seed",
            "7",
            # The portal's clock is the real one, as a real portal's: with the emulator's fixed
            # 2025 default every pump's last_seen is a year before the sync, and the models (and
            # the report) would call the whole fleet offline.
            "--start",
            "now",
            "--port",
            "0",
            "--ready-file",
            str(ready_file),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not ready_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the portal emulator did not start")
        time.sleep(0.05)
    return process


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)  # a demo is always a full sync from scratch
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        ready_file = Path(scratch) / "ready.json"
        emulator = start_emulator(ready_file)
        try:
            portal = json.loads(ready_file.read_text())
            env = {
                **os.environ,
                "SOURCES__PUMP_PORTAL__BASE_URL": portal["url"],
                "SOURCES__PUMP_PORTAL__API_KEY": portal["keys"]["full"],
                "PIPELINES__PUMP_PORTAL__DESTINATION_TYPE": "duckdb",
                "DESTINATION__DUCKDB__CREDENTIALS": str(DEMO_DIR / "pump_portal_sync.duckdb"),
                "SYNC__PUBLISH_TO": str(DATABASE),
                "PIPELINES__PUMP_PORTAL__PIPELINES_DIR": str(DEMO_DIR / "pipelines"),
            }
            print(f"emulated portal at {portal['url']} (300 pumps, 12 users)\n", flush=True)
            code = subprocess.call(
                [sys.executable, "-m", "pipelines.cli", "--log-level", "WARNING", "run"],
                cwd=ROOT,
                env=env,
            )
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    if code not in (0, 10):
        print(f"\nthe sync failed (exit {code})", file=sys.stderr)
        return code
    show(DATABASE)
    # Last, so the demo ends with the page's path: `pump-portal report` prints it.
    print("\nthe fleet report (open it in a browser; it needs no network):", flush=True)
    return subprocess.call(
        [sys.executable, "-m", "pipelines.cli", "--log-level", "WARNING", "report"],
        cwd=ROOT,
        env=env,
    )


def show(database: Path) -> None:
    with duckdb.connect(str(database), read_only=True) as con:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('pump_portal', 'pump_portal_models') "
            "and table_name not like '\\_dlt%' escape '\\' "
            "order by table_schema, table_name"
        ).fetchall()
        print(f"\nloaded into {database}:")
        for schema, table in tables:
            count = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
            print(f"  {schema}.{table:<48} {count:>7} rows")
        if any(t == "fleet_history" for _, t in tables):
            cursor = con.execute(
                "select * from pump_portal_models.fleet_history order by 1 desc limit 5"
            )
            names = [d[0] for d in cursor.description]
            print("\npump_portal_models.fleet_history (latest days):")
            for row in cursor.fetchall():
                for name, value in zip(names, row, strict=True):
                    print(f"  {name:<32} {value}")
    print(
        "\nexample query:\n"
        f"  duckdb -readonly {database} \\\n"
        '    "select pump_id, custom_name, pump__total_water_delivered, battery__soc\n'
        '     from pump_portal.controllers order by pump__total_water_delivered desc limit 5"'
    )


if __name__ == "__main__":
    sys.exit(main())
