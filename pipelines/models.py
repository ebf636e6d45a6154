"""Build the SQL models in `sql/` on the pipeline's destination, after every load or on demand.

The models are written once, in DuckDB's SQL dialect, as one `select` per file: `sql/staging/`
(rename and cast the raw tables), `sql/intermediate/` (logic shared by marts), `sql/marts/` (what
analysts and BI tools read). They go into their own schema beside the raw dataset
(`<dataset>_models` by default), in dependency order derived from their `ref()` calls.

A model refers to other things only through placeholders, rendered here:

    {{ ref('stg_controllers') }}          another model, in the models schema
    {{ source('controllers') }}           a raw table, declared in sql/sources.toml
    {{ local_date('last_seen_at') }}      the calendar day of an instant in the configured zone
    {{ local_timestamp('unlinked_at') }}  the wall-clock time of an instant in that zone
    {{ iso_timestamp('raised_at') }}      ISO 8601 text as a timestamp (anything else: null)
    {{ online_threshold }}                the online threshold as an interval

Everything that differs between destinations lives in those macros and in `translate()`, which
turns the rendered DuckDB SQL into the destination's dialect with sqlglot. A model's header says
`-- materialized: table` to be rebuilt as a table; otherwise it is a view. Tables are built
beside the live models first and swapped in with the views in one short transaction (see
`build_models`), so readers see either the old models or the new ones. `ref()` may only stand
where a table name can (the import CTEs' `select * from {{ ref('...') }}`): while tables are
built, a view model is inlined there as a subquery.

Settings (`[models]` in .dlt/config.toml, or MODELS__TIMEZONE etc. in the environment):
`timezone` (IANA name, default "UTC"), `online_threshold_minutes` (default 15) and `schema`
(default "<dataset>_models").
"""

from __future__ import annotations

import ast
import logging
import re
import time
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dlt
import sqlglot
from sqlglot.errors import ErrorLevel

from .deployment import ConfigError, setting, where_set

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
LAYERS = ("staging", "intermediate", "marts")
MODELS_DIALECT = "duckdb"  # the dialect sql/ is written in

# dlt destination name -> sqlglot dialect.
DIALECTS = {
    "duckdb": "duckdb",
    "motherduck": "duckdb",
    "postgres": "postgres",
    "redshift": "redshift",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "databricks": "databricks",
    "mssql": "tsql",
    "synapse": "tsql",
    "clickhouse": "clickhouse",
    "athena": "athena",
}

# dlt data types (sql/sources.toml) -> SQL types in the models' dialect.
SQL_TYPES = {
    "text": "varchar",
    "double": "double",
    "bigint": "bigint",
    "bool": "boolean",
    "timestamp": "timestamptz",
    "date": "date",
}

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*(?:\((.*?)\))?\s*\}\}")
_CALL = re.compile(r"\{\{\s*(ref|source)\s*\(\s*['\"](\w+)['\"]\s*\)\s*\}\}")
_MATERIALIZED = re.compile(r"^--\s*materialized:\s*(view|table)\b", re.MULTILINE)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_ISO_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"
_NEXT = "__next"  # suffix of a table model while it is being rebuilt


