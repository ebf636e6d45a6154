"""Build the SQL models in `sql/` on the pipeline's destination, after every load or on demand.

The models are written once, in DuckDB's SQL dialect, as one `select` per file: `sql/staging/`
(rename and cast the raw tables), `sql/intermediate/` (logic and bookkeeping shared by marts),
`sql/marts/` (what analysts and BI tools read). The marts go into a schema that holds nothing
else (`<dataset>_models` by default); the staging views, intermediate tables and the build's
bookkeeping into `<that schema>_internal`, out of analysts' way. Models are built in dependency
order derived from their `ref()` calls.

A model's header says how it is materialized (sql/README.md tells the story):

    -- materialized: view             (the default) a view, created again by every build
    -- materialized: table            rebuilt whole by every build (small tables only)
    -- materialized: incremental      built whole once, then updated in place:
    -- unique_key: pump_id, day_date    an incremental build deletes the rows whose key its select
                                        returns and inserts the returned rows
    -- index: pump_id, reading_date   (optional, repeatable) an index for incremental queries
                                        (PostgreSQL; the unique key is always indexed)

A model refers to other things only through placeholders, rendered here:

    {{ ref('stg_controllers') }}          another model, in its schema
    {{ source('controllers') }}           a raw table, declared in sql/sources.toml
    {{ local_date('last_seen_at') }}      the calendar day of an instant in the configured zone
    {{ local_timestamp('unlinked_at') }}  the wall-clock time of an instant in that zone
    {{ iso_timestamp('raised_at') }}      ISO 8601 text as a timestamp (anything else: null)
    {{ online_threshold }}                the online threshold as an interval

and, for incremental models, a small dbt-like templating:

    {% if is_incremental() %} ... {% else %} ... {% endif %}
                                          the first part in an incremental build, the second (or
                                          nothing) in a full one; not nested
    {{ this }}                            the model's own table as the last build left it
    {{ new_rows('stg_fleet_snapshots') }} the rows of a model that are new to this build: for a
                                          staging view, its rows whose `load_id` (the raw
                                          `_dlt_load_id`) is one of the loads committed since the
                                          last build, inlined as literals; for an incremental
                                          model, the rows this build wrote (`_build_id`)
    {{ previous('int_x') }}               a model built later in the same build, as the last
                                          build left it (a reader of its own bookkeeping)
    {{ build_id }}                        this build's number, stamped into `_build_id` columns

An incremental select returns, in an incremental build, the rows of every key it recomputes; a
key that must lose its row comes back with `_removed = true`. Columns the table does not have
are not inserted.

Everything that differs between destinations lives in those macros and in `translate()`, which
turns the rendered DuckDB SQL into the destination's dialect with sqlglot. The whole build runs in
one transaction (see `build_models`): incremental tables are updated in place, other tables are
built beside the live models as `<name>__next` and swapped in with the views at its end, so
readers see either the old models or the new ones. `ref()` may only stand where a table name can
(the import CTEs' `select * from {{ ref('...') }}`): while tables are built, a view model is
inlined there as a subquery.

What the last build did is kept in the internal schema: `_model_state` (per model its SQL hash,
how and when it was built, the build number) and `_model_loads` (the dlt loads it processed). A
model is rebuilt whole when there is no state, when its rendered SQL (with the settings and the
raw tables' shape) or an upstream model's changed, when an upstream table was rebuilt whole, or
with `build_models(..., full_refresh=True)`.

Settings (`[models]` in .dlt/config.toml, or MODELS__TIMEZONE etc. in the environment):
`timezone` (IANA name, default "UTC"), `online_threshold_minutes` (default 15) and `schema`
(the marts', default "<dataset>_models"; the internal schema is named after it).
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import importlib.resources
import logging
import re
import time
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
import sqlglot
from dlt.destinations.sql_client import SqlClientBase
from sqlglot.errors import ErrorLevel

from . import dictionary
from .deployment import ConfigError, setting, where_set

logger = logging.getLogger(__name__)

# sql/ ships inside the package (pipelines/sql links to the repository's sql/; a wheel carries
# it as package data), so an install apart from the checkout finds the models too.
SQL_DIR = Path(str(importlib.resources.files("pipelines") / "sql"))
LAYERS = ("staging", "intermediate", "marts")
MODELS_DIALECT = "duckdb"  # the dialect sql/ is written in
MATERIALIZATIONS = ("view", "table", "incremental")

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
_CALL = re.compile(r"\{\{\s*(ref|source|new_rows|previous)\s*\(\s*['\"](\w+)['\"]\s*\)\s*\}\}")
_BLOCK = re.compile(
    r"\{%-?\s*if\s+is_incremental\(\)\s*-?%\}(.*?)"
    r"(?:\{%-?\s*else\s*-?%\}(.*?))?\{%-?\s*endif\s*-?%\}",
    re.DOTALL,
)
_TAG = re.compile(r"\{%.*?%\}", re.DOTALL)
_MATERIALIZED = re.compile(r"^--\s*materialized:\s*(\w+)", re.MULTILINE)
_UNIQUE_KEY = re.compile(r"^--\s*unique_key:\s*(.+)$", re.MULTILINE)
_INDEX = re.compile(r"^--\s*index:\s*(.+)$", re.MULTILINE)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_ISO_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"
_NEXT = "__next"  # suffix of a table model while it is being rebuilt
_DELTA = "__delta"  # suffix of the temporary table holding an incremental model's new rows
INTERNAL = "_internal"  # suffix of the schema of everything but the marts
STATE_TABLE = "_model_state"  # per model: SQL hash, how and when it was last built
LOADS_TABLE = "_model_loads"  # the dlt loads the last build had processed
LOAD_ID = "load_id"  # the staging models' name for the raw `_dlt_load_id`
BUILD_ID = "_build_id"  # the incremental models' column: the build that wrote the row
# `<mart>__changes` (its unique key, build_id), in the internal schema: the keys each incremental
# build of a mart wrote
# or removed, on DuckDB, so that a reader copy (reader_copies.py) rewrites only those rows; kept
# for the last CHANGES_KEPT builds, emptied when the mart is built whole (`since_build` in
# `_model_state` says when).
CHANGES = "__changes"
CHANGES_KEPT = 200
REMOVED = "_removed"  # an incremental select's flag: the key loses its row
DEFAULT_TIMEZONE = "UTC"
DEFAULT_ONLINE_THRESHOLD_MINUTES = 15


@dataclass(frozen=True)
class ModelSettings:
    """How the models bucket days, call a pump online, and where they go."""

    timezone: str = DEFAULT_TIMEZONE
    online_threshold_minutes: int = DEFAULT_ONLINE_THRESHOLD_MINUTES
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
        return cls(
            timezone=setting("models.timezone", str, DEFAULT_TIMEZONE),
            online_threshold_minutes=setting(
                "models.online_threshold_minutes", int, DEFAULT_ONLINE_THRESHOLD_MINUTES
            ),
            schema=setting("models.schema", str, None) or None,
        )


@dataclass(frozen=True)
class Model:
    name: str
    layer: str
    path: Path
    template: str
    materialized: str  # "view" | "table" | "incremental"
    refs: tuple[str, ...]  # ref() and new_rows() targets: built before this model
    sources: tuple[str, ...]
    unique_key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    previous: tuple[str, ...] = ()  # previous() targets: built after this model


@dataclass(frozen=True)
class Target:
    """Where and how models are rendered.

    `raw_columns` maps each existing raw table to its columns; None assumes every declared source
    table and column exists (used to translate without a destination).
    """

    raw_schema: str
    models_schema: str  # the marts'
    settings: ModelSettings
    raw_columns: Mapping[str, set[str]] | None = None

    @property
    def internal_schema(self) -> str:
        return internal_schema_of(self.models_schema)

    def schema_of(self, model: Model) -> str:
        """Where the model lives: the marts in the models schema, the rest out of the way."""
        return self.models_schema if model.layer == "marts" else self.internal_schema


def internal_schema_of(models_schema: str) -> str:
    """The schema of the staging views, intermediate tables and the build's bookkeeping."""
    return f"{models_schema}{INTERNAL}"


