"""Publishing updates the reader copy in place when it can, and readers never notice how.

The published path is a symlink to one of two copies; each publish brings the other one up to
date (in place, or by a full copy while a reader holds it) and swaps the symlink. These tests use
real DuckDB files, real syncs against the emulated portal and real reader processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest

from pipelines.deployment import ConfigError, SyncSettings
from pipelines.models import build_models
from pipelines.reader_copies import (
    PublishFailed,
    PublishReport,
    copy_files,
    publish_copy,
    skipped_for_readers,
)
from pipelines.runner import make_pipeline
from tests.conftest import sync
from tests.portal_emulator import PortalEmulator

# What the run leaves out for readers: the models' intermediate tables and dlt's staging tables.
SKIP = skipped_for_readers("pump_portal", "pump_portal_models")

# A reader in its own process: opens a file read-only, answers one query per stdin line.
READER = """
import sys, duckdb
db = duckdb.connect(sys.argv[1], read_only=True)
print("ready", flush=True)
for line in sys.stdin:
    print(db.execute(line).fetchone()[0], flush=True)
"""


@contextmanager
def reader_holding(path: Path) -> Iterator[Callable[[str], str]]:
    """A reader process holding `path` open; yields a function that asks it one query."""
    process = subprocess.Popen(
        [sys.executable, "-c", READER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def ask(sql: str) -> str:
        assert process.stdin and process.stdout
        process.stdin.write(sql + "\n")
        process.stdin.flush()
        answer = process.stdout.readline()
        assert answer, f"the reader died: {process.stderr.read() if process.stderr else ''}"
        return answer.strip()

    try:
        assert process.stdout and process.stdout.readline().strip() == "ready"
        yield ask
    finally:
        if process.stdin:
            process.stdin.close()
        process.wait(timeout=30)


def relations(connection: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    """(schema, name) -> 'table' or 'view' of the connection's own database."""
    found = connection.execute(
        "select schema_name, table_name, 'table' from duckdb_tables() "
        "where database_name = current_database() "
        "union all select schema_name, view_name, 'view' from duckdb_views() "
        "where database_name = current_database() and not internal"
    ).fetchall()
    return {(schema, name): kind for schema, name, kind in found}


def fingerprint(path: Path) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Per relation: its kind, row count and a hash of its content (independent of row order)."""
    # A fresh database instance: connect(path) could hand back one this process still holds.
    with duckdb.connect() as connection:
        connection.execute("attach ? as db (read_only)", [str(path)])
        connection.execute("use db")
        prints = {}
        for (schema, name), kind in relations(connection).items():
            relation = f'"{schema}"."{name}"'
            count, digest = connection.execute(
                f"select count(*), sum(hash(r))::hugeint from {relation} as r"
            ).fetchone()
            prints[schema, name] = (kind, count, digest)
        return prints


def skipped(schema: str, name: str) -> bool:
    # `_model_state` tells the next publish which build the copy holds
    return schema == "pump_portal_staging" or (
        schema == "pump_portal_models_internal" and name != "_model_state"
    )


def assert_published_equals_working(working: Path, published: Path) -> None:
    expected = {key: value for key, value in fingerprint(working).items() if not skipped(*key)}
    assert any(skipped(*key) for key in fingerprint(working)), "nothing skipped: a weak test"
    assert fingerprint(published) == expected


def cycle(emulator: PortalEmulator, pipeline: dlt.Pipeline, pumps: int = 20) -> None:
    """Fifteen minutes later some pumps reported: a sync and the models, as a run does."""
    emulator.advance(900)
    emulator.report(emulator.fleet.pump_ids()[:pumps])
    result = sync(emulator, pipeline)
    assert result.error is None, result.error
    build_models(pipeline)


def test_the_published_copy_equals_the_working_file_after_every_publish(
    emulator: PortalEmulator, pipeline: dlt.Pipeline, duckdb_path: Path, tmp_path: Path
) -> None:
    published = tmp_path / "readers" / "published.duckdb"
    modes = []
    for _ in range(5):
        cycle(emulator, pipeline)
        report = publish_copy(duckdb_path, published, skip=SKIP)
        modes.append(report.mode)
        assert_published_equals_working(duckdb_path, published)

    # The first publish writes `.a`, the second `.b`; from then on each updates the other.
    assert modes == ["first copy", "full copy", "in place", "in place", "in place"]
    assert os.readlink(published) == f"{published.name}.a"
    assert sorted(path.name for path in published.parent.iterdir()) == [
        "published.duckdb",
        "published.duckdb.a",
        "published.duckdb.b",
    ]


def test_an_in_place_publish_writes_only_the_new_loads(
    emulator: PortalEmulator, pipeline: dlt.Pipeline, duckdb_path: Path, tmp_path: Path
) -> None:
    published = tmp_path / "published.duckdb"
    for _ in range(3):
        cycle(emulator, pipeline)
        publish_copy(duckdb_path, published, skip=SKIP)
    cycle(emulator, pipeline, pumps=3)

    in_place = publish_copy(duckdb_path, published, skip=SKIP)
    full = publish_copy(duckdb_path, tmp_path / "fresh.duckdb", skip=SKIP)

    assert (in_place.mode, full.mode) == ("in place", "first copy")
    assert in_place.rows_written < full.rows_written / 2
    assert_published_equals_working(duckdb_path, published)


def rows_written_per_table(records: list[logging.LogRecord]) -> dict[str, int]:
    """From the publish's debug log: rows written into each table of the copy."""
    written = {}
    for record in records:
        if record.name == "pipelines.reader_copies" and "rows written" in record.msg:
            schema, name, rows = record.args[:3]
            written[f"{schema}.{name}"] = rows
    return written


