"""The published copy opens in an older DuckDB reader, and replacing it never disturbs a reader.

duckdb 2.x writes a storage format that every 1.x reader refuses, and BI tools and the `duckdb`
CLI lag behind the python package. So these tests open the published file with a real 1.x
reader: the `duckdb` CLI from the `duckdb-cli` package (a dev dependency).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.reader_copies import publish

OLDER_READER = Path(sys.executable).parent / "duckdb"

CONTROLLERS = """
create table pump_portal.controllers (
    pump_id text,
    observed_at timestamptz,
    water_delivered double,
    counter bigint,
    is_online boolean,
    payload json
)
"""
ROWS = """
insert into pump_portal.controllers values
    ('pump-001', '2026-03-01 12:34:56.123456+00', 1234.5, 9007199254740993, true,
     '{"alarms": [1, 2], "name": "nord"}'),
    ('pump-002', '2026-03-02 00:00:00+02', 0.1, -1, false, null)
"""
# The models are views in their own schema over the raw tables in pump_portal.
ONLINE_VIEW = """
create view pump_portal_models.online_controllers as
select pump_id, observed_at, payload from pump_portal.controllers where is_online
"""


def make_working_file(path: Path) -> Path:
    with duckdb.connect(str(path)) as connection:
        connection.execute("create schema pump_portal")
        connection.execute("create schema pump_portal_models")
        connection.execute(CONTROLLERS)
        connection.execute(ROWS)
        connection.execute(ONLINE_VIEW)
    return path


@pytest.fixture
def older_reader() -> Path:
    if not OLDER_READER.exists():
        reason = f"no duckdb CLI at {OLDER_READER}: `make install` installs duckdb-cli (dev)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs the dev extras, so a missing reader is a bug there
        pytest.skip(reason)
    return OLDER_READER


def read_with(reader: Path, database: Path, sql: str) -> subprocess.CompletedProcess[str]:
    # Times rendered in UTC, so the text does not depend on the machine's time zone.
    return subprocess.run(
        [str(reader), "-readonly", str(database), "-json", f"set timezone = 'utc'; {sql}"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def query_with(reader: Path, database: Path, sql: str) -> list[dict[str, Any]]:
    completed = read_with(reader, database, sql)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout or "[]")


def test_an_older_reader_opens_the_published_file_with_exact_rows(
    older_reader: Path, tmp_path: Path
) -> None:
    working = make_working_file(tmp_path / "sync.duckdb")
    published = publish(working, tmp_path / "readers" / "warehouse.duckdb")

    rows = query_with(
        older_reader,
        published,
        "select pump_id, observed_at::text as observed_at, epoch_us(observed_at) as observed_us, "
        "water_delivered, counter, is_online, payload::text as payload, "
        "typeof(observed_at) as observed_type, typeof(payload) as payload_type "
        "from pump_portal.controllers order by pump_id",
    )

    assert rows == [
        {
            "pump_id": "pump-001",
            "observed_at": "2026-03-01 12:34:56.123456+00",
            "observed_us": 1772368496123456,
            "water_delivered": 1234.5,
            "counter": 9007199254740993,  # above 2**53: would not survive a trip through a double
            "is_online": True,
            "payload": '{"alarms": [1, 2], "name": "nord"}',
            "observed_type": "TIMESTAMP WITH TIME ZONE",
            "payload_type": "JSON",
        },
        {
            "pump_id": "pump-002",
            "observed_at": "2026-03-01 22:00:00+00",
            "observed_us": 1772402400000000,
            "water_delivered": 0.1,
            "counter": -1,
            "is_online": False,
            "payload": None,
            "observed_type": "TIMESTAMP WITH TIME ZONE",
            "payload_type": "JSON",
        },
    ]


def test_a_view_across_schemas_works_in_the_older_reader(
    older_reader: Path, tmp_path: Path
) -> None:
    working = make_working_file(tmp_path / "sync.duckdb")
    published = publish(working, tmp_path / "readers" / "warehouse.duckdb")

    rows = query_with(
        older_reader,
        published,
        "select pump_id, observed_at::text as observed_at, payload "
        "from pump_portal_models.online_controllers",
    )

    assert rows == [
        {
            "pump_id": "pump-001",
            "observed_at": "2026-03-01 12:34:56.123456+00",
            "payload": {"alarms": [1, 2], "name": "nord"},
        }
    ]


def test_the_older_reader_refuses_a_file_in_duckdbs_default_format(
    older_reader: Path, tmp_path: Path
) -> None:
    # Proves the reader really is older than the writer: without publish() it cannot read.
    working = make_working_file(tmp_path / "sync.duckdb")

    completed = read_with(older_reader, working, "select count(*) from pump_portal.controllers")

    assert completed.returncode != 0
    assert "Trying to read a database file with version number" in completed.stderr


def test_publish_replaces_the_file_under_a_reader_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    working = make_working_file(tmp_path / "sync.duckdb")
    readers = tmp_path / "readers"
    published = publish(working, readers / "warehouse.duckdb")
    count = "select count(*) from pump_portal.controllers"
    with duckdb.connect(str(published), read_only=True) as holder:
        assert holder.execute(count).fetchone() == (2,)
        with duckdb.connect(str(working)) as writer:
            writer.execute("insert into pump_portal.controllers (pump_id) values ('pump-003')")

        publish(working, published)

        assert holder.execute(count).fetchone() == (2,)  # still reads the snapshot it opened
        # A fresh database instance: connect(path) would hand back the holder's cached one.
        with duckdb.connect() as fresh:
            fresh.execute("attach ? as published (read_only)", [str(published)])
            rows = fresh.execute("select count(*) from published.pump_portal.controllers")
            assert rows.fetchone() == (3,)
    # The published path is a symlink to one of two copies, each written and renamed whole.
    assert sorted(path.name for path in readers.iterdir()) == [
        "warehouse.duckdb",
        "warehouse.duckdb.a",
        "warehouse.duckdb.b",
    ]


def test_a_failed_publish_removes_its_temporary_file(tmp_path: Path) -> None:
    working = make_working_file(tmp_path / "sync.duckdb")
    readers = tmp_path / "readers"
    (readers / "warehouse.duckdb").mkdir(parents=True)  # the rename over it fails

    with pytest.raises(OSError):
        publish(working, readers / "warehouse.duckdb")

    assert sorted(path.name for path in readers.iterdir()) == ["warehouse.duckdb"]
