"""Where one deployment of the job keeps its files, and its `[sync]` settings.

A deployment is the folder the job runs in (a checkout, `/srv/pump-portal-sync`): dlt reads its
`.dlt/` there, and everything the job writes stays there too, so staging and production on one
host, or two portal integrations, never share anything:

    .dlt/pipelines/pump_portal/    dlt's working folder: state, schemas, pending load packages,
                                   and the run lock ([pipelines.pump_portal] pipelines_dir)
    pump_portal_sync.duckdb        the sync's working DuckDB file ([destination.duckdb] credentials)
    pump_portal_warehouse.duckdb   the copy readers open ([sync] publish_to)

dlt's own default pipelines folder (`~/.dlt/pipelines`, `/var/dlt/pipelines` for root) is one per
host: a load package one deployment left pending after a crash would be loaded by another
deployment's next run into that deployment's destination.

Every setting read here fails with a `ConfigError` naming the key and the environment variable,
never with a coercion traceback.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, TypeVar

import dlt
import duckdb
from dlt.common.configuration.exceptions import ConfigValueCannotBeCoercedException

PIPELINE_NAME = "pump_portal"
DATASET_NAME = "pump_portal"

# Relative to the folder the job runs in, like the `.dlt/` folder dlt reads its settings from.
DEFAULT_PIPELINES_DIR = ".dlt/pipelines"
# Not dlt's default `<pipeline_name>.duckdb`: a file named like the dataset makes DuckDB's catalog
# name clash with the schema name ("Ambiguous reference to catalog or schema").
DEFAULT_WORKING_FILE = "pump_portal_sync.duckdb"
DEFAULT_PUBLISH_TO = "pump_portal_warehouse.duckdb"
DEFAULT_MAX_STALENESS_MINUTES = 60.0
DEFAULT_LOCK_WAIT_SECONDS = 30.0
# DuckDB's buffer pool for the load, the models and the publish; it spills to disk beyond it. Its
# own default (80% of RAM) let a cycle on a year of history peak at 14 GB. A run peaks at about
# the limit plus 200 MB (Python, dlt): 490 MB on 7 M readings with 256MB, 606 MB with 400MB.
DEFAULT_DUCKDB_MEMORY_LIMIT = "256MB"
DEFAULT_DUCKDB_THREADS = 2
# A DuckDB memory size with its unit: DuckDB reads a bare number as bytes.
_MEMORY_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(k|m|g|t)i?b\s*$", re.IGNORECASE)

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting the job cannot use: the message names the key, the value and where it is set."""


def env_name(key: str) -> str:
    """The environment variable dlt reads for a key: `sync.publish_to` -> SYNC__PUBLISH_TO."""
    return key.replace(".", "__").upper()


def where_set(key: str) -> str:
    section, _, name = key.rpartition(".")
    return f"{env_name(key)} or [{section}] {name} in .dlt/config.toml"


def setting(key: str, kind: type[T], default: T) -> T:
    """One value from the environment, .dlt/secrets.toml or .dlt/config.toml, or `default`."""
    try:
        value = dlt.config.get(key, kind)
    except ConfigValueCannotBeCoercedException as error:
        raise ConfigError(
            f"{key} = {error.field_value!r} is not a valid {kind.__name__} ({where_set(key)})"
        ) from None
    return default if value is None else value


def secret_setting(key: str) -> Any:
    """A value dlt treats as secret (credentials): the environment or .dlt/secrets.toml only."""
    return dlt.secrets.get(key)


def pipelines_dir() -> str:
    """The deployment's pipelines folder, as an absolute path (a later chdir cannot move it)."""
    return os.path.abspath(
        setting(f"pipelines.{PIPELINE_NAME}.pipelines_dir", str, DEFAULT_PIPELINES_DIR)
    )


def _positive(key: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{key} must be greater than 0, not {value!r} ({where_set(key)})")
    return value


def _memory_size(key: str, value: str) -> str:
    if not _MEMORY_SIZE.match(value):
        raise ConfigError(
            f"{key} = {value!r} is not a memory size like '400MB' or '1GB' ({where_set(key)})"
        )
    try:
        duckdb.connect(config={"memory_limit": value}).close()
    except duckdb.Error as error:
        raise ConfigError(f"{key} = {value!r}: {error} ({where_set(key)})") from None
    return value.strip()


def _at_least_one(key: str, value: int) -> int:
    if value < 1:
        raise ConfigError(f"{key} must be 1 or more, not {value!r} ({where_set(key)})")
    return value


@dataclass(frozen=True)
class SyncSettings:
    """`[sync]`: the reader copy, when data counts as stale, how long to wait for a lock, and the
    memory and threads DuckDB may use."""

    publish_to: str | None = DEFAULT_PUBLISH_TO
    max_staleness_minutes: float = DEFAULT_MAX_STALENESS_MINUTES
    lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS
    duckdb_memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT
    duckdb_threads: int = DEFAULT_DUCKDB_THREADS
    # None: DuckDB's own, `<database file>.tmp` beside the file.
    duckdb_temp_directory: str | None = None

    def duckdb_config(self) -> dict[str, str | int]:
        """DuckDB settings for every connection of a run (dlt's and the publish's)."""
        config: dict[str, str | int] = {
            "memory_limit": self.duckdb_memory_limit,
            "threads": self.duckdb_threads,
        }
        if self.duckdb_temp_directory:
            config["temp_directory"] = self.duckdb_temp_directory
        return config

    @classmethod
    def from_config(cls) -> SyncSettings:
        publish_to = setting("sync.publish_to", str, DEFAULT_PUBLISH_TO)
        return cls(
            # An empty value turns publishing off (readers then have no file of their own).
            publish_to=publish_to or None,
            max_staleness_minutes=_positive(
                "sync.max_staleness_minutes",
                setting("sync.max_staleness_minutes", float, DEFAULT_MAX_STALENESS_MINUTES),
            ),
            lock_wait_seconds=max(
                0.0, setting("sync.lock_wait_seconds", float, DEFAULT_LOCK_WAIT_SECONDS)
            ),
            duckdb_memory_limit=_memory_size(
                "sync.duckdb_memory_limit",
                setting("sync.duckdb_memory_limit", str, DEFAULT_DUCKDB_MEMORY_LIMIT),
            ),
            duckdb_threads=_at_least_one(
                "sync.duckdb_threads", setting("sync.duckdb_threads", int, DEFAULT_DUCKDB_THREADS)
            ),
            duckdb_temp_directory=setting("sync.duckdb_temp_directory", str, "") or None,
        )