def test_an_in_place_publish_rewrites_only_the_mart_rows_the_builds_changed(
    emulator: PortalEmulator,
    pipeline: dlt.Pipeline,
    duckdb_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    published = tmp_path / "published.duckdb"
    for _ in range(4):  # a sync on each of four days
        emulator.advance(86_400)
        cycle(emulator, pipeline)
        publish_copy(duckdb_path, published, skip=SKIP)
    # The copy to update is two builds behind: it catches up on both builds' keys.
    cycle(emulator, pipeline, pumps=3)
    with duckdb.connect(str(duckdb_path), read_only=True) as working:
        (copy_build,) = working.execute(
            "select max(build_id) - 2 from pump_portal_models_internal._model_state"
        ).fetchone()
        (keys,) = working.execute(
            "select count(*) from (select distinct pump_id, day_date from "
            f"pump_portal_models_internal.controller_daily__changes where build_id > {copy_build})"
        ).fetchone()
        (live,) = working.execute(
            "select count(*) from pump_portal_models.controller_daily"
        ).fetchone()

    with caplog.at_level(logging.DEBUG, logger="pipelines.reader_copies"):
        report = publish_copy(duckdb_path, published, skip=SKIP)

    assert report.mode == "in place"
    written = rows_written_per_table(caplog.records)
    # the last two builds changed the day of their syncs: a row per pump of 300, of 4 days
    assert written["pump_portal_models.controller_daily"] == keys == 300
    assert live == 4 * 300
    assert_published_equals_working(duckdb_path, published)

    # Rebuilt whole, the mart's log starts again: the copies are rewritten once, then follow it.
    build_models(pipeline, full_refresh=True)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pipelines.reader_copies"):
        publish_copy(duckdb_path, published, skip=SKIP)
    assert rows_written_per_table(caplog.records)["pump_portal_models.controller_daily"] == live
    assert_published_equals_working(duckdb_path, published)


def test_a_reader_holding_the_copy_to_update_forces_a_full_copy(
    emulator: PortalEmulator, pipeline: dlt.Pipeline, duckdb_path: Path, tmp_path: Path
) -> None:
    published = tmp_path / "published.duckdb"
    for _ in range(3):
        cycle(emulator, pipeline)
        publish_copy(duckdb_path, published, skip=SKIP)
    first, second = copy_files(published)
    assert os.readlink(published) == first.name  # so the next publish writes `.b`
    count = "select count(*) from pump_portal._dlt_loads"
    with reader_holding(second) as reader:
        before = reader(count)
        cycle(emulator, pipeline)

        report = publish_copy(duckdb_path, published, skip=SKIP)

        assert report.mode == "full copy"
        assert report.reason.endswith(f"holds {second.name}")  # DuckDB named the reader
        assert reader(count) == before  # the reader kept the file it opened
    assert os.readlink(published) == second.name
    assert_published_equals_working(duckdb_path, published)
    assert publish_copy(duckdb_path, published, skip=SKIP).mode == "in place"


def test_a_reader_of_the_published_path_keeps_its_snapshot_while_the_publish_flips(
    emulator: PortalEmulator, pipeline: dlt.Pipeline, duckdb_path: Path, tmp_path: Path
) -> None:
    published = tmp_path / "published.duckdb"
    for _ in range(2):
        cycle(emulator, pipeline)
        publish_copy(duckdb_path, published, skip=SKIP)
    count = "select count(*) from pump_portal._dlt_loads"
    with reader_holding(published) as reader:
        before = int(reader(count))
        cycle(emulator, pipeline)

        report = publish_copy(duckdb_path, published, skip=SKIP)

        assert report.mode == "in place"  # the reader holds the other copy
        assert int(reader(count)) == before
        with reader_holding(published) as newcomer:
            assert int(newcomer(count)) > before

        cycle(emulator, pipeline)
        # Now the copy to update is the one the first reader holds.
        assert publish_copy(duckdb_path, published, skip=SKIP).mode == "full copy"
        assert int(reader(count)) == before
    assert_published_equals_working(duckdb_path, published)


def test_a_published_file_of_an_older_version_becomes_one_of_the_two_copies(
    emulator: PortalEmulator, pipeline: dlt.Pipeline, duckdb_path: Path, tmp_path: Path
) -> None:
    published = tmp_path / "published.duckdb"
    cycle(emulator, pipeline)
    # What an older version left: a regular file at the published path.
    shutil.copyfile(publish_copy(duckdb_path, tmp_path / "old.duckdb").target, published)
    count = "select count(*) from pump_portal._dlt_loads"
    with reader_holding(published) as reader:
        before = reader(count)
        cycle(emulator, pipeline)

        migrated = publish_copy(duckdb_path, published, skip=SKIP)

        assert reader(count) == before
    first, second = copy_files(published)
    assert migrated.mode == "full copy"
    assert published.is_symlink() and os.readlink(published) == first.name
    assert_published_equals_working(duckdb_path, published)

    cycle(emulator, pipeline)
    # The older file itself is updated: it was kept as `.b`.
    assert publish_copy(duckdb_path, published, skip=SKIP).mode == "in place"
    assert os.readlink(published) == second.name
    assert_published_equals_working(duckdb_path, published)


def test_a_broken_copy_is_replaced_by_a_full_copy(
    emulator: PortalEmulator, pipeline: dlt.Pipeline, duckdb_path: Path, tmp_path: Path
) -> None:
    published = tmp_path / "published.duckdb"
    for _ in range(2):
        cycle(emulator, pipeline)
        publish_copy(duckdb_path, published, skip=SKIP)
    first, _ = copy_files(published)
    first.write_bytes(b"not a database")

    report = publish_copy(duckdb_path, published, skip=SKIP)

    assert report.mode == "full copy"
    assert "could not be updated in place" in report.reason
    assert_published_equals_working(duckdb_path, published)


def test_schema_changes_in_the_working_file_reach_the_copy(tmp_path: Path) -> None:
    working = tmp_path / "sync.duckdb"
    published = tmp_path / "published.duckdb"
    with duckdb.connect(str(working)) as db:
        db.execute("create schema raw; create schema models")
        db.execute("create table raw.readings (id integer, _dlt_load_id varchar not null)")
        db.execute("insert into raw.readings select range, '1' from range(100)")
        db.execute("insert into raw.readings select range, '2' from range(100, 200)")
        db.execute("create table raw.gone (id integer)")
        db.execute("create view models.gone_view as select * from raw.gone")
        db.execute("create view models.readings_view as select * from raw.readings")
        db.execute("create view models.top as select * from readings_view")
        # Recreated after the view that reads it, as the model build does.
        db.execute("create or replace view models.readings_view as select * from raw.readings")
    for _ in range(2):
        publish_copy(working, published)
    with duckdb.connect(str(working)) as db:
        # dlt's schema evolution: a new nullable column, rows of a new load that fill it.
        db.execute("alter table raw.readings add column soc double")
        db.execute("insert into raw.readings select range, '3', 0.5 from range(200, 250)")
        db.execute("delete from raw.readings where id between 100 and 109")  # merged into 3
        db.execute("drop view models.gone_view; drop table raw.gone")
        db.execute("create table models.daily as select 1 as day")

    report = publish_copy(working, published)

    assert report.mode == "in place"
    # Load 2 again (its count changed), load 3, the model; load 1 stays as it was.
    assert report.rows_written == 90 + 50 + 1
    assert_published_equals_working_unskipped(working, published)


def assert_published_equals_working_unskipped(working: Path, published: Path) -> None:
    assert fingerprint(published) == fingerprint(working)


def test_a_published_view_of_a_skipped_relation_fails_before_writing(tmp_path: Path) -> None:
    working = tmp_path / "sync.duckdb"
    with duckdb.connect(str(working)) as db:
        db.execute("create schema models")
        db.execute("create table models.int_readings as select 1 as id")
        db.execute("create view models.readings as select * from int_readings")
    published = tmp_path / "published.duckdb"

    with pytest.raises(PublishFailed, match="models.readings reads models.int_readings"):
        publish_copy(working, published, skip=["models.int_*"])

    assert list(tmp_path.iterdir()) == [working]
    report = publish_copy(working, published, skip=["models.int_*", "models.readings"])
    assert isinstance(report, PublishReport)
    assert fingerprint(published) == {}


def test_memory_settings_reach_every_duckdb_connection_of_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "sync.duckdb"))
    monkeypatch.setenv("PIPELINES__PUMP_PORTAL__PIPELINES_DIR", str(tmp_path / "pipelines"))
    monkeypatch.setenv("SYNC__DUCKDB_MEMORY_LIMIT", "256MB")
    monkeypatch.setenv("SYNC__DUCKDB_THREADS", "1")
    monkeypatch.setenv("SYNC__DUCKDB_TEMP_DIRECTORY", str(tmp_path / "spill"))
    with duckdb.connect(config={"memory_limit": "256MB"}) as plain:
        expected = plain.execute("select current_setting('memory_limit')").fetchone()[0]

    with make_pipeline().sql_client() as client:
        settings = client.execute_sql(
            "select current_setting('memory_limit'), current_setting('threads'), "
            "current_setting('temp_directory')"
        )

    assert settings == [(expected, 1, str(tmp_path / "spill"))]


def test_the_default_memory_settings_bound_duckdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "sync.duckdb"))
    monkeypatch.setenv("PIPELINES__PUMP_PORTAL__PIPELINES_DIR", str(tmp_path / "pipelines"))

    with make_pipeline().sql_client() as client:
        limit, threads = client.execute_sql(
            "select current_setting('memory_limit'), current_setting('threads')"
        )[0]

    assert (limit, threads) == ("244.1 MiB", 2)  # 256MB


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SYNC__DUCKDB_MEMORY_LIMIT", "lots"),
        ("SYNC__DUCKDB_MEMORY_LIMIT", "400"),  # DuckDB would read bytes
        ("SYNC__DUCKDB_THREADS", "0"),
        ("SYNC__DUCKDB_THREADS", "two"),
    ],
)
def test_a_bad_duckdb_setting_is_a_config_error_naming_its_variable(
    variable: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "sync.duckdb"))

    with pytest.raises(ConfigError, match=variable):
        SyncSettings.from_config()
    with pytest.raises(ConfigError, match=variable):
        make_pipeline(pipelines_dir=str(tmp_path / "pipelines"))
