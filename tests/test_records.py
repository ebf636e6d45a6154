"""records.py alone: the one set of value conversions, with the quirks the reference allows.

The reference: "JSON may omit undefined keys", numbers may arrive as strings (`"0.0"`, `"0"`),
ints where floats follow, 1/0 for booleans, and `last_updated` may be a placeholder (`"…"`).
Every expected value here is exact; a quirk read differently is a deliberate change.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from pipelines.pump_portal import records
from pipelines.pump_portal.pagination import item_id

UTC = dt.UTC
BIG = 10**400  # a JSON int past a double's range (Python's json reads it exactly)


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


# --- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (15420.5, 15420.5),
        (85, 85.0),
        ("0.0", 0.0),
        ("0", 0.0),
        ("2.7", 2.7),
        (" 3 ", 3.0),
        ("-1.5", -1.5),
        ("+2", 2.0),
        (".5", 0.5),
        ("3.", 3.0),
        ("1e3", 1000.0),
        ("", None),
        ("   ", None),
        (None, None),
        (True, None),  # a bool is no quantity, though Python calls it an int
        (False, None),
        ("1,5", None),
        ("1_000", None),  # float() reads it; JSON number text has no underscores
        ("0x10", None),
        ("nan", None),
        ("inf", None),
        (float("nan"), None),
        (float("inf"), None),
        ("1e400", None),
        pytest.param(BIG, None, id="10**400"),
        ([1], None),
        ({"value": 1}, None),
    ],
)
def test_to_float(value: Any, expected: float | None) -> None:
    assert records.to_float(value) == expected
    assert records.to_type(value, "double") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        ("12", 12),
        (" 3 ", 3),
        ("2.7", 3),  # a quantity in a bigint column: rounded, not cut
        (2.7, 3),
        ("-2.7", -3),
        ("3.0", 3),
        ("2.5", 2),  # Python's round: halves go to the even neighbour
        ("3.5", 4),
        ("1e3", 1000),
        ("", None),
        (None, None),
        (True, None),
        ("twelve", None),
        (2**53 + 1, 2**53 + 1),  # exact: an int does not go through float
        (2**63 - 1, 2**63 - 1),
        (2**64, None),  # past a bigint: NULL rather than a failed load
        pytest.param(BIG, None, id="10**400"),
    ],
)
def test_to_int(value: Any, expected: int | None) -> None:
    assert records.to_int(value) == expected
    assert records.to_type(value, "bigint") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (3, 3),
        ("3", 3),
        (" 3 ", 3),
        ("3.0", 3),
        (3.0, 3),
        ("1e3", 1000),
        (2**63 - 1, 2**63 - 1),  # exact: an int does not go through float
        ("2.7", None),  # not rounded: page "2.7" is no page
        (2.7, None),
        ("-1", None),
        (-1, None),
        (2**63, None),
        pytest.param(BIG, None, id="10**400"),
        ("", None),
        ("  ", None),
        (None, None),
        (True, None),
        (False, None),
        ("three", None),
        ([3], None),
    ],
)
def test_to_count_takes_whole_numbers_only(value: Any, expected: int | None) -> None:
    assert records.to_count(value) == expected


# --- booleans -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        True,
        1,
        1.0,
        2,
        -1,
        pytest.param(BIG, id="10**400"),
        "true",
        "TRUE",
        " True ",
        "t",
        "1",
        "1.0",
        "yes",
        "y",
        "on",
    ],
)
def test_to_bool_true(value: Any) -> None:
    assert records.to_bool(value) is True
    assert records.to_type(value, "bool") is True


@pytest.mark.parametrize(
    "value", [False, 0, 0.0, "false", "False", " false ", "f", "0", "0.0", "no", "n", "off"]
)
def test_to_bool_false(value: Any) -> None:
    assert records.to_bool(value) is False
    assert records.to_type(value, "bool") is False


@pytest.mark.parametrize(
    "value", [None, "", "  ", "maybe", "2", "null", float("nan"), [], [True], {}, {"a": 1}]
)
def test_to_bool_unreadable_is_none(value: Any) -> None:
    assert records.to_bool(value) is None


# --- text and ids -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("running", "running"),
        (" padded ", " padded "),  # text is kept as sent
        ("", ""),
        (None, None),
        (123, "123"),
        (2.5, "2.5"),
        (1.0, "1.0"),
        (True, "true"),
        (False, "false"),
        ({"b": 1, "a": [1, None]}, '{"a": [1, null], "b": 1}'),  # sorted keys: stable text
        ([1, "x"], '[1, "x"]'),
    ],
)
def test_to_text(value: Any, expected: str | None) -> None:
    assert records.to_text(value) == expected
    assert records.to_type(value, "text") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pump-1", "pump-1"),
        ("123", "123"),
        (123, "123"),  # 123 and "123" are one pump
        (" 7 ", " 7 "),  # kept as sent, like to_text: the walk's key is the row's pump_id
        (True, "true"),
        ("", None),
        ("   ", None),
        (None, None),
        ({"id": 1}, None),
        ([1], None),
    ],
)
def test_to_id(value: Any, expected: str | None) -> None:
    assert records.to_id(value) == expected
    assert item_id({"pump_id": value}) == expected


def test_item_id_of_a_row_without_pump_id_is_none() -> None:
    assert item_id({"custom_name": "no id"}) is None


# --- timestamps and dates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-20T10:00:00Z", utc(2025, 3, 20, 10)),
        ("2025-03-20T10:00:00.250Z", utc(2025, 3, 20, 10, 0, 0, 250000)),
        ("2025-03-20T12:00:00+02:00", utc(2025, 3, 20, 10)),
        ("2025-03-20T05:00:00-05:00", utc(2025, 3, 20, 10)),
        ("2025-03-20T10:00:00", utc(2025, 3, 20, 10)),  # naive means UTC
        ("2025-03-20 10:00:00", utc(2025, 3, 20, 10)),
        (" 2025-03-20T10:00:00Z ", utc(2025, 3, 20, 10)),
        ("2025-03-20", utc(2025, 3, 20)),  # a date alone: its midnight, UTC
        ("Thu, 20 Mar 2025 10:00:00 GMT", utc(2025, 3, 20, 10)),  # HTTP date / toUTCString
        ("Thu, 20 Mar 2025 12:00:00 +0200", utc(2025, 3, 20, 10)),
        (1742464800, utc(2025, 3, 20, 10)),  # epoch seconds
        (1742464800.5, utc(2025, 3, 20, 10, 0, 0, 500000)),
        (1742464800000, utc(2025, 3, 20, 10)),  # epoch milliseconds
        ("1742464800", utc(2025, 3, 20, 10)),
        ("…", None),  # the reference's placeholder
        ("now", None),  # not the wall clock
        ("today", None),
        ("", None),
        ("  ", None),
        (None, None),
        (True, None),
        (float("nan"), None),
        ("not a time 12", None),
        ({"at": "2025-03-20"}, None),
    ],
)
def test_to_timestamp(value: Any, expected: dt.datetime | None) -> None:
    parsed = records.to_timestamp(value)
    assert parsed == expected
    if expected is not None:
        assert parsed is not None and parsed.utcoffset() == dt.timedelta(0)
    assert records.to_type(value, "timestamp") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-20", dt.date(2025, 3, 20)),
        (" 2025-03-20 ", dt.date(2025, 3, 20)),
        # The date as written, not converted to UTC (04:30 UTC on the 21st).
        ("2025-03-20T23:30:00-05:00", dt.date(2025, 3, 20)),
        ("Thu, 20 Mar 2025 10:00:00 GMT", dt.date(2025, 3, 20)),
        (1742464800, dt.date(2025, 3, 20)),
        ("…", None),
        ("", None),
        (None, None),
    ],
)
def test_to_date(value: Any, expected: dt.date | None) -> None:
    assert records.to_date(value) == expected
    assert records.to_type(value, "date") == expected


def test_iso() -> None:
    assert records.iso(utc(2025, 3, 20, 10)) == "2025-03-20T10:00:00+00:00"
    assert records.iso(None) is None


# --- whole rows ---------------------------------------------------------------------------


def test_coerce_types_documented_fields_and_keeps_missing_keys_missing() -> None:
    """The reference's summary example, quirks included: numbers as strings, a placeholder
    time, keys left out. A key the API omitted stays omitted (not NULL): the row says what
    the API said."""
    raw = {
        "pump_id": 42,
        "api_version": "1",
        "live_data": {"current_pressure": "2.5", "battery_soc": 85, "last_updated": "…"},
        "today": {"date": "2025-03-20", "snapshot_count": "12", "is_today": "t"},
        "week_trends": {"total_water_delivered": "0.0", "avg_pressure": None, "avg_uptime": "0"},
        "recent_alarms": {"count": "2.7"},
    }
    row = records.coerce(raw, records.SUMMARY_FIELDS)

    assert row == {
        "pump_id": "42",
        "live_data": {"current_pressure": 2.5, "battery_soc": 85.0, "last_updated": None},
        "today": {"date": dt.date(2025, 3, 20), "snapshot_count": 12, "is_today": True},
        "week_trends": {"total_water_delivered": 0.0, "avg_pressure": None, "avg_uptime": 0.0},
        "recent_alarms": {"count": 3},
    }
    assert raw["live_data"]["current_pressure"] == "2.5"  # the input is not changed


def test_normalize_unknown_makes_quantities_floats_and_labels_text() -> None:
    assert records.normalize_unknown(
        {
            "alarms": [
                {"id": 7, "level": 2, "value": "3", "ratio": 1, "flag": True, "note": "x"},
                {"id": "a-8", "level": "critical", "value": 2.5, "ratio": None},
            ],
        }
    ) == {
        "alarms": [
            {"id": "7", "level": "2", "value": 3.0, "ratio": 1.0, "flag": True, "note": "x"},
            {"id": "a-8", "level": "critical", "value": 2.5, "ratio": None},
        ],
    }