@dataclass(frozen=True)
class Increment:
    """What an incremental rendering fills in: the loads new to this build and its number.

    `new_loads` None renders a stand-in (to hash a template, not to run it)."""

    new_loads: tuple[str, ...] | None
    build_id: int


@dataclass(frozen=True, eq=False)
class BuiltModel(str):
    """A model a build produced. It is its name (a `str`: `', '.join(built)` lists the names);
    `how` is "full", "incremental" or "view", `reason` says why (e.g. "SQL changed"), and
    `rows_changed` counts the rows an incremental build wrote or removed (None otherwise)."""

    name: str
    how: str
    reason: str
    rows_changed: int | None = None

    def __new__(
        cls, name: str, how: str, reason: str, rows_changed: int | None = None
    ) -> BuiltModel:
        return super().__new__(cls, name)


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
            model = _parse_model(path, layer)
            if model.name in models:
                raise ValueError(f"two models are named {model.name}: {path}")
            models[model.name] = model
    for model in models.values():
        unknown = [name for name in model.refs + model.previous if name not in models]
        undeclared = [name for name in model.sources if name not in sources]
        if unknown:
            raise ValueError(f"{model.path}: ref() to unknown models {unknown}")
        if undeclared:
            raise ValueError(
                f"{model.path}: source() tables missing from sources.toml {undeclared}"
            )
        for kind, name in _CALL.findall(model.template):
            if kind == "new_rows" and models[name].materialized == "table":
                raise ValueError(f"{model.path}: new_rows() of a table model ({name})")
    ordered = _dependency_order(list(models.values()))
    position = {model.name: index for index, model in enumerate(ordered)}
    for model in ordered:
        for name in model.previous:
            if position[name] < position[model.name] or models[name].materialized != "incremental":
                raise ValueError(
                    f"{model.path}: previous('{name}') needs an incremental model built after it"
                )
    return ordered


