"""The copies of the working DuckDB file that readers and BI tools open.

DuckDB allows one writer process or many readers, never both. So the sync writes its own working
file (`[destination.duckdb] credentials`) and, after the load and the models, publishes a
consistent copy for readers (`[sync] publish_to`). The published path is a symlink to one of two
copies beside it, `<name>.a` and `<name>.b`. A publish brings the copy the symlink does not point
to up to date, then swaps the symlink to it atomically:

- in place, when no reader holds that copy: one transaction writes only what differs from the
  working file (for dlt's tables, the rows of the loads the copy lacks), then a checkpoint;
- as a full copy, when a reader still holds it (DuckDB refuses the write lock), when it is
  missing or cannot be opened: written to a temporary file in an older storage format than the
  working file's (`READER_STORAGE_VERSION`), so DuckDB 1.x readers (the `duckdb` CLI, BI
  drivers) open it, then renamed over the copy. A copy updated in place keeps its format.

A reader keeps reading the snapshot it opened (neither the update of the other copy nor a rename
touches its open file) and sees the new one when it reconnects; it never blocks a run, never
sees a half-loaded state.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb

from .models import CHANGES as MODEL_CHANGES
from .models import CHANGES_KEPT as MODEL_CHANGES_KEPT
from .models import LOADS_TABLE as MODEL_LOADS
from .models import STATE_TABLE as MODEL_STATE
from .models import internal_schema_of
from .warehouse import lock_conflict, lock_holder

logger = logging.getLogger(__name__)

# duckdb 2.x writes storage version 69 by default, which every 1.x reader refuses ("can only read
# versions between 64 and 68"), and readers lag the python package: the duckdb CLI on PyPI is 1.5,
# BI tools bundle their own 1.x driver. 'v1.0.0' writes version 64, the oldest format 2.x writes,
# which DuckDB 0.10 and every 1.x open, and it holds all the sync writes (timestamptz, json,
# views across schemas, dlt's tables).
READER_STORAGE_VERSION = "v1.0.0"


class PublishFailed(Exception):
    """The reader copy could not be written (the run's data is loaded in the working file)."""


PublishMode = Literal["in place", "full copy", "first copy"]


@dataclass(frozen=True)
class PublishReport:
    """What one publish did: which path ran and why, how long it took, how much it wrote."""

    path: Path  # the path readers open: a symlink to `target`
    target: Path  # the file the path points to now (`<name>.a` or `<name>.b`)
    mode: PublishMode
    reason: str
    seconds: float
    rows_written: int
    bytes_written: int | None  # by this process while publishing (Linux), None elsewhere

    def __str__(self) -> str:
        written = f"{self.rows_written:,} rows"
        if self.bytes_written is not None:
            written += f", {self.bytes_written / 1e6:,.0f} MB"
        return (
            f"{self.path} ({self.mode}, {self.reason}; {written} written in {self.seconds:.1f} s)"
        )


@dataclass(frozen=True)
class _Table:
    schema: str
    name: str
    sql: str  # DuckDB's CREATE TABLE statement for it: columns, types, order, constraints
    has_load_id: bool  # a dlt table: its rows carry the id of the load that wrote them
    # A dlt nested table (a list in a record): its rows carry no load id, but `_dlt_root_id`,
    # the `_dlt_id` of their row in this root table, written in the same load.
    root: str | None = None

    @property
    def qualified(self) -> str:
        return f"{sql_identifier(self.schema)}.{sql_identifier(self.name)}"


@dataclass(frozen=True)
class _View:
    schema: str
    name: str
    sql: str


@dataclass(frozen=True)
class _Catalog:
    """The relations of the working file to publish, skipped ones left out."""

    schemas: tuple[str, ...]
    tables: tuple[_Table, ...]
    views: tuple[_View, ...]  # in dependency order: a view after the views it reads


def skipped_for_readers(dataset: str, models_schema: str) -> tuple[str, ...]:
    """What readers need not see, as `publish(skip=...)`: the models' internal schema (staging
    views, intermediate tables of up to a row per reading, the marts' change logs, which the
    publish reads in the working file) but for `_model_state`, which tells the next publish
    which build the copy holds; and dlt's staging tables (a merge's scratch)."""
    internal = internal_schema_of(models_schema)
    return (
        f"{internal}.[!_]*",  # every model; bookkeeping starts with "_"
        f"{internal}.{MODEL_LOADS}",
        f"{dataset}_staging",
    )


def publish(
    working: Path,
    published: Path,
    *,
    skip: Collection[str] = (),
    duckdb_config: Mapping[str, Any] | None = None,
) -> Path:
    """Publish a reader copy of the working file at `published` (see `publish_copy`)."""
    return publish_copy(working, published, skip=skip, duckdb_config=duckdb_config).path


def publish_copy(
    working: Path,
    published: Path,
    *,
    skip: Collection[str] = (),
    duckdb_config: Mapping[str, Any] | None = None,
) -> PublishReport:
    """Bring the reader copy up to date with the working file and point `published` at it.

    `published` is a symlink to one of two files, `<name>.a` and `<name>.b`. The one it does not
    point to is updated in place, in one transaction that changes only what differs from the
    working file (for dlt's tables: the rows of loads it lacks or holds with other counts), then
    checkpointed, and the symlink is swapped to it atomically. If a reader still holds that file,
    DuckDB refuses it the write lock and a full copy is written to a temporary file and renamed
    over it instead. A reader keeps the snapshot it opened, a new reader opens the new one, and
    nothing a reader does makes the sync wait.

    `skip` names relations readers do not need, as `schema` or `schema.relation`, with `*`
    wildcards (`pump_portal_models.int_*`): they are absent from the copy. A published view that
    reads a skipped relation raises `PublishFailed` before anything is written.
    `duckdb_config` (memory_limit, threads, temp_directory) bounds the DuckDB the publish runs in;
    by default the `[sync]` settings.
    """
    started = time.monotonic()
    written_before = _bytes_written()
    if published.is_dir() and not published.is_symlink():
        raise IsADirectoryError(errno.EISDIR, "the published path is a folder", str(published))
    published.parent.mkdir(parents=True, exist_ok=True)
    config = dict(duckdb_config) if duckdb_config is not None else _configured_duckdb()
    # Holding the working file for writing through the flip serializes publishes: a `models`
    # run next to a scheduled `run` waits for the lock instead of updating the same copy.
    with duckdb.connect(str(working)) as connection:
        apply_duckdb_config(connection, config)
        (source,) = _one_row(connection.execute("select current_database()"))
        catalog = _read_catalog(connection, source, skip)
        inactive, mode, reason = _inactive_file(published)
        rows: int | None = None
        if mode == "in place":
            try:
                rows = _update_in_place(connection, source, inactive, catalog)
            except duckdb.Error as error:
                mode, reason = "full copy", _why_not_in_place(error, inactive)
                log = logger.info if _is_held(error) else logger.warning
                log("publishing a full copy: %s", reason)
        if rows is None:
            rows = _copy_to(connection, source, inactive, catalog)
        _point(published, inactive)
    written_after = _bytes_written()
    report = PublishReport(
        path=published,
        target=inactive,
        mode=mode,
        reason=reason,
        seconds=time.monotonic() - started,
        rows_written=rows,
        bytes_written=(
            None
            if written_before is None or written_after is None
            else written_after - written_before
        ),
    )
    logger.info("published %s", report)
    return report


def apply_duckdb_config(connection: duckdb.DuckDBPyConnection, config: Mapping[str, Any]) -> None:
    """Set DuckDB settings (memory_limit, threads, temp_directory) for the whole database."""
    for name, value in config.items():
        connection.execute(f"set global {name} = ?", [value])


def _configured_duckdb() -> dict[str, Any]:
    from .deployment import SyncSettings  # deployment reads dlt's config; imported when needed

    return SyncSettings.from_config().duckdb_config()


def copy_files(published: Path) -> tuple[Path, Path]:
    """The two files `published` points to in turn: `<name>.a` and `<name>.b`."""
    return published.with_name(f"{published.name}.a"), published.with_name(f"{published.name}.b")


def _inactive_file(published: Path) -> tuple[Path, PublishMode, str]:
    """The copy to write this time, and how: in place if it exists, else a copy."""
    first, second = copy_files(published)
    if published.is_symlink():
        # A symlink to anything but `<name>.a` (made by hand) is replaced by the flip, as an
        # older version's publish replaced whatever was at the path.
        inactive = second if Path(os.readlink(published)).name == first.name else first
    elif published.exists():
        inactive = first
        if _adopt_older_file(published, second):
            return inactive, "full copy", f"the older file is kept as {second.name}"
    else:
        return first, "first copy", "nothing published yet"
    if inactive.exists():
        return inactive, "in place", f"no reader holds {inactive.name}"
    return inactive, "full copy", f"no {inactive.name} yet"


def _adopt_older_file(published: Path, second: Path) -> bool:
    """A regular file at `published` (written by an older version) becomes `<name>.b` and
    `published` a symlink to it, so readers see no change and the next publish can update it."""
    remove_database_file(second)
    try:
        os.link(published, second)
    except OSError as error:  # a file system without hard links: the flip replaces the file
        logger.info("could not keep %s as %s: %s", published, second.name, error)
        return False
    _point(published, second)
    logger.info("%s is now a symlink to %s", published, second.name)
    return True


def _point(published: Path, target: Path) -> None:
    """Swap the symlink at `published` to `target` (a name in the same folder) atomically."""
    link = published.with_name(f".{published.name}.{os.getpid()}.link")
    link.unlink(missing_ok=True)
    os.symlink(target.name, link)
    try:
        os.replace(link, published)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    _fsync_folder(published.parent)


def _update_in_place(
    connection: duckdb.DuckDBPyConnection, source: str, copy: Path, catalog: _Catalog
) -> int:
    alias = _copy_alias(source)
    connection.execute(f"attach ? as {alias}", [str(copy)])  # fails while a reader holds it
    try:
        rows = _reconcile(connection, source, alias, catalog)
        connection.execute(f"checkpoint {alias}")
    finally:
        connection.execute(f"detach {alias}")
    _fsync(copy)
    return rows


def _copy_to(
    connection: duckdb.DuckDBPyConnection, source: str, copy: Path, catalog: _Catalog
) -> int:
    """Write the copy to a temporary file in the reader format, then rename it to `copy`."""
    temporary = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
    alias = _copy_alias(source)
    try:
        # A leftover of a killed run with the same pid would be attached and clash with the copy.
        remove_database_file(temporary)
        connection.execute(
            f"attach ? as {alias} (storage_version ?)", [str(temporary), READER_STORAGE_VERSION]
        )
        try:
            rows = _reconcile(connection, source, alias, catalog)
        finally:
            connection.execute(f"detach {alias}")  # checkpoints the copy into its file
        _fsync(temporary)
        # A log left beside the old file by a killed update must not be replayed into this one.
        copy.with_name(f"{copy.name}.wal").unlink(missing_ok=True)
        os.replace(temporary, copy)
    except BaseException:
        remove_database_file(temporary)
        raise
    return rows


def _copy_alias(source: str) -> str:
    # The working file's catalog is named after its file: keep the copy's alias distinct.
    return "reader" if source != "reader" else "reader_copy"


def _is_held(error: BaseException) -> bool:
    # Another process's lock, or this process's own open handle on the file.
    return lock_conflict(error) is not None or "Unique file handle conflict" in str(error)


def _why_not_in_place(error: BaseException, copy: Path) -> str:
    message = lock_conflict(error)
    if message is not None:
        return f"{lock_holder(message)} holds {copy.name}"
    if "Unique file handle conflict" in str(error):
        return f"this process holds {copy.name}"
    return f"{copy.name} could not be updated in place ({str(error).splitlines()[0]})"


def _read_catalog(
    connection: duckdb.DuckDBPyConnection, source: str, skip: Collection[str]
) -> _Catalog:
    """The schemas, tables and views of the working file, minus `skip`; views ordered so each
    comes after the views it reads. Raises `PublishFailed` if a view reads a skipped relation."""

    def skipped(schema: str, name: str | None = None) -> bool:
        names = [schema] if name is None else [schema, f"{schema}.{name}"]
        return any(fnmatch.fnmatchcase(n, pattern) for pattern in skip for n in names)

    schemas = [
        name
        for (name,) in connection.execute(
            "select schema_name from duckdb_schemas() where database_name = ? "
            "and schema_name not in ('information_schema', 'pg_catalog') order by schema_name",
            [source],
        ).fetchall()
        if not skipped(name)
    ]
    dlt_columns: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in connection.execute(
        "select schema_name, table_name, column_name from duckdb_columns() where database_name = ? "
        "and column_name in ('_dlt_load_id', '_dlt_id', '_dlt_root_id')",
        [source],
    ).fetchall():
        dlt_columns.setdefault((schema, table), set()).add(column)
    load_id_tables = {key for key, columns in dlt_columns.items() if "_dlt_load_id" in columns}
    tables, every_relation = [], set()
    for schema, name, sql in connection.execute(
        "select schema_name, table_name, sql from duckdb_tables() "
        "where database_name = ? and not temporary order by schema_name, table_name",
        [source],
    ).fetchall():
        every_relation.add((schema, name))
        if skipped(schema, name):
            continue
        if (schema, name) in load_id_tables:
            tables.append(_Table(schema, name, sql, has_load_id=True))
        elif "_dlt_root_id" in dlt_columns.get((schema, name), ()):
            tables.append(_Table(schema, name, sql, False, _root_table(schema, name, dlt_columns)))
        else:
            tables.append(_Table(schema, name, sql, has_load_id=False))
    views: dict[tuple[str, str], _View] = {}
    for schema, name, sql in connection.execute(
        "select schema_name, view_name, sql from duckdb_views() "
        "where database_name = ? and not internal and not temporary order by view_oid",
        [source],
    ).fetchall():
        every_relation.add((schema, name))
        if not skipped(schema, name):
            views[schema, name] = _View(schema, name, sql)
    reads: dict[tuple[str, str], set[tuple[str, str]]] = {}
    unknown: list[tuple[str, str]] = []
    with duckdb.connect() as parser:
        for key, view in views.items():
            references = _references(parser, view)
            if references is None:
                unknown.append(key)
                continue
            reads[key] = set()
            for reference in references:
                relation = _resolve(reference, view.schema, source, every_relation)
                if relation is None or relation == key:
                    continue
                if skipped(*relation):
                    raise PublishFailed(
                        f"the view {view.schema}.{view.name} reads {relation[0]}.{relation[1]}, "
                        "which the publish skips: skip the view too, or publish what it reads"
                    )
                if relation in views:
                    reads[key].add(relation)
    _warn_unpublished_objects(connection, source)
    # Views whose reads are unknown come last, in the order the working file created them.
    ordered = _in_dependency_order(views, reads) + tuple(views[key] for key in unknown)
    return _Catalog(tuple(schemas), tuple(tables), ordered)


# DuckDB's own rendering of a view (duckdb_views().sql): CREATE VIEW s.v [(aliases)] AS query;
_IDENTIFIER = r'(?:"(?:[^"]|"")*"|[^\s."(]+)'
_VIEW_SQL = re.compile(
    rf'^\s*create\s+view\s+{_IDENTIFIER}\.{_IDENTIFIER}\s*(?:\((?:"(?:[^"]|"")*"|[^")])*\)\s*)?'
    r"as\s+(?P<query>.*?);?\s*$",
    re.IGNORECASE | re.DOTALL,
)


def _references(parser: duckdb.DuckDBPyConnection, view: _View) -> set[str] | None:
    """The relation names the view's query reads, as written (`t`, `s.t`, `db.s.t`); None if
    they cannot be told. `parser` is an empty database: in one that holds the relations, DuckDB
    answers with the tables behind the views read instead."""
    found = _VIEW_SQL.match(view.sql)
    try:
        if found is None:
            raise ValueError("not DuckDB's CREATE VIEW form")
        return set(parser.get_table_names(found.group("query"), qualified=True))
    except (duckdb.Error, ValueError) as error:
        logger.warning("cannot tell what the view %s.%s reads: %s", view.schema, view.name, error)
        return None


def _root_table(schema: str, name: str, dlt_columns: dict[tuple[str, str], set[str]]) -> str | None:
    """The root table of a dlt nested table (`pump_summaries` for
    `pump_summaries__recent_alarms__alarms`): the longest prefix of its name, cut at `__`, that
    names a table with `_dlt_id` and `_dlt_load_id` in the same schema."""
    parts = name.split("__")
    for end in range(len(parts) - 1, 0, -1):
        candidate = "__".join(parts[:end])
        if {"_dlt_id", "_dlt_load_id"} <= dlt_columns.get((schema, candidate), set()):
            return candidate
    return None


def _resolve(
    reference: str, schema: str, source: str, relations: set[tuple[str, str]]
) -> tuple[str, str] | None:
    """The (schema, name) a name in a view's SQL refers to, None if not in the working file."""
    parts = reference.split(".")
    if len(parts) == 1:
        # DuckDB binds a view's unqualified names in the view's own schema first.
        candidates = [(schema, parts[0]), ("main", parts[0])]
    elif len(parts) == 2:
        candidates = [(parts[0], parts[1])]
    elif len(parts) == 3 and parts[0] == source:
        candidates = [(parts[1], parts[2])]
    else:
        return None
    return next((c for c in candidates if c in relations), None)


def _in_dependency_order(
    views: dict[tuple[str, str], _View], reads: dict[tuple[str, str], set[tuple[str, str]]]
) -> tuple[_View, ...]:
    """The views of `reads`, each after the views it reads."""
    ordered: list[_View] = []
    placed: set[tuple[str, str]] = set()
    pending = sorted(reads)
    while pending:
        ready = [key for key in pending if reads[key] & set(reads) <= placed]
        if not ready:  # DuckDB cannot create a cycle; keep the rest as they are
            ready = pending
        ordered += [views[key] for key in ready]
        placed.update(ready)
        pending = [key for key in pending if key not in placed]
    return tuple(ordered)


def _warn_unpublished_objects(connection: duckdb.DuckDBPyConnection, source: str) -> None:
    found = connection.execute(
        "select 'sequence ' || schema_name || '.' || sequence_name from duckdb_sequences() "
        "where database_name = $1 and not temporary "
        "union all select 'macro ' || schema_name || '.' || function_name from duckdb_functions() "
        "where database_name = $1 and not internal and function_type like '%macro' "
        "union all select 'index ' || schema_name || '.' || index_name from duckdb_indexes() "
        "where database_name = $1 and sql is not null "
        "union all select 'type ' || schema_name || '.' || type_name from duckdb_types() "
        "where database_name = $1 and not internal",
        [source],
    ).fetchall()
    if found:
        logger.warning(
            "the reader copy holds schemas, tables and views only; not published: %s",
            ", ".join(name for (name,) in found),
        )


def _reconcile(
    connection: duckdb.DuckDBPyConnection, source: str, copy: str, catalog: _Catalog
) -> int:
    """Make the attached `copy` equal to the working file's `catalog`, in one transaction.
    Returns the rows written."""
    connection.execute("begin")
    try:
        # Statements from the working file's catalog (CREATE TABLE s.t ...) create in the copy.
        connection.execute(f"use {copy}")
        rows = _reconcile_in_transaction(connection, source, copy, catalog)
        connection.execute("commit")
    except BaseException:
        connection.execute("rollback")
        raise
    finally:
        connection.execute(f"use {sql_identifier(source)}")
    return rows


def _reconcile_in_transaction(
    connection: duckdb.DuckDBPyConnection, source: str, copy: str, catalog: _Catalog
) -> int:
    # Views first out and last in: they are recreated from the working file's SQL every time.
    for schema, name in connection.execute(
        "select schema_name, view_name from duckdb_views() where database_name = ? "
        "and not internal",
        [copy],
    ).fetchall():
        connection.execute(f"drop view {sql_identifier(schema)}.{sql_identifier(name)}")
    existing = {
        (schema, name): sql
        for schema, name, sql in connection.execute(
            "select schema_name, table_name, sql from duckdb_tables() where database_name = ?",
            [copy],
        ).fetchall()
    }
    wanted = {(table.schema, table.name) for table in catalog.tables}
    for schema, name in existing.keys() - wanted:  # gone from the working file, or skipped
        connection.execute(f"drop table {sql_identifier(schema)}.{sql_identifier(name)}")
    copy_schemas = {
        name
        for (name,) in connection.execute(
            "select schema_name from duckdb_schemas() where database_name = ? "
            "and schema_name not in ('main', 'information_schema', 'pg_catalog')",
            [copy],
        ).fetchall()
    }
    for schema in sorted(copy_schemas - set(catalog.schemas)):
        connection.execute(f"drop schema {sql_identifier(schema)} cascade")
    for schema in catalog.schemas:
        connection.execute(f"create schema if not exists {sql_identifier(schema)}")

    # Before the copy's `_dlt_loads` is rewritten: the loads it has not seen, per dataset.
    new_loads = {
        schema: _new_loads(connection, source, copy, schema)
        for schema in {table.schema for table in catalog.tables if table.has_load_id}
    }
    # ... and before its `_model_state` is: the builds of each model it has not seen.
    builds = _unseen_builds(connection, source, copy)
    nested: dict[tuple[str, str], list[_Table]] = {}
    for table in catalog.tables:
        if table.root is not None:
            nested.setdefault((table.schema, table.root), []).append(table)
    done: set[_Table] = set()
    rows = 0
    for table in catalog.tables:
        if table.root is not None:
            continue
        children = nested.get((table.schema, table.name), [])
        copy_sql = existing.get((table.schema, table.name))
        if copy_sql is not None and copy_sql != table.sql and table.has_load_id:
            copy_sql = _add_new_columns(connection, source, copy, table)
        if copy_sql == table.sql and table.has_load_id:
            diff = _load_diff(connection, source, copy, table, new_loads[table.schema])
            if diff is not None:
                # The copy's rows of the root table, not yet changed, find the nested rows to
                # delete: the nested tables first.
                for child in children:
                    rows += _logged(child, _update_nested, connection, source, copy, child, diff)
                    done.add(child)
                rows += _logged(table, _apply_diff, connection, source, copy, table, diff)
                continue
        changes = builds.get((table.schema, table.name))
        if copy_sql == table.sql and changes is not None:
            rows += _logged(table, _apply_changes, connection, source, copy, table, *changes)
            continue
        rows += _logged(table, _replace, connection, source, copy, table, copy_sql)
    for table in catalog.tables:
        if table.root is not None and table not in done:  # its root changed whole, or has none
            copy_sql = existing.get((table.schema, table.name))
            rows += _logged(table, _replace, connection, source, copy, table, copy_sql)

    for view in catalog.views:
        connection.execute(view.sql)
    _copy_comments(connection, source, copy)
    return rows


def _copy_comments(connection: duckdb.DuckDBPyConnection, source: str, copy: str) -> None:
    """Give the copy's tables, views and columns the working file's comments (the data
    dictionary): DuckDB's `create` statements leave them out. Only those that differ."""

    def comments(database: str) -> dict[tuple[str, str, str, str | None], str | None]:
        found = connection.execute(
            "select 'table', schema_name, table_name, null, comment from duckdb_tables() "
            "where database_name = $1 union all "
            "select 'view', schema_name, view_name, null, comment from duckdb_views() "
            "where database_name = $1 and not internal union all "
            "select 'column', schema_name, table_name, column_name, comment "
            "from duckdb_columns() where database_name = $1",
            [database],
        ).fetchall()
        return {(kind, schema, name, column): text for kind, schema, name, column, text in found}

    wanted, have = comments(source), comments(copy)
    for key, text in have.items():  # the copy's relations: what was published
        kind, schema, name, column = key
        if wanted.get(key) == text:
            continue
        target = f"{sql_identifier(schema)}.{sql_identifier(name)}"
        if column is not None:
            target += f".{sql_identifier(column)}"
        value = "null" if wanted.get(key) is None else _text_literal(str(wanted[key]))
        connection.execute(f"comment on {kind} {target} is {value}")


def _add_new_columns(
    connection: duckdb.DuckDBPyConnection, source: str, copy: str, table: _Table
) -> str | None:
    """dlt adds a column for a new field as nullable, without default, after the others, so the
    rows already loaded hold null in it: add it to the copy's table the same way instead of
    rewriting the table. Returns the copy table's SQL afterwards."""
    columns = (
        "select column_name, data_type, is_nullable, column_default from duckdb_columns() "
        "where database_name = ? and schema_name = ? and table_name = ? order by column_index"
    )
    have = connection.execute(columns, [copy, table.schema, table.name]).fetchall()
    want = connection.execute(columns, [source, table.schema, table.name]).fetchall()
    added = want[len(have) :]
    if want[: len(have)] != have or not all(
        null and default is None for _, _, null, default in added
    ):
        return None
    for name, data_type, _, _ in added:
        connection.execute(
            f"alter table {copy}.{table.qualified} add column {sql_identifier(name)} {data_type}"
        )
    sql: str | None  # duckdb_tables().sql, the table's `create table` statement
    (sql,) = _one_row(
        connection.execute(
            "select sql from duckdb_tables() where database_name = ? and schema_name = ? "
            "and table_name = ?",
            [copy, table.schema, table.name],
        )
    )
    return sql


_Diff = tuple[list[str], list[str]]


def _logged(table: _Table, step: Callable[..., int], *arguments: Any) -> int:
    began = time.monotonic()
    rows = step(*arguments)
    logger.debug(
        "%s.%s: %d rows written in %.2f s", table.schema, table.name, rows, time.monotonic() - began
    )
    return rows


def _replace(
    connection: duckdb.DuckDBPyConnection,
    source: str,
    copy: str,
    table: _Table,
    copy_sql: str | None,
) -> int:
    """Rewrite the copy's table whole: recreated if its definition differs."""
    if copy_sql == table.sql:
        # dlt's _dlt_loads, _dlt_version and the models' tables: small, rewritten whole.
        connection.execute(f"delete from {copy}.{table.qualified}")
    else:
        if copy_sql is not None:
            connection.execute(f"drop table {table.qualified}")
        connection.execute(table.sql)
    return _insert(connection, source, copy, table)


def _new_loads(
    connection: duckdb.DuckDBPyConnection, source: str, copy: str, schema: str
) -> list[str] | None:
    """The loads of the working file's dataset `schema` the copy has not recorded; None when
    either has no `_dlt_loads` to tell."""
    (both,) = _one_row(
        connection.execute(
            "select count(*) = 2 from duckdb_tables() where database_name in (?, ?) "
            "and schema_name = ? and table_name = '_dlt_loads'",
            [source, copy, schema],
        )
    )
    if not both:
        return None
    dataset = sql_identifier(schema)
    query = (
        f"select load_id from {sql_identifier(source)}.{dataset}._dlt_loads "
        f"except select load_id from {copy}.{dataset}._dlt_loads"
    )
    return sorted(load_id for (load_id,) in connection.execute(query).fetchall())


def _load_diff(
    connection: duckdb.DuckDBPyConnection,
    source: str,
    copy: str,
    table: _Table,
    new_loads: list[str] | None,
) -> _Diff | None:
    """The loads to delete from the copy and to insert into it; None if rows without a load id
    make that unknowable.

    dlt only ever adds rows with a new load's id; a merge deletes rows of older loads that newer
    ones replace. So when the working table holds exactly the copy's rows plus the new loads'
    rows, none was deleted: insert the new loads. Asking that costs two counts and a scan the
    new loads' ids prune to the last row groups, not a pass over every row of both files."""
    if new_loads is not None:
        total = f"select count(*) from {{}}.{table.qualified}"
        (theirs,) = _one_row(connection.execute(total.format(sql_identifier(source))))
        (ours,) = _one_row(connection.execute(total.format(copy)))
        added = 0
        if new_loads:
            query = f"{total.format(sql_identifier(source))} where {_of_loads_in_range(new_loads)}"
            (added,) = _one_row(connection.execute(query, [new_loads]))
        if theirs == ours + added:
            return [], new_loads if added else []
    # Otherwise (a merge replaced rows, or a load the copy holds in part) each load's count.
    count = f"select _dlt_load_id, count(*) from {{}}.{table.qualified} group by all"
    theirs_by_load = dict(connection.execute(count.format(sql_identifier(source))).fetchall())
    ours_by_load = dict(connection.execute(count.format(copy)).fetchall())
    stale = [load for load, rows in ours_by_load.items() if theirs_by_load.get(load) != rows]
    missing = [load for load, rows in theirs_by_load.items() if ours_by_load.get(load) != rows]
    if None in stale or None in missing:
        return None
    return stale, missing


def _apply_diff(
    connection: duckdb.DuckDBPyConnection, source: str, copy: str, table: _Table, diff: _Diff
) -> int:
    stale, missing = diff
    if stale:
        connection.execute(
            f"delete from {copy}.{table.qualified} where {_of_loads(copy, table, stale)}",
            [stale],
        )
    return _insert(connection, source, copy, table, missing) if missing else 0


def _update_nested(
    connection: duckdb.DuckDBPyConnection, source: str, copy: str, table: _Table, diff: _Diff
) -> int:
    """A nested table's rows are written in the load of their root row, and deleted with it: the
    loads of the root table that differ tell which rows differ. Checked by the row count; a table
    that does not add up is rewritten whole."""
    (copy_sql,) = connection.execute(
        "select sql from duckdb_tables() where database_name = ? and schema_name = ? "
        "and table_name = ?",
        [copy, table.schema, table.name],
    ).fetchone() or (None,)
    if copy_sql != table.sql:
        return _replace(connection, source, copy, table, copy_sql)
    total = f"select count(*) from {{}}.{table.qualified}"
    stale, missing = diff
    if stale or not missing:
        rows = _apply_diff(connection, source, copy, table, diff)
    else:
        # A load appends its nested rows after every row the table had, so the working table's
        # rows from the copy's count on hold the new ones: DuckDB then reads only the last row
        # groups, not a scan of every `_dlt_root_id` (0.4 s at 7.5 M rows). Too high a start
        # would miss rows, which the count below catches.
        (ours,) = _one_row(connection.execute(total.format(copy)))
        rows = _insert(connection, source, copy, table, missing, from_rowid=int(ours))
    if (
        connection.execute(total.format(copy)).fetchone()
        != connection.execute(total.format(sql_identifier(source))).fetchone()
    ):
        logger.info("%s.%s does not add up in the copy: rewriting it", table.schema, table.name)
        rows += _replace(connection, source, copy, table, copy_sql)
    return rows


def _unseen_builds(
    connection: duckdb.DuckDBPyConnection, source: str, copy: str
) -> dict[tuple[str, str], tuple[str, list[str], int]]:
    """Per mart (its schema and name) the copy can catch up on by key: (its `__changes` table,
    qualified, its key columns, the last build the copy has). models.py keeps, beside
    `_model_state`, per mart the keys each incremental build changed since `since_build`; the
    copy can use them when it has that same mark (the mart was not rebuilt whole since the
    copy's build) and a build still kept."""
    found: dict[tuple[str, str], tuple[str, list[str], int]] = {}
    tables = set(
        connection.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = ?",
            [source],
        ).fetchall()
    )
    states = {
        schema
        for schema, name in tables
        if name == MODEL_STATE
        and all(
            _has_column(connection, database, schema, MODEL_STATE, "model_schema")
            for database in (source, copy)
        )
    }
    for schema in sorted(states):
        state = f"{sql_identifier(schema)}.{MODEL_STATE}"
        marks = connection.execute(
            f"select s.model_schema, s.model_name, c.build_id "
            f"from {sql_identifier(source)}.{state} as s join {copy}.{state} as c "
            "using (model_name) where s.since_build = c.since_build "
            f"and c.build_id >= s.since_build and c.build_id > s.build_id - {MODEL_CHANGES_KEPT}"
        ).fetchall()
        for model_schema, model, copy_build in marks:
            changes = f"{model}{MODEL_CHANGES}"
            if (schema, changes) not in tables:
                continue
            key = [
                column
                for (column,) in connection.execute(
                    "select column_name from duckdb_columns() where database_name = ? "
                    "and schema_name = ? and table_name = ? and column_name != 'build_id' "
                    "order by column_index",
                    [source, schema, changes],
                ).fetchall()
            ]
            qualified = f"{sql_identifier(schema)}.{sql_identifier(changes)}"
            found[(model_schema, model)] = (qualified, key, int(copy_build))
    return found