@dataclass(frozen=True)
class ModelSettings:
    """How the models bucket days, call a pump online, and where they go."""

    timezone: str = "UTC"
    online_threshold_minutes: int = 15
    schema: str | None = None  # None: "<dataset>_models"

    def __post_init__(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ConfigError(
                f"models.timezone: unknown time zone {self.timezone!r}, expected an IANA name "
                f"such as 'Europe/Amsterdam' ({where_set('models.timezone')})"
            ) from error
        minutes = self.online_threshold_minutes
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
            raise ConfigError(
                f"models.online_threshold_minutes must be a positive integer, not {minutes!r} "
                f"({where_set('models.online_threshold_minutes')})"
            )
        if self.schema is not None:
            _check_identifier(self.schema, "[models] schema")

    @classmethod
    def from_config(cls) -> ModelSettings:
        """`[models]` from the environment, .dlt/secrets.toml or .dlt/config.toml."""
        defaults = cls.__dataclass_fields__
        return cls(
            timezone=setting("models.timezone", str, defaults["timezone"].default),
            online_threshold_minutes=setting(
                "models.online_threshold_minutes", int, defaults["online_threshold_minutes"].default
            ),
            schema=setting("models.schema", str, None) or None,
        )


@dataclass(frozen=True)
class Model:
    name: str
    layer: str
    path: Path
    template: str
    materialized: str  # "view" | "table"
    refs: tuple[str, ...]
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    """Where and how models are rendered.

    `raw_columns` maps each existing raw table to its columns; None assumes every declared source
    table and column exists (used to translate without a destination).
    """

    raw_schema: str
    models_schema: str
    settings: ModelSettings
    raw_columns: Mapping[str, set[str]] | None = None


def load_sources(sql_dir: Path = SQL_DIR) -> dict[str, dict[str, str]]:
    """sql/sources.toml: raw table -> {column: dlt data type}."""
    with open(sql_dir / "sources.toml", "rb") as file:
        sources = tomllib.load(file)
    for table, columns in sources.items():
        for column, data_type in columns.items():
            if data_type not in SQL_TYPES:
                raise ValueError(f"sql/sources.toml [{table}] {column}: unknown type {data_type!r}")
    return sources


def load_models(sql_dir: Path = SQL_DIR) -> list[Model]:
    """Every model in sql/, in dependency order (staging, intermediate, marts; by name within)."""
    sources = load_sources(sql_dir)
    models: dict[str, Model] = {}
    for layer in LAYERS:
        for path in sorted((sql_dir / layer).glob("*.sql")):
            template = path.read_text()
            calls = _CALL.findall(template)
            materialized = _MATERIALIZED.search(template)
            model = Model(
                name=path.stem,
                layer=layer,
                path=path,
                template=template,
                materialized=materialized.group(1) if materialized else "view",
                refs=tuple(sorted({name for kind, name in calls if kind == "ref"})),
                sources=tuple(sorted({name for kind, name in calls if kind == "source"})),
            )
            if model.name in models:
                raise ValueError(f"two models are named {model.name}: {path}")
            models[model.name] = model
    for model in models.values():
        unknown = [name for name in model.refs if name not in models]
        undeclared = [name for name in model.sources if name not in sources]
        if unknown:
            raise ValueError(f"{model.path}: ref() to unknown models {unknown}")
        if undeclared:
            raise ValueError(
                f"{model.path}: source() tables missing from sources.toml {undeclared}"
            )
    return _dependency_order(list(models.values()))


def _dependency_order(models: list[Model]) -> list[Model]:
    pending = sorted(models, key=lambda m: (LAYERS.index(m.layer), m.name))
    ordered: list[Model] = []
    built: set[str] = set()
    while pending:
        ready = next((m for m in pending if built.issuperset(m.refs)), None)
        if ready is None:
            raise ValueError(f"models refer to each other in a cycle: {[m.name for m in pending]}")
        ordered.append(ready)
        built.add(ready.name)
        pending.remove(ready)
    return ordered


# --- rendering: the only place that knows about time zones, missing columns and intervals -------


def render(
    model: Model,
    target: Target,
    sources: Mapping[str, Mapping[str, str]],
    relation: Callable[[str], str] | None = None,
) -> str:
    """The model's select statement in the models' dialect (DuckDB), placeholders filled in.

    `relation(name)` says what `ref(name)` becomes; by default the model in the models schema.
    """
    zone = target.settings.timezone.replace("'", "''")

    def local_timestamp(expression: str) -> str:
        return f"(({expression}) at time zone '{zone}')"

    def local_date(expression: str) -> str:
        return f"cast({local_timestamp(expression)} as date)"

    def iso_timestamp(expression: str) -> str:
        return (
            f"case when regexp_matches({expression}, '{_ISO_TIMESTAMP}') "
            f"then cast({expression} as timestamptz) end"
        )

    def ref(name: str) -> str:
        return relation(name) if relation is not None else f"{target.models_schema}.{name}"

    def source(table: str) -> str:
        return _source_relation(table, sources[table], target)

    macros = {
        "ref": ref,
        "source": source,
        "local_date": local_date,
        "local_timestamp": local_timestamp,
        "iso_timestamp": iso_timestamp,
    }
    variables = {
        "online_threshold": f"interval '{target.settings.online_threshold_minutes} minutes'"
    }

    def fill(match: re.Match[str]) -> str:
        name, arguments = match.group(1), match.group(2)
        if arguments is None:
            if name not in variables:
                raise ValueError(f"{model.path}: unknown placeholder {{{{ {name} }}}}")
            return variables[name]
        if name not in macros:
            raise ValueError(f"{model.path}: unknown macro {name}()")
        values = ast.literal_eval(f"({arguments},)")
        return macros[name](*values)

    return _PLACEHOLDER.sub(fill, model.template)


def _source_relation(table: str, declared: Mapping[str, str], target: Target) -> str:
    """The raw table, or a stand-in with typed NULLs for what dlt has not created yet."""
    qualified = f"{target.raw_schema}.{table}"
    if target.raw_columns is None:
        return qualified
    existing = target.raw_columns.get(table)
    if existing is not None and existing.issuperset(declared):
        return qualified
    columns = ", ".join(
        column
        if existing is not None and column in existing
        else f"cast(null as {SQL_TYPES[data_type]}) as {column}"
        for column, data_type in declared.items()
    )
    if existing is None:
        logger.info("raw table %s does not exist yet: its models are empty", qualified)
        return f"(select {columns} where 1 = 0) as {table}"
    missing = sorted(set(declared) - existing)
    logger.info("raw table %s has no column %s yet: read as null", qualified, ", ".join(missing))
    return f"(select {columns} from {qualified}) as {table}"


def translate(sql: str, dialect: str) -> str:
    """The rendered DuckDB SQL in another sqlglot dialect; raises if something cannot be."""
    if dialect == MODELS_DIALECT:
        return sql
    statements = sqlglot.transpile(
        sql, read=MODELS_DIALECT, write=dialect, pretty=True, unsupported_level=ErrorLevel.RAISE
    )
    if len(statements) != 1:
        raise ValueError(f"a model must be one select statement, found {len(statements)}")
    return statements[0]


def compile_models(
    dialect: str, target: Target, sql_dir: Path = SQL_DIR
) -> list[tuple[Model, str]]:
    """Every model with its select statement in `dialect`, in dependency order."""
    sources = load_sources(sql_dir)
    compiled = []
    for model in load_models(sql_dir):
        try:
            compiled.append((model, translate(render(model, target, sources), dialect)))
        except Exception as error:
            raise ValueError(f"{model.path}: cannot compile for {dialect}: {error}") from error
    return compiled


# --- building on a pipeline's destination -----------------------------------------------------


def models_schema(pipeline: dlt.Pipeline, settings: ModelSettings | None = None) -> str:
    settings = settings or ModelSettings.from_config()
    return settings.schema or f"{pipeline.dataset_name}_models"


def destination_dialect(pipeline: dlt.Pipeline) -> str:
    if pipeline.destination is None:
        raise ValueError("the pipeline has no destination")
    name = pipeline.destination.destination_name
    if name not in DIALECTS:
        raise ValueError(f"no SQL dialect known for destination {name!r}")
    return DIALECTS[name]


class BuildStopped(Exception):
    """The build was asked to stop (SIGTERM/SIGINT) before its swap: the live models are as they
    were, and the half-built `__next` tables are dropped by the next build."""


def build_models(
    pipeline: dlt.Pipeline,
    settings: ModelSettings | None = None,
    sql_dir: Path = SQL_DIR,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[str]:
    """(Re)build every model on the pipeline's destination; returns their names in build order.

    Two phases, so readers are blocked only for a moment and a failure changes nothing:
    1. every table model is built as `<name>__next`, reading the other `__next` tables and the
       view models inlined as subqueries (the live models are not touched);
    2. one short transaction drops the live models, renames the `__next` tables and creates the
       views again.
    """
    settings = settings or ModelSettings.from_config()
    raw_schema = _check_identifier(pipeline.dataset_name, "dataset name")
    schema = _check_identifier(models_schema(pipeline, settings), "models schema")
    dialect = destination_dialect(pipeline)
    started = time.monotonic()
    with pipeline.sql_client() as client:
        target = Target(raw_schema, schema, settings, _raw_columns(client, raw_schema))
        sources = load_sources(sql_dir)
        models = load_models(sql_dir)
        by_name = {model.name: model for model in models}

        def next_relation(name: str) -> str:
            model = by_name[name]
            if model.materialized == "table":
                return f"{schema}.{name}{_NEXT}"
            return f"({render(model, target, sources, next_relation)}) as {name}"

        statements = {}
        for model in models:
            relation = next_relation if model.materialized == "table" else None
            try:
                statements[model.name] = translate(
                    render(model, target, sources, relation), dialect
                )
            except Exception as error:
                raise ValueError(f"{model.path}: cannot compile for {dialect}: {error}") from error

        client.execute_sql(f"create schema if not exists {schema}")
        existing = _existing_objects(client, schema)
        for model in models:
            if model.materialized != "table":
                continue
            if should_stop():
                raise BuildStopped(f"stopped before building {schema}.{model.name}")
            if f"{model.name}{_NEXT}" in existing:  # left by a build that failed
                client.execute_sql(f"drop table {schema}.{model.name}{_NEXT}")
            began = time.monotonic()
            client.execute_sql(
                f"create table {schema}.{model.name}{_NEXT} as\n{statements[model.name]}"
            )
            logger.debug(
                "built %s.%s%s in %.2f s", schema, model.name, _NEXT, time.monotonic() - began
            )
        if should_stop():
            raise BuildStopped("stopped before swapping in the new models")
        began = time.monotonic()
        with client.begin_transaction():
            for model in reversed(models):
                kind = existing.get(model.name)
                if kind is not None:
                    client.execute_sql(f"drop {kind} {schema}.{model.name}")
            for model in models:
                if model.materialized == "table":
                    client.execute_sql(
                        f"alter table {schema}.{model.name}{_NEXT} rename to {model.name}"
                    )
                else:
                    client.execute_sql(
                        f"create view {schema}.{model.name} as\n{statements[model.name]}"
                    )
        logger.debug("swapped in the new models in %.2f s", time.monotonic() - began)
    logger.info(
        "built %d models in %s on %s in %.1f s",
        len(models),
        schema,
        pipeline.destination.destination_name,
        time.monotonic() - started,
    )
    return [model.name for model in models]


def drop_models(pipeline: dlt.Pipeline, settings: ModelSettings | None = None) -> None:
    """Drop the models schema (and everything in it).

    Call before a full refresh on Postgres: dlt drops the raw tables without CASCADE, which fails
    while the staging views depend on them.
    """
    schema = _check_identifier(models_schema(pipeline, settings), "models schema")
    with pipeline.sql_client() as client:
        client.execute_sql(f"drop schema if exists {schema} cascade")


def _raw_columns(client, schema: str) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    rows = client.execute_sql(
        "select table_name, column_name from information_schema.columns "
        f"where table_schema = '{schema}'"
    )
    columns: dict[str, set[str]] = {}
    for table, column in rows or []:
        columns.setdefault(table, set()).add(column)
    return columns


def _existing_objects(client, schema: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    rows = client.execute_sql(
        "select table_name, table_type from information_schema.tables "
        f"where table_schema = '{schema}'"
    )
    return {name: "view" if kind == "VIEW" else "table" for name, kind in rows or []}


def _check_identifier(name: str | None, what: str) -> str:
    if not name or not _IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} must be lowercase letters, digits and underscores")
    return name