def _parse_model(path: Path, layer: str) -> Model:
    template = path.read_text()
    calls = _CALL.findall(template)
    found = _MATERIALIZED.search(template)
    materialized = found.group(1) if found else "view"
    if materialized not in MATERIALIZATIONS:
        raise ValueError(f"{path}: materialized must be one of {MATERIALIZATIONS}")
    key = _UNIQUE_KEY.search(template)
    unique_key = tuple(column.strip() for column in key.group(1).split(",")) if key else ()
    if materialized == "incremental" and not unique_key:
        raise ValueError(f"{path}: an incremental model needs a `-- unique_key:` header")
    indexes = tuple(
        tuple(column.strip() for column in found.group(1).split(","))
        for found in _INDEX.finditer(template)
    )
    for column in unique_key + tuple(c for index in indexes for c in index):
        _check_identifier(column, f"{path}: key column")
    return Model(
        name=path.stem,
        layer=layer,
        path=path,
        template=template,
        materialized=materialized,
        refs=tuple(sorted({name for kind, name in calls if kind in ("ref", "new_rows")})),
        sources=tuple(sorted({name for kind, name in calls if kind == "source"})),
        unique_key=unique_key,
        indexes=indexes,
        previous=tuple(sorted({name for kind, name in calls if kind == "previous"})),
    )


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
    increment: Increment | None = None,
    models: Mapping[str, Model] | None = None,
) -> str:
    """The model's select statement in the models' dialect (DuckDB), placeholders filled in.

    `relation(name)` says what `ref(name)` becomes; by default the model in the models schema.
    `increment` renders the incremental variant (`is_incremental()` true); `models` (every model
    by name) tells which schema each model lives in.
    """
    zone = target.settings.timezone.replace("'", "''")

    def home(name: str) -> str:
        if models is None or name not in models:
            raise ValueError(f"{model.path}: {name} needs the models to render")
        return f"{target.schema_of(models[name])}.{name}"

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
        return relation(name) if relation is not None else home(name)

    def source(table: str) -> str:
        return _source_relation(table, sources[table], target)

    def new_rows(name: str) -> str:
        if increment is None:
            return ref(name)
        upstream = (models or {}).get(name)
        if upstream is None:
            raise ValueError(f"{model.path}: new_rows('{name}') needs the models to render")
        if upstream.materialized == "incremental":
            condition = f"{BUILD_ID} = {increment.build_id}"
        elif increment.new_loads is None:
            condition = f"{LOAD_ID} in ('<new loads>')"
        elif increment.new_loads:
            ids = ", ".join(_text_literal(load_id) for load_id in increment.new_loads)
            condition = f"{LOAD_ID} in ({ids})"
        else:
            condition = "1 = 0"
        return f"(select * from {ref(name)} where {condition}) as {name}"

    def previous(name: str) -> str:
        return home(name)

    macros = {
        "ref": ref,
        "source": source,
        "local_date": local_date,
        "local_timestamp": local_timestamp,
        "iso_timestamp": iso_timestamp,
        "new_rows": new_rows,
        "previous": previous,
    }
    variables = {
        "online_threshold": f"interval '{target.settings.online_threshold_minutes} minutes'",
        "this": f"{target.schema_of(model)}.{model.name}",
        "build_id": str(increment.build_id if increment is not None else 0),
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

    def choose(match: re.Match[str]) -> str:
        return match.group(1) if increment is not None else (match.group(2) or "")

    text = _BLOCK.sub(choose, model.template)
    leftover = _TAG.search(text)
    if leftover:
        raise ValueError(
            f"{model.path}: unsupported template tag {leftover.group(0)!r} (only "
            "{% if is_incremental() %} ... {% else %} ... {% endif %}, not nested)"
        )
    return _PLACEHOLDER.sub(fill, text)


def _text_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


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
    dialect: str, target: Target, sql_dir: Path = SQL_DIR, incremental: bool = False
) -> list[tuple[Model, str]]:
    """Every model with its select statement in `dialect`, in dependency order (the incremental
    variant of incremental models with `incremental`, for a build with one new load)."""
    sources = load_sources(sql_dir)
    models = load_models(sql_dir)
    by_name = {model.name: model for model in models}
    compiled = []
    for model in models:
        increment = (
            Increment(("0",), 1) if incremental and model.materialized == "incremental" else None
        )
        try:
            sql = render(model, target, sources, increment=increment, models=by_name)
            compiled.append((model, translate(sql, dialect)))
        except Exception as error:
            raise ValueError(f"{model.path}: cannot compile for {dialect}: {error}") from error
    return compiled


