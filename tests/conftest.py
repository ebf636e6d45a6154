"""Fixtures: a real emulated portal on 127.0.0.1 and a real DuckDB file per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import pytest

from pipelines.runner import SyncResult, make_pipeline, run_sync
from tests.portal_emulator import Fleet, PortalEmulator

# Tests must not pick up a developer's real portal or destination from the environment.
for _name in list(os.environ):
    if _name.startswith(
        (
            "SOURCES__PUMP_PORTAL__",
            "DESTINATION__",
            "PIPELINES__PUMP_PORTAL__",
            "SYNC__",
            "MODELS__",
        )
    ):
        del os.environ[_name]


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.generate(pumps=300, users=12, seed=7)


@pytest.fixture
def emulator(fleet: Fleet) -> Iterator[PortalEmulator]:
    emu = PortalEmulator(fleet)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def duckdb_path(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture
def pipeline(tmp_path: Path, duckdb_path: Path) -> dlt.Pipeline:
    return make_pipeline(
        destination=dlt.destinations.duckdb(str(duckdb_path)),
        dataset_name="pump_portal",
        pipelines_dir=str(tmp_path / "pipelines"),
        progress=False,
    )


def sync(
    emu: PortalEmulator, pipeline: dlt.Pipeline, key: str | None = None, **options: Any
) -> SyncResult:
    """One sync cycle against the emulator, stamped with the emulator's simulated clock."""
    options.setdefault("backoff_seconds", 0.01)
    options.setdefault("run_at", emu.now)
    return run_sync(
        pipeline,
        base_url=emu.url,
        api_key=key if key is not None else emu.keys.full,
        **options,
    )


def cli_environment(emu: PortalEmulator, tmp_path: Path, key: str | None = None) -> dict[str, str]:
    """What a user sets to run the real command line against the emulator, in a scratch folder."""
    return {
        "SOURCES__PUMP_PORTAL__BASE_URL": emu.url,
        "SOURCES__PUMP_PORTAL__API_KEY": key if key is not None else emu.keys.full,
        "SOURCES__PUMP_PORTAL__BACKOFF_SECONDS": "0.01",
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "pump_portal_sync.duckdb"),
        "SYNC__PUBLISH_TO": str(tmp_path / "pump_portal_warehouse.duckdb"),
        "PIPELINES__PUMP_PORTAL__PIPELINES_DIR": str(tmp_path / "pipelines"),
    }


def rows(pipeline: dlt.Pipeline, sql: str) -> list[tuple[Any, ...]]:
    with pipeline.sql_client() as client:
        return [tuple(r) for r in client.execute_sql(sql)]


def scalar(pipeline: dlt.Pipeline, sql: str) -> Any:
    return rows(pipeline, sql)[0][0]
