"""Tests of the data dictionary (sql/dictionary.toml, pipelines/dictionary.py).

The dictionary is the one source of the marts' and raw tables' descriptions: every model build
writes it into the warehouse as comments, and sql/README.md carries it rendered. These tests fail
when a mart column has no description (or the dictionary describes one the mart lacks), when the
warehouse's comments differ from the dictionary, and when sql/README.md is stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
import pytest

from pipelines import dictionary, models
from pipelines.models import ModelSettings, build_models
from tests.conftest import rows, sync
from tests.portal_emulator import Fleet, PortalEmulator
from tests.test_models import BACKENDS, MARTS, drop_schemas, new_pipeline

# --- the file and sql/README.md -----------------------------------------------------------------


def test_sql_readme_carries_the_current_dictionary() -> None:
    readme = dictionary.README_PATH.read_text(encoding="utf-8")
    assert dictionary.generated_section(readme) == dictionary.render_markdown(), (
        "sql/README.md is stale: run `python -m pipelines.dictionary`"
    )
    assert dictionary.main(["--check"]) == 0


def test_check_fails_on_a_stale_readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = dictionary.README_PATH.read_text(encoding="utf-8")
    stale = readme.replace("| `pump_id` | The portal's pump id. |", "| `pump_id` | old |", 1)
    assert stale != readme
    copy = tmp_path / "README.md"
    copy.write_text(stale, encoding="utf-8")
    monkeypatch.setattr(dictionary, "README_PATH", copy)
    assert dictionary.main(["--check"]) == 1
    assert copy.read_text(encoding="utf-8") == stale  # --check changes nothing
    assert dictionary.main([]) == 0
    assert copy.read_text(encoding="utf-8") == readme


def test_dictionary_describes_exactly_the_marts_in_sql() -> None:
    marts = {model.name for model in models.load_models() if model.layer == "marts"}
    assert [table.name for table in dictionary.load().marts] == sorted(marts)
    assert set(MARTS) == marts


def test_markdown_has_one_section_per_mart_with_every_column() -> None:
    text = dictionary.render_markdown()
    for table in dictionary.load().marts:
        heading = text.index(f"### `{table.name}`\n\n")
        assert " ".join(text[heading:].split("\n\n")[1].split()) == table.description
        for column in table.columns:
            assert f"| `{column.name}` | {column.description} |" in text


def test_dictionary_rejects_a_column_without_description(tmp_path: Path) -> None:
    source = dictionary.DICTIONARY_PATH.read_text(encoding="utf-8")
    broken = tmp_path / "dictionary.toml"
    broken.write_text(source.replace('is_active = "The alarm', 'is_active = " " # "', 1))
    with pytest.raises(ValueError, match=r"marts\.alarms\.columns\.is_active: expected a non"):
        dictionary.load(broken)


# --- the warehouse ------------------------------------------------------------------------------


@dataclass
class Warehouse:
    pipeline: dlt.Pipeline
    backend: str
    models_schema: str


@pytest.fixture(scope="module", params=BACKENDS)
def warehouse(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Warehouse]:
    """A small emulated fleet synced over HTTP, with the models built after the sync."""
    pipeline = new_pipeline(request.param, tmp_path_factory.mktemp(f"dictionary-{request.param}"))
    emulator = PortalEmulator(Fleet.generate(pumps=40, users=4, seed=11))
    emulator.start()
    try:
        result = sync(emulator, pipeline, build_models=build_models)
        assert result.outcome == "success", result.error
        assert set(MARTS) <= set(result.models_built)
        yield Warehouse(pipeline, request.param, models.models_schema(pipeline, ModelSettings()))
    finally:
        emulator.stop()
        drop_schemas(pipeline)


def column_comments(warehouse: Warehouse, schema: str, table: str) -> list[tuple[str, Any]]:
    """(column, comment) of a table or view, in column order, as the catalog has them."""
    if warehouse.backend == "duckdb":
        sql = (
            "select column_name, comment from duckdb_columns() "
            f"where schema_name = '{schema}' and table_name = '{table}' order by column_index"
        )
    else:
        sql = (
            "select a.attname, col_description(a.attrelid, a.attnum) from pg_attribute as a "
            f"where a.attrelid = '{schema}.{table}'::regclass and a.attnum > 0 "
            "and not a.attisdropped order by a.attnum"
        )
    return rows(warehouse.pipeline, sql)


def table_comment(warehouse: Warehouse, schema: str, table: str) -> Any:
    if warehouse.backend == "duckdb":
        sql = (
            "select comment from duckdb_tables() "
            f"where schema_name = '{schema}' and table_name = '{table}' "
            "union all select comment from duckdb_views() "
            f"where schema_name = '{schema}' and view_name = '{table}'"
        )
    else:
        sql = f"select obj_description('{schema}.{table}'::regclass, 'pg_class')"
    [(comment,)] = rows(warehouse.pipeline, sql)
    return comment


@pytest.mark.parametrize("mart", MARTS)
def test_every_mart_column_carries_its_description(warehouse: Warehouse, mart: str) -> None:
    described = dictionary.load().mart(mart)
    found = column_comments(warehouse, warehouse.models_schema, mart)
    # Exactly the mart's columns, in its order: a column without a description fails, and so
    # does a description of a column the mart does not have.
    assert [column for column, _ in found] == [column.name for column in described.columns]
    assert found == [(column.name, column.description) for column in described.columns]
    assert all(comment.strip() for _, comment in found)
    assert table_comment(warehouse, warehouse.models_schema, mart) == described.description


def test_raw_tables_carry_their_descriptions(warehouse: Warehouse) -> None:
    schema = warehouse.pipeline.dataset_name
    described = dictionary.load()
    controllers = dict(column_comments(warehouse, schema, "controllers"))
    assert controllers["pump_id"] == "The portal's pump id (primary key)."
    assert controllers["battery__soc"] == "Battery state of charge (%)."
    assert controllers["_dlt_load_id"] == (
        "The dlt load that wrote the row (_dlt_loads.load_id); "
        "incremental model builds select new rows by it."
    )
    assert table_comment(warehouse, schema, "controllers") == (
        described.raw_table("controllers").description
    )
    for table, column in (
        ("controller_observations", "last_seen"),
        ("fleet_snapshots", "snapshot_at"),
        ("delegated_user_snapshots", "user_id"),
        ("user_pump_links", "valid_to"),
        ("pump_summaries", "fetched_at"),
        ("pump_summaries__recent_alarms__alarms", "alarm_key"),
        ("sync_runs", "run_id"),
    ):
        found = dict(column_comments(warehouse, schema, table))
        expected = described.raw_table(table).column(column)
        assert expected is not None, (table, column)
        assert found[column] == expected.description, (table, column)
        assert table_comment(warehouse, schema, table) == described.raw_table(table).description
    alarms = dict(column_comments(warehouse, schema, "pump_summaries__recent_alarms__alarms"))
    assert alarms["_dlt_parent_id"] == "The _dlt_id of the parent row (child tables)."
    assert alarms["_dlt_list_idx"] == "The row's position in the parent's list (child tables)."
    # A column the dictionary does not describe keeps no comment.
    undescribed = [column for column, comment in controllers.items() if comment is None]
    assert undescribed == []  # every column of `controllers` is a documented field or dlt's


def test_a_build_with_nothing_new_writes_only_the_rebuilt_marts_comments(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialect = models.destination_dialect(warehouse.pipeline)
    schema = warehouse.pipeline.dataset_name
    with warehouse.pipeline.sql_client() as client:
        assert dictionary.write_comments(client, dialect, schema, warehouse.models_schema) == 0

    written: list[int] = []
    original = dictionary.write_comments

    def counting(*args: Any) -> int:
        written.append(original(*args))
        return written[-1]

    monkeypatch.setattr(dictionary, "write_comments", counting)
    built = build_models(warehouse.pipeline, ModelSettings())
    recreated = sorted(b.name for b in built if b.name in MARTS and b.how != "incremental")
    # A table model is created again by every build, and its comments with it; the incremental
    # marts keep theirs.
    assert recreated == ["controllers_current"]
    rebuilt = dictionary.load().mart("controllers_current")
    assert written == [1 + len(rebuilt.columns)]
    for mart in MARTS:
        described = dictionary.load().mart(mart)
        assert column_comments(warehouse, warehouse.models_schema, mart) == [
            (column.name, column.description) for column in described.columns
        ]

    # A comment changed by hand is put back, and only that one.
    with warehouse.pipeline.sql_client() as client:
        client.execute_sql(
            f"comment on column {warehouse.models_schema}.alarms.is_active is 'it''s edited'"
        )
        assert original(client, dialect, schema, warehouse.models_schema) == 1
        assert original(client, dialect, schema, warehouse.models_schema) == 0
    is_active = dictionary.load().mart("alarms").column("is_active")
    assert is_active is not None
    found = dict(column_comments(warehouse, warehouse.models_schema, "alarms"))
    assert found["is_active"] == is_active.description