def model_hashes(
    models: Sequence[Model], target: Target, sources: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """Per model, a hash of both renderings of its SQL (so of the settings and the raw tables'
    shape too) and of every upstream model's hash: equal hashes, same results."""
    by_name = {model.name: model for model in models}
    own: dict[str, str] = {}
    for model in models:
        text = render(model, target, sources, models=by_name)
        if model.materialized == "incremental":
            text += "\n-- incremental --\n" + render(
                model, target, sources, increment=Increment(None, 0), models=by_name
            )
        own[model.name] = hashlib.sha256(text.encode()).hexdigest()
    hashes: dict[str, str] = {}
    for model in models:  # dependency order: upstream hashes are known
        parts = [own[model.name]]
        parts += [hashes[name] for name in model.refs]
        parts += [own[name] for name in model.previous]  # its bookkeeping's definition
        hashes[model.name] = hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]
    return hashes


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
    """The build was asked to stop (SIGTERM/SIGINT) before its end: its transaction is rolled
    back, so the live models (and the build bookkeeping) are as they were."""


@dataclass(frozen=True)
class _State:
    """What the last build left: per model its hash, the loads it processed, its number."""

    hashes: dict[str, str]
    loads: frozenset[str]
    build_id: int
    # per model, the build that last built it whole (None: unknown, from an older version)
    since: dict[str, int]