def _has_column(
    connection: duckdb.DuckDBPyConnection, database: str, schema: str, table: str, column: str
) -> bool:
    (count,) = _one_row(
        connection.execute(
            "select count(*) from duckdb_columns() where database_name = ? and schema_name = ? "
            "and table_name = ? and column_name = ?",
            [database, schema, table, column],
        )
    )
    return bool(count)


def _apply_changes(
    connection: duckdb.DuckDBPyConnection,
    source: str,
    copy: str,
    table: _Table,
    changes: str,
    key: list[str],
    copy_build: int,
) -> int:
    """Replace the copy's rows of the keys the builds after `copy_build` changed (`changes`):
    a mart of a year is 700,000 rows; a build changes a few thousand."""
    keys = (
        f"(select distinct {', '.join(sql_identifier(c) for c in key)} from "
        f"{sql_identifier(source)}.{changes} "
        f"where build_id > {int(copy_build)})"
    )
    matches = " and ".join(f"t.{sql_identifier(c)} = k.{sql_identifier(c)}" for c in key)
    connection.execute(
        f"delete from {copy}.{table.qualified} as t using {keys} as k where {matches}"
    )
    (rows,) = _one_row(
        connection.execute(
            f"insert into {copy}.{table.qualified} select t.* from "
            f"{sql_identifier(source)}.{table.qualified} as t semi join {keys} as k on {matches}"
        )
    )
    return int(rows)


