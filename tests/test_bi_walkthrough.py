"""The README's read-only PostgreSQL role for BI tools, run as written: it reads the marts and
nothing else, after incremental builds and after a full one.

The block runs as the loading user with its own role name (roles are shared by the whole server)
and the test's own schemas; everything else is the README's text.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dlt
import psycopg2
import psycopg2.errors
import pytest

from pipelines.models import build_models
from tests.checkout import recipe
from tests.conftest import rows, sync
from tests.portal_emulator import Fleet, PortalEmulator
from tests.test_models import MARTS, POSTGRES_URL, drop_schemas, new_pipeline

pytestmark = pytest.mark.postgres


@pytest.fixture
def portal() -> Iterator[PortalEmulator]:
    with PortalEmulator(Fleet.generate(pumps=12, users=3, seed=5)) as emulator:
        yield emulator


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[dlt.Pipeline]:
    pipeline = new_pipeline("postgres", tmp_path)
    try:
        yield pipeline
    finally:
        drop_schemas(pipeline)


@pytest.fixture
def reader_role() -> Iterator[str]:
    role = f"bi_reader_{uuid.uuid4().hex[:8]}"
    yield role
    with psycopg2.connect(POSTGRES_URL) as connection, connection.cursor() as cursor:
        cursor.execute("select 1 from pg_roles where rolname = %s", (role,))
        if cursor.fetchone():
            cursor.execute(f"drop owned by {role}")  # its privileges, default ones too
            cursor.execute(f"drop role {role}")


def connect_as(role: str) -> psycopg2.extensions.connection:
    """The BI tool's connection (the test server trusts local connections: no password)."""
    url = urlsplit(POSTGRES_URL)
    return psycopg2.connect(
        host=url.hostname, port=url.port or 5432, dbname=url.path.lstrip("/"), user=role
    )


def as_reader(role: str, sql: str) -> list[tuple[Any, ...]]:
    with connect_as(role) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


Read = Callable[[str], list[tuple[Any, ...]]]


def mart_counts(pipeline: dlt.Pipeline, read: Read | None = None) -> dict[str, int]:
    """Rows per mart, as the loading user sees them or through `read`."""
    schema = f"{pipeline.dataset_name}_models"
    sql = " union all ".join(f"select '{m}', count(*) from {schema}.{m}" for m in MARTS)
    found = read(sql) if read is not None else rows(pipeline, sql)
    return {str(name): int(count) for name, count in found}


def test_readme_reader_role_reads_the_marts_and_nothing_else(
    portal: PortalEmulator, warehouse: dlt.Pipeline, reader_role: str
) -> None:
    result = sync(portal, warehouse, build_models=build_models)  # "after the first run"
    assert result.outcome == "success", result.error
    dataset = warehouse.dataset_name
    block = recipe("bi-postgres-reader")
    assert block.count("bi_reader") == 4 and block.count("pump_portal_models") == 3
    own = block.replace("bi_reader", reader_role).replace("pump_portal_models", f"{dataset}_models")
    with psycopg2.connect(POSTGRES_URL) as connection, connection.cursor() as cursor:
        cursor.execute(own)  # as the loading user, as the README says

    def read(sql: str) -> list[tuple[Any, ...]]:
        return as_reader(reader_role, sql)

    assert read(
        "select table_schema, table_name from information_schema.tables "
        f"where table_schema like '{dataset}%' order by 1, 2"
    ) == [(f"{dataset}_models", name) for name in MARTS]
    counts = mart_counts(warehouse)
    assert counts["controllers_current"] == 12
    assert mart_counts(warehouse, read) == counts

    for forbidden in (f"{dataset}.controllers", f"{dataset}_models_internal._model_state"):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="permission denied"):
            read(f"select count(*) from {forbidden}")

    # A later sync: an incremental build, and controllers_current rebuilt whole (a new table).
    portal.advance(86_400)
    portal.report(portal.fleet.pump_ids()[:4])
    result = sync(portal, warehouse, build_models=build_models)
    assert result.outcome == "success", result.error
    after_sync = mart_counts(warehouse)
    assert after_sync["controller_daily"] == counts["controller_daily"] + 12
    assert mart_counts(warehouse, read) == after_sync

    # A full rebuild recreates every mart: default privileges grant them to the role.
    built = {model.name: model.how for model in build_models(warehouse, full_refresh=True)}
    assert {built[name] for name in MARTS} == {"full"}
    assert mart_counts(warehouse, read) == after_sync