def build_models(
    pipeline: dlt.Pipeline,
    settings: ModelSettings | None = None,
    sql_dir: Path = SQL_DIR,
    should_stop: Callable[[], bool] = lambda: False,
    full_refresh: bool = False,
) -> list[BuiltModel]:
    """Build every model on the pipeline's destination; returns them in build order.

    One transaction, so readers see the old models or the new ones and a failure (or a stop
    asked for by `should_stop`, checked between models) changes nothing:
    1. in dependency order, an incremental model whose SQL and upstream models are unchanged
       gets its new rows (delete and insert by its unique key, in place); any other table model
       is built as `<name>__next`, reading the other `__next` tables and the view models inlined
       as subqueries;
    2. at the end the live models rebuilt whole are dropped, the `__next` tables renamed, the
       views created again and the bookkeeping (`_model_state`, `_model_loads`) written.
    `full_refresh` rebuilds every model from all history.
    """
    settings = settings or ModelSettings.from_config()
    raw_schema = _check_identifier(pipeline.dataset_name, "dataset name")
    schema = _check_identifier(models_schema(pipeline, settings), "models schema")
    dialect = destination_dialect(pipeline)
    started = time.monotonic()
    with pipeline.sql_client() as client:
        raw_columns = _raw_columns(client, raw_schema)
        target = Target(raw_schema, schema, settings, raw_columns)
        sources = load_sources(sql_dir)
        models = load_models(sql_dir)
        by_name = {model.name: model for model in models}
        hashes = model_hashes(models, target, sources)

        internal = target.internal_schema
        home = {model.name: target.schema_of(model) for model in models}
        client.execute_sql(f"create schema if not exists {schema}")
        client.execute_sql(f"create schema if not exists {internal}")
        existing = _existing_objects(client, (schema, internal))
        live = {name: existing.get((home[name], name)) for name in home}
        state = None if full_refresh else _read_state(client, internal, existing)
        committed = _committed_loads(client, raw_schema, raw_columns)
        new_loads = tuple(sorted(committed - state.loads)) if state else tuple(sorted(committed))
        build_id = (state.build_id if state else 0) + 1
        plan = _plan(models, hashes, state, live, full_refresh)
        logger.debug(
            "models build %d: %d new loads; %s",
            build_id,
            len(new_loads),
            ", ".join(f"{name} {how} ({reason})" for name, (how, reason) in plan.items()),
        )
        increment = Increment(new_loads, build_id)

        def relation(name: str) -> str:
            model = by_name[name]
            if model.materialized == "view":
                return f"({render(model, target, sources, relation, models=by_name)}) as {name}"
            if plan[name][0] == "full":
                return f"{home[name]}.{name}{_NEXT}"
            return f"{home[name]}.{name}"  # updated in place earlier in this build

        statements = {}
        for model in models:
            incremental = plan[model.name][0] == "incremental"
            try:
                statements[model.name] = translate(
                    render(
                        model,
                        target,
                        sources,
                        None if model.materialized == "view" else relation,
                        increment if incremental else None,
                        by_name,
                    ),
                    dialect,
                )
            except Exception as error:
                raise ValueError(f"{model.path}: cannot compile for {dialect}: {error}") from error

        if dialect == "postgres":
            # The incremental queries are short: compiling them (JIT) took longer than running
            # them, a second per query at 10 M readings.
            client.execute_sql("set jit = off")
            _index_raw_loads(client, raw_schema, models, raw_columns)
        changed: dict[str, int | None] = {}
        with client.begin_transaction():
            for model in models:
                how = plan[model.name][0]
                if how == "view":
                    continue
                where = home[model.name]
                if should_stop():
                    raise BuildStopped(f"stopped before building {where}.{model.name}")
                began = time.monotonic()
                if how == "full":
                    if (where, f"{model.name}{_NEXT}") in existing:  # left by a failed build
                        client.execute_sql(f"drop table {where}.{model.name}{_NEXT}")
                    if (internal, f"{model.name}{CHANGES}") in existing:  # the old table's keys
                        client.execute_sql(f"drop table {internal}.{model.name}{CHANGES}")
                    client.execute_sql(
                        f"create table {where}.{model.name}{_NEXT} as\n{statements[model.name]}"
                    )
                    changed[model.name] = None
                else:
                    changed[model.name] = _apply_increment(
                        client,
                        where,
                        model,
                        statements[model.name],
                        dialect,
                        (internal, build_id) if _records_changes(model, dialect) else None,
                    )
                logger.debug(
                    "built %s.%s (%s) in %.2f s",
                    where,
                    model.name,
                    how,
                    time.monotonic() - began,
                )
            if should_stop():
                raise BuildStopped("stopped before swapping in the new models")
            began = time.monotonic()
            for model in reversed(models):
                kind = live[model.name]
                if kind is not None and plan[model.name][0] != "incremental":
                    client.execute_sql(f"drop {kind} {home[model.name]}.{model.name}")
            _drop_moved_objects(client, schema, models, existing)
            for model in models:
                how, where = plan[model.name][0], home[model.name]
                if how == "full":
                    client.execute_sql(
                        f"alter table {where}.{model.name}{_NEXT} rename to {model.name}"
                    )
                elif how == "view":
                    client.execute_sql(
                        f"create view {where}.{model.name} as\n{statements[model.name]}"
                    )
                if dialect == "postgres" and model.materialized == "incremental":
                    _index_model(client, where, model, analyze=how == "full")
            dictionary.write_comments(client, dialect, raw_schema, schema)
            _write_state(
                client, internal, plan, hashes, home, build_id, committed, new_loads, state
            )
            logger.debug("swapped in the new models in %.2f s", time.monotonic() - began)
    built = [BuiltModel(model.name, *plan[model.name], changed.get(model.name)) for model in models]
    logger.info(
        "built %d models (marts in %s) on %s in %.1f s (%s)",
        len(models),
        schema,
        pipeline.destination.destination_name,
        time.monotonic() - started,
        ", ".join(
            f"{sum(1 for b in built if b.how == how)} {how}"
            for how in ("incremental", "full", "view")
        ),
    )
    return built