def _of_loads(database: str, table: _Table, loads: list[str]) -> str:
    """A condition on `table`'s rows: written by `loads`, the query's one parameter."""
    if table.root is None:
        return _of_loads_in_range(loads)
    root = f"{database}.{sql_identifier(table.schema)}.{sql_identifier(table.root)}"
    return f"_dlt_root_id in (select _dlt_id from {root} where {_of_loads_in_range(loads)})"


def _of_loads_in_range(loads: list[str]) -> str:
    """`_dlt_load_id in $1`, with the range of `loads` as literals: DuckDB checks that range
    against each row group's min/max and skips the groups of other loads (load ids grow with
    time, so a few new loads are the last row groups); the list alone is a join over every row."""
    if not loads:
        return "false"
    low, high = _text_literal(min(loads)), _text_literal(max(loads))
    return f"_dlt_load_id between {low} and {high} and _dlt_load_id in (select unnest($1))"


def _text_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _insert(
    connection: duckdb.DuckDBPyConnection,
    source: str,
    copy: str,
    table: _Table,
    loads: list[str] | None = None,
    from_rowid: int = 0,
) -> int:
    query = (
        f"insert into {copy}.{table.qualified} "
        f"select * from {sql_identifier(source)}.{table.qualified}"
    )
    if loads is None:
        (rows,) = _one_row(connection.execute(query))
    else:
        condition = _of_loads(sql_identifier(source), table, loads)
        if from_rowid:
            condition = f"rowid >= {int(from_rowid)} and {condition}"
        (rows,) = _one_row(connection.execute(f"{query} where {condition}", [loads]))
    return int(rows)


def _one_row(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """The row of a statement that always returns one (`current_database()`, an insert's count,
    the catalog row of a table the copy holds)."""
    row = result.fetchone()
    if row is None:
        raise PublishFailed("DuckDB returned no row where one is always returned")
    return row


def _fsync(path: Path) -> None:
    with path.open("rb") as written:
        os.fsync(written.fileno())


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems cannot sync a folder; the rename stands
        pass
    finally:
        os.close(descriptor)


def _bytes_written() -> int | None:
    """Bytes this process has had written to storage so far (Linux /proc), else None."""
    try:
        with open("/proc/self/io") as io:
            for line in io:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def remove_database_file(path: Path) -> None:
    """Remove a DuckDB file and the write-ahead log it may have beside it."""
    path.unlink(missing_ok=True)
    path.with_name(f"{path.name}.wal").unlink(missing_ok=True)


def sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
