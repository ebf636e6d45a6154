"""The data dictionary: `sql/dictionary.toml`, written into the warehouse and into sql/README.md.

One file describes every mart and every column of it, and the raw tables dlt loads with their
main columns. From it:

- every model build writes the descriptions as table and column comments on DuckDB and
  PostgreSQL (`write_comments`, called by `models.build_models` inside the build's transaction),
  so a BI tool, `\\d+` or `duckdb_columns()` shows them beside the data;
- `python -m pipelines.dictionary` renders them into the "Data dictionary" section of
  sql/README.md, between two marker comments (`--check`: exit 1 when that section is stale).

tests/test_dictionary.py fails when a mart column has no description, when the dictionary
describes a mart column that does not exist, and when sql/README.md is stale.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import re
import sys
import textwrap
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: rendering sql/README.md needs no dlt
    from dlt.destinations.sql_client import SqlClientBase

logger = logging.getLogger(__name__)

# Not models.SQL_DIR: models.py imports this module (the build writes the comments), so this one
# finds sql/ the same way on its own (pipelines/sql links to the repository's sql/; a wheel
# carries it as package data).
SQL_DIR = Path(str(importlib.resources.files("pipelines") / "sql"))
DICTIONARY_PATH = SQL_DIR / "dictionary.toml"
README_PATH = SQL_DIR / "README.md"
BEGIN = (
    "<!-- dictionary: begin (generated from sql/dictionary.toml by "
    "`python -m pipelines.dictionary`) -->"
)
END = "<!-- dictionary: end -->"

# The destinations whose catalogs this module reads comments from; elsewhere nothing is written.
DIALECTS = ("duckdb", "postgres")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Column:
    name: str
    description: str


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]  # in the file's order: for a mart, the mart's column order

    def column(self, name: str) -> Column | None:
        return next((column for column in self.columns if column.name == name), None)


@dataclass(frozen=True)
class Dictionary:
    marts: tuple[Table, ...]
    raw: tuple[Table, ...]
    dlt_columns: tuple[Column, ...]  # dlt's own columns, on every raw table that has them

    def mart(self, name: str) -> Table:
        return _named(self.marts, name)

    def raw_table(self, name: str) -> Table:
        return _named(self.raw, name)


def _named(tables: Sequence[Table], name: str) -> Table:
    for table in tables:
        if table.name == name:
            return table
    raise KeyError(name)


def load(path: Path = DICTIONARY_PATH) -> Dictionary:
    """The dictionary in `path`, checked: a mistake fails here, naming the entry, rather than
    as a comment that silently never appears."""
    with path.open("rb") as file:
        data = tomllib.load(file)
    _expect_keys(data, {"marts", "raw", "dlt_columns"}, str(path))
    return Dictionary(
        marts=_tables(data["marts"], f"{path}: marts"),
        raw=_tables(data["raw"], f"{path}: raw"),
        dlt_columns=_columns(data["dlt_columns"], f"{path}: dlt_columns"),
    )


def _tables(section: Any, where: str) -> tuple[Table, ...]:
    if not isinstance(section, dict) or not section:
        raise ValueError(f"{where}: expected a table per relation")
    tables = []
    for name, entry in section.items():
        here = f"{where}.{name}"
        _check_name(name, here)
        if not isinstance(entry, dict):
            raise ValueError(f"{here}: expected description and columns")
        _expect_keys(entry, {"description", "columns"}, here)
        tables.append(
            Table(
                name,
                _text(entry["description"], f"{here}.description"),
                _columns(entry["columns"], f"{here}.columns"),
            )
        )
    return tuple(tables)


def _columns(section: Any, where: str) -> tuple[Column, ...]:
    if not isinstance(section, dict) or not section:
        raise ValueError(f'{where}: expected `column = "description"` lines')
    columns = []
    for name, description in section.items():
        _check_name(name, f"{where}.{name}")
        columns.append(Column(name, _text(description, f"{where}.{name}")))
    return tuple(columns)


def _expect_keys(entry: Mapping[str, Any], keys: set[str], where: str) -> None:
    if set(entry) != keys:
        raise ValueError(f"{where}: expected exactly {sorted(keys)}, found {sorted(entry)}")


def _check_name(name: str, where: str) -> None:
    # Names go into SQL unquoted, as everywhere in the models: only plain identifiers.
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{where}: {name!r} must be lowercase letters, digits and underscores")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a non-empty description")
    return value.strip()


# --- the warehouse ------------------------------------------------------------------------------


def write_comments(
    client: SqlClientBase[Any], dialect: str, raw_schema: str, marts_schema: str
) -> int:
    """Comment the marts and the raw tables with the dictionary's descriptions; returns how many
    comments were written.

    Only tables and columns that exist are commented (dlt creates a column when a value first
    arrives), and only where the comment differs from the dictionary's, so a build with nothing
    new writes nothing but the comments of the marts it rebuilt whole. Runs in the caller's
    transaction: the comments appear with the models they describe.
    """
    if dialect not in DIALECTS:
        logger.debug("no table comments on %s: only %s are supported", dialect, DIALECTS)
        return 0
    dictionary = load()
    written = 0
    for schema, tables, everywhere in (
        (marts_schema, dictionary.marts, ()),
        (raw_schema, dictionary.raw, dictionary.dlt_columns),
    ):
        kinds, comments = _comments(client, dialect, schema)
        wanted: dict[tuple[str, str | None], str] = {}
        for table in tables:
            wanted[(table.name, None)] = table.description
            for column in table.columns:
                wanted[(table.name, column.name)] = column.description
        # dlt's columns are described on every table of the raw schema, dlt's own tables too.
        for table_name in kinds:
            for column in everywhere:
                wanted.setdefault((table_name, column.name), column.description)
        for (table_name, column_name), description in wanted.items():
            kind = kinds.get(table_name)
            if kind is None or (table_name, column_name) not in comments:
                continue  # not created (yet)
            if comments[(table_name, column_name)] == description:
                continue
            if column_name is None:
                target = f"{kind} {schema}.{table_name}"
            else:
                target = f"column {schema}.{table_name}.{column_name}"
            client.execute_sql(f"comment on {target} is {_literal(description)}")
            written += 1
    logger.debug("wrote %d table and column comments", written)
    return written


def _literal(text: str) -> str:
    # Standard SQL quoting; both destinations read backslashes literally
    # (PostgreSQL: standard_conforming_strings, on by default since 9.1).
    return "'" + text.replace("'", "''") + "'"


def _comments(
    client: SqlClientBase[Any], dialect: str, schema: str
) -> tuple[dict[str, str], dict[tuple[str, str | None], str | None]]:
    """The schema's tables and views ("table" or "view": what `comment on` calls them), and the
    current comment of each of them (column None) and of each of their columns."""
    if dialect == "duckdb":
        relations = (
            "select table_name, 'table', comment from duckdb_tables() "
            f"where database_name = current_database() and schema_name = '{schema}' "
            "union all "
            "select view_name, 'view', comment from duckdb_views() "
            f"where database_name = current_database() and schema_name = '{schema}'"
        )
        columns = (
            "select table_name, column_name, comment from duckdb_columns() "
            f"where database_name = current_database() and schema_name = '{schema}'"
        )
    else:
        # Tables, partitioned tables and views; obj_description/col_description read
        # pg_description, where `comment on` writes.
        relations = (
            "select c.relname, case when c.relkind = 'v' then 'view' else 'table' end, "
            "obj_description(c.oid, 'pg_class') "
            "from pg_class as c join pg_namespace as n on n.oid = c.relnamespace "
            f"where n.nspname = '{schema}' and c.relkind in ('r', 'p', 'v')"
        )
        columns = (
            "select c.relname, a.attname, col_description(c.oid, a.attnum) "
            "from pg_attribute as a join pg_class as c on c.oid = a.attrelid "
            "join pg_namespace as n on n.oid = c.relnamespace "
            f"where n.nspname = '{schema}' and c.relkind in ('r', 'p', 'v') "
            "and a.attnum > 0 and not a.attisdropped"
        )
    kinds: dict[str, str] = {}
    comments: dict[tuple[str, str | None], str | None] = {}
    for name, kind, comment in client.execute_sql(relations) or []:
        kinds[name] = kind
        comments[(name, None)] = comment or None
    for table_name, column_name, comment in client.execute_sql(columns) or []:
        comments[(table_name, column_name)] = comment or None
    return kinds, comments


# --- sql/README.md ------------------------------------------------------------------------------


def render_markdown(dictionary: Dictionary | None = None) -> str:
    """The data dictionary as Markdown: the section of sql/README.md between the markers."""
    dictionary = dictionary or load()
    lines = [
        "Generated from `sql/dictionary.toml`, which every model build also writes into the",
        "warehouse as table and column comments; edit that file, not this section.",
        "",
    ]
    for table in dictionary.marts:
        lines += _table_section("###", table)
    lines += [
        "### Raw tables",
        "",
        "The tables dlt loads (dataset `pump_portal`), with their keys and the columns the models",
        "read; the portal's other fields are columns too, undescribed.",
        "",
    ]
    for table in dictionary.raw:
        lines += _table_section("####", table)
    lines += ["#### dlt's columns", "", "On every raw table that has them.", ""]
    lines += _column_table(dictionary.dlt_columns)
    return "\n".join(lines) + "\n"  # a blank line before the end marker


def _table_section(heading: str, table: Table) -> list[str]:
    return [
        f"{heading} `{table.name}`",
        "",
        _paragraph(table.description),
        "",
        *_column_table(table.columns),
    ]


def _column_table(columns: Sequence[Column]) -> list[str]:
    rows = [f"| `{column.name}` | {_cell(column.description)} |" for column in columns]
    return ["| column | meaning |", "|---|---|", *rows, ""]


def _paragraph(text: str) -> str:
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def generated_section(readme: str) -> str:
    """What stands between the markers of `readme` (raises when they are missing)."""
    start = readme.find(BEGIN)
    end = readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN!r} ... {END!r} are missing")
    return readme[start + len(BEGIN) + 1 : end]


def with_section(readme: str, section: str) -> str:
    """`readme` with `section` between its markers."""
    old = generated_section(readme)
    start = readme.find(BEGIN) + len(BEGIN) + 1
    return readme[:start] + section + readme[start + len(old) :]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.dictionary",
        description="Render sql/dictionary.toml into the data dictionary of sql/README.md.",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when sql/README.md is stale"
    )
    arguments = parser.parse_args(argv)
    readme = README_PATH.read_text(encoding="utf-8")
    updated = with_section(readme, render_markdown())
    if updated == readme:
        print("sql/README.md: the data dictionary is up to date")
        return 0
    if arguments.check:
        print(
            "sql/README.md: the data dictionary is stale; run `python -m pipelines.dictionary`",
            file=sys.stderr,
        )
        return 1
    README_PATH.write_text(updated, encoding="utf-8")
    print("sql/README.md: the data dictionary was rewritten from sql/dictionary.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