def _plan(
    models: Sequence[Model],
    hashes: Mapping[str, str],
    state: _State | None,
    live: Mapping[str, str | None],
    full_refresh: bool,
) -> dict[str, tuple[str, str]]:
    """Per model, how this build makes it ("view", "full", "incremental") and why."""
    own: dict[str, str | None] = {}
    for model in models:
        if model.materialized != "incremental":
            own[model.name] = None
        elif full_refresh:
            own[model.name] = "full refresh requested"
        elif state is None:
            own[model.name] = "first build"
        elif model.name not in state.hashes:
            own[model.name] = "new model"
        elif state.hashes[model.name] != hashes[model.name]:
            own[model.name] = "its SQL, an upstream model's or the settings changed"
        elif live[model.name] != "table":
            own[model.name] = "its table is missing"
        else:
            own[model.name] = None
    by_name = {model.name: model for model in models}
    full = {name: reason for name, reason in own.items() if reason is not None}
    grown = True
    while grown:  # an incremental model reads its upstream's and its bookkeeping's old rows
        grown = False
        for model in models:
            if model.materialized != "incremental" or model.name in full:
                continue
            for name in _upstream(model, by_name) + model.previous:
                if name in full and by_name[name].materialized == "incremental":
                    full[model.name] = f"{name} is rebuilt whole"
                    grown = True
                    break
    plan = {}
    for model in models:
        if model.materialized == "view":
            plan[model.name] = ("view", "view")
        elif model.materialized == "table":
            plan[model.name] = ("full", "materialized: table")
        elif model.name in full:
            plan[model.name] = ("full", full[model.name])
        else:
            plan[model.name] = ("incremental", "new loads")
    return plan


def _upstream(model: Model, by_name: Mapping[str, Model]) -> tuple[str, ...]:
    found: list[str] = []
    pending = list(model.refs)
    while pending:
        name = pending.pop()
        if name not in found:
            found.append(name)
            pending.extend(by_name[name].refs)
    return tuple(found)


def _records_changes(model: Model, dialect: str) -> bool:
    """The marts are what reader copies hold (reader copies are DuckDB files): their keys
    changed by each build are kept for the copies to catch up on."""
    return dialect == "duckdb" and model.layer == "marts" and bool(model.unique_key)


def _apply_increment(
    client: SqlClientBase[Any],
    schema: str,
    model: Model,
    select: str,
    dialect: str,
    changes: tuple[str, int] | None = None,
) -> int:
    """Delete the live rows whose key the select returns and insert the returned rows (but those
    flagged `_removed`); returns how many keys it wrote or removed. With `changes` (a schema and
    this build's id), the keys are also added to the model's `__changes` table there."""
    table = f"{schema}.{model.name}"
    delta = f"{model.name}{_DELTA}"
    client.execute_sql(f"drop table if exists {delta}")
    client.execute_sql(f"create temporary table {delta} as\n{select}")
    delta_columns = _table_columns(client, delta, temporary=True)
    key = model.unique_key
    aggregates = ", ".join(f"min({c}), max({c})" for c in key)
    summary = client.execute_sql(f"select count(*), {aggregates} from {delta}")
    if not summary:  # an aggregate without `group by` always returns one row
        raise RuntimeError(f"counting the rows of {delta} returned no row")
    found = summary[0]
    count = int(found[0])
    if count:
        if dialect == "postgres":
            client.execute_sql(f"analyze {delta}")
        # Literal bounds let DuckDB skip row groups by their min/max and Postgres use an index.
        bounds = []
        for position, column in enumerate(key):
            low, high = found[1 + 2 * position], found[2 + 2 * position]
            if isinstance(low, int | float | dt.date) and not isinstance(low, bool):
                bounds.append(f"live.{column} between {_literal(low)} and {_literal(high)}")
        matches = " and ".join([f"live.{c} = delta.{c}" for c in key] + bounds)
        client.execute_sql(f"delete from {table} as live using {delta} as delta where {matches}")
        columns = ", ".join(
            c for c in _table_columns(client, model.name, schema=schema) if c in delta_columns
        )
        keep = f" where not coalesce({REMOVED}, false)" if REMOVED in delta_columns else ""
        client.execute_sql(f"insert into {table} ({columns}) select {columns} from {delta}{keep}")
        if changes is not None:
            _record_changes(client, *changes, model, delta)
    client.execute_sql(f"drop table {delta}")
    return count


def _record_changes(
    client: SqlClientBase[Any], schema: str, build_id: int, model: Model, delta: str
) -> None:
    changes = f"{schema}.{model.name}{CHANGES}"
    key = ", ".join(model.unique_key)
    client.execute_sql(
        f"create table if not exists {changes} as "
        f"select {key}, cast(0 as bigint) as build_id from {delta} where false"
    )
    client.execute_sql(f"insert into {changes} select distinct {key}, {build_id} from {delta}")
    client.execute_sql(f"delete from {changes} where build_id <= {build_id - CHANGES_KEPT}")


def _literal(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return f"cast('{value.isoformat()}' as timestamptz)"
    if isinstance(value, dt.date):
        return f"cast('{value.isoformat()}' as date)"
    return repr(value)


def _index_model(client: SqlClientBase[Any], schema: str, model: Model, analyze: bool) -> None:
    """PostgreSQL: the indexes an incremental build of the model relies on."""
    for columns in (model.unique_key, *model.indexes):
        name = f"{model.name}__{'_'.join(columns)}"[:60]
        client.execute_sql(
            f"create index if not exists {name} on {schema}.{model.name} ({', '.join(columns)})"
        )
    if analyze:
        client.execute_sql(f"analyze {schema}.{model.name}")


def _index_raw_loads(
    client: SqlClientBase[Any],
    raw_schema: str,
    models: Sequence[Model],
    raw_columns: Mapping[str, set[str]],
) -> None:
    """PostgreSQL: index what incremental builds look raw rows up by: `_dlt_load_id` of the raw
    tables read through new_rows(), `_dlt_parent_id` of child tables."""
    by_name = {model.name: model for model in models}
    tables: set[str] = set()
    for model in models:
        for name in _CALL.findall(model.template):
            if name[0] == "new_rows" and by_name[name[1]].materialized == "view":
                tables.update(by_name[name[1]].sources)
    for table in sorted(tables):
        if "_dlt_load_id" in raw_columns.get(table, set()):
            client.execute_sql(
                f"create index if not exists {table[:40]}__dlt_load_id "
                f"on {raw_schema}.{table} (_dlt_load_id)"
            )
    # Child tables have no load id: their new rows are found through the parent's _dlt_id.
    for table in sorted({source for model in models for source in model.sources}):
        if "_dlt_parent_id" in raw_columns.get(table, set()):
            client.execute_sql(
                f"create index if not exists {table[:40]}__dlt_parent_id "
                f"on {raw_schema}.{table} (_dlt_parent_id)"
            )


def _read_state(
    client: SqlClientBase[Any], schema: str, existing: Mapping[tuple[str, str], str]
) -> _State | None:
    if (schema, STATE_TABLE) not in existing or (schema, LOADS_TABLE) not in existing:
        return None
    rows = client.execute_sql(
        f"select model_name, sql_hash, build_id, since_build from {schema}.{STATE_TABLE}"
    )
    if not rows:
        return None
    loads = client.execute_sql(f"select load_id from {schema}.{LOADS_TABLE}") or []
    return _State(
        hashes={name: sql_hash for name, sql_hash, _, _ in rows},
        loads=frozenset(load_id for (load_id,) in loads),
        build_id=max(int(build_id) for _, _, build_id, _ in rows),
        since={name: int(built) for name, _, _, built in rows},
    )


def _committed_loads(
    client: SqlClientBase[Any], raw_schema: str, raw_columns: Mapping[str, set[str]]
) -> set[str]:
    if "_dlt_loads" not in raw_columns:
        return set()
    rows = client.execute_sql(f"select load_id from {raw_schema}._dlt_loads where status = 0")
    return {load_id for (load_id,) in rows or []}


def _write_state(
    client: SqlClientBase[Any],
    schema: str,
    plan: Mapping[str, tuple[str, str]],
    hashes: Mapping[str, str],
    home: Mapping[str, str],
    build_id: int,
    committed: set[str],
    new_loads: tuple[str, ...],
    state: _State | None,
) -> None:
    client.execute_sql(
        f"create table if not exists {schema}.{STATE_TABLE} (model_name varchar, "
        "materialized varchar, sql_hash varchar, how varchar, reason varchar, build_id bigint, "
        "built_at timestamptz, since_build bigint, model_schema varchar)"
    )
    client.execute_sql(f"create table if not exists {schema}.{LOADS_TABLE} (load_id varchar)")
    client.execute_sql(f"delete from {schema}.{STATE_TABLE}")
    now = dt.datetime.now(dt.UTC).isoformat()

    def since(name: str, how: str) -> str:
        """The first build the model's `__changes` hold every change since: this one when it
        was built whole (or is new)."""
        built = state.since.get(name) if state is not None and how != "full" else None
        return str(build_id if built is None else built)

    values = ", ".join(
        f"({_text_literal(name)}, {_text_literal(how if how == 'view' else 'table')}, "
        f"{_text_literal(hashes[name])}, {_text_literal(how)}, {_text_literal(reason)}, "
        f"{build_id}, cast('{now}' as timestamptz), {since(name, how)}, "
        f"{_text_literal(home[name])})"
        for name, (how, reason) in plan.items()
    )
    client.execute_sql(
        f"insert into {schema}.{STATE_TABLE} (model_name, materialized, sql_hash, how, reason, "
        f"build_id, built_at, since_build, model_schema) values {values}"
    )
    if state is None:  # a first build (or a full refresh) processed every committed load
        client.execute_sql(f"delete from {schema}.{LOADS_TABLE}")
        loads = sorted(committed)
    else:
        loads = list(new_loads)
    for start in range(0, len(loads), 1000):
        chunk = ", ".join(f"({_text_literal(load_id)})" for load_id in loads[start : start + 1000])
        client.execute_sql(f"insert into {schema}.{LOADS_TABLE} values {chunk}")


def drop_models(pipeline: dlt.Pipeline, settings: ModelSettings | None = None) -> None:
    """Drop the models schema and the internal one (and everything in them, the build
    bookkeeping too: the next build is a full one).

    Call before a full refresh on Postgres: dlt drops the raw tables without CASCADE, which fails
    while the staging views depend on them.
    """
    schema = _check_identifier(models_schema(pipeline, settings), "models schema")
    with pipeline.sql_client() as client:
        client.execute_sql(f"drop schema if exists {schema} cascade")
        client.execute_sql(f"drop schema if exists {internal_schema_of(schema)} cascade")


def _raw_columns(client: SqlClientBase[Any], schema: str) -> dict[str, set[str]]:
    rows = client.execute_sql(
        "select table_name, column_name from information_schema.columns "
        f"where table_schema = '{schema}'"
    )
    columns: dict[str, set[str]] = {}
    for table, column in rows or []:
        columns.setdefault(table, set()).add(column)
    return columns


def _table_columns(
    client: SqlClientBase[Any], table: str, schema: str | None = None, temporary: bool = False
) -> list[str]:
    if temporary:
        with client.execute_query(f"select * from {table} where 1 = 0") as cursor:
            return [column[0] for column in cursor.description]
    rows = client.execute_sql(
        "select column_name from information_schema.columns "
        f"where table_schema = '{schema}' and table_name = '{table}' order by ordinal_position"
    )
    return [column for (column,) in rows or []]


def _existing_objects(
    client: SqlClientBase[Any], schemas: Sequence[str]
) -> dict[tuple[str, str], str]:
    """(schema, name) -> "view" or "table", for the relations in `schemas`."""
    listed = ", ".join(_text_literal(schema) for schema in schemas)
    rows = client.execute_sql(
        "select table_schema, table_name, table_type from information_schema.tables "
        f"where table_schema in ({listed})"
    )
    return {
        (schema, name): "view" if kind == "VIEW" else "table" for schema, name, kind in rows or []
    }


def _drop_moved_objects(
    client: SqlClientBase[Any],
    schema: str,
    models: Sequence[Model],
    existing: Mapping[tuple[str, str], str],
) -> None:
    """The models schema holds only marts: drop what an earlier version kept there beside them
    (staging views, intermediate tables, bookkeeping), now in the internal schema. Views first,
    each before the views it reads (PostgreSQL refuses to drop what a view depends on)."""
    marts = {model.name for model in models if model.layer == "marts"}
    ours = [model.name for model in reversed(models) if model.name not in marts]
    leftovers = [
        name
        for (where, name) in existing
        if where == schema
        and name not in marts
        and (name in (STATE_TABLE, LOADS_TABLE) or name.endswith((CHANGES, _NEXT)))
    ]
    for name in ours + sorted(leftovers):
        kind = existing.get((schema, name))
        if kind is not None:
            client.execute_sql(f"drop {kind} if exists {schema}.{name}")


def _check_identifier(name: str | None, what: str) -> str:
    if not name or not _IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} must be lowercase letters, digits and underscores")
    return name
