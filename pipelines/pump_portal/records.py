"""From API JSON to rows with the types the reference documents.

The API may omit keys, send numbers as strings (`"0.0"`), ints where floats follow (soc 85, then
82.5) and 1/0 for booleans. dlt keeps the first type it sees and adds a variant column on the next
clash, so every documented field is coerced here and declared as a column hint (`column_hints`):
the table's types never depend on which pump happened to come first.

Fields the reference does not document (new metadata fields, the element shapes of alarms and
daily summaries) pass through `normalize_unknown`: numeric strings and ints become floats, so a
later float cannot split the column either; ids and labels (`*_id`, `code`, `level`, ...) become
text, so an alarm id sent as 7 here and "a-8" there cannot either. Documented field names keep
the API's nesting; dlt flattens them with `__` (`battery.soc` -> `battery__soc`). Raw tables say
what the API said; the SQL staging models rename.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson
import pendulum
from dlt.common.schema.typing import TColumnSchema

# Documented fields and their dlt data types, as dotted paths into the API object.
CONTROLLER_FIELDS: dict[str, str] = {
    "pump_id": "text",
    "custom_name": "text",
    "is_owner": "bool",
    "last_seen": "timestamp",
    "last_heartbeat": "timestamp",
    "installation.installation_name": "text",
    "installation.location_name": "text",
    "installation.lat": "double",
    "installation.lon": "double",
    "pump.status": "text",
    "pump.total_water_delivered": "double",
    "pump.running": "bool",
    "battery.voltage": "double",
    "battery.soc": "double",
    "battery.current": "double",
    "communication_method": "text",
    "current_pressure": "double",
    "active_alarms_count": "bigint",
    "highest_alarm_level": "text",
    "total_sessions": "bigint",
    "uptime": "double",
    "profile": "text",
}

# What changes from one report of a pump to the next: the per-pump history.
OBSERVATION_FIELDS = (
    "pump_id",
    "last_seen",
    "last_heartbeat",
    "pump",
    "battery",
    "current_pressure",
    "active_alarms_count",
    "highest_alarm_level",
    "total_sessions",
    "uptime",
)

STATISTICS_FIELDS: dict[str, str] = {
    "total_controllers": "bigint",
    "active_controllers": "bigint",
    "offline_controllers": "bigint",
    "total_water_delivered": "double",
    "average_battery_soc": "double",
    "wireguard_connections": "bigint",
}

DELEGATED_USER_FIELDS: dict[str, str] = {
    "user_id": "bigint",
    "name": "text",
    **STATISTICS_FIELDS,
}

METADATA_FIELDS: dict[str, str] = {
    "pump_id": "text",
    "installation_name": "text",
    "location_name": "text",
    "latitude": "double",
    "longitude": "double",
    "last_seen": "timestamp",
    "total_water_delivered": "double",
}

SUMMARY_FIELDS: dict[str, str] = {
    "pump_id": "text",
    "metadata.pump_id": "text",
    "live_data.current_pressure": "double",
    "live_data.battery_soc": "double",
    "live_data.battery_voltage": "double",
    "live_data.last_updated": "timestamp",
    "today.date": "date",
    "today.snapshot_count": "bigint",
    "today.is_today": "bool",
    "recent_alarms.count": "bigint",
    "recent_alarms.critical": "bigint",
    "recent_alarms.warning": "bigint",
    "week_trends.total_water_delivered": "double",
    "week_trends.avg_pressure": "double",
    "week_trends.avg_battery_soc": "double",
    "week_trends.avg_uptime": "double",
    "total_average_water.avg_daily_water": "double",
    "total_average_water.total_water": "double",
    "total_average_water.days_with_data": "bigint",
    "total_average_water.calculation_method": "text",
    "lifetime_averages.avg_pressure": "double",
    "lifetime_averages.avg_battery_soc": "double",
    "lifetime_averages.calculation_method": "text",
    "last_updated": "timestamp",
    "data_source": "text",
}

# Keys whose values are identifiers or labels, not quantities: always text, numbers included.
_LABEL_KEY = re.compile(r"(^|_)(id|code|name|date|key|version|serial|level)$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_BIGINT_MAX = 2**63 - 1


def column_hints(fields: Mapping[str, str], **extra: str) -> dict[str, TColumnSchema]:
    """dlt column hints for documented fields: `battery.soc` -> column `battery__soc`."""
    hints: dict[str, TColumnSchema] = {}
    for path, data_type in {**fields, **extra}.items():
        name = path.replace(".", "__")
        hints[name] = {"name": name, "data_type": data_type, "nullable": True}  # type: ignore[typeddict-item]
    return hints


def coerce(raw: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """A deep copy of `raw` with documented fields typed and everything else normalized."""
    row: dict[str, Any] = normalize_unknown(raw)
    for path, data_type in fields.items():
        *parents, leaf = path.split(".")
        container: Any = row
        for key in parents:
            container = container.get(key) if isinstance(container, dict) else None
        if isinstance(container, dict) and leaf in container:
            container[leaf] = to_type(_raw_at(raw, path), data_type)
    row.pop("api_version", None)
    return row


def to_type(value: Any, data_type: str) -> Any:
    if data_type == "double":
        return to_float(value)
    if data_type == "bigint":
        return to_int(value)
    if data_type == "bool":
        return to_bool(value)
    if data_type == "timestamp":
        return to_timestamp(value)
    if data_type == "date":
        return to_date(value)
    return to_text(value)


def to_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            # JSON ints have no size limit; one past a double's range must not fail the run.
            return None
    elif isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def to_int(value: Any) -> int | None:
    """A whole number for a bigint column; a fraction is rounded (`"2.7"` -> 3)."""
    number: int | float | None = value  # exact: a float would round ints past 2**53
    if not isinstance(value, int) or isinstance(value, bool):
        number = to_float(value)
    if number is None:
        return None
    if abs(number) > _BIGINT_MAX:
        # A count beyond a 64-bit integer is nonsense, and would fail the whole load.
        return None
    return int(round(number))


def to_count(value: Any) -> int | None:
    """A count or a position (a page number, `total`, `pages`, `limit`): a whole number >= 0.

    Stricter than `to_int`, which rounds a measured value into a bigint column ("2.7" -> 3).
    Pagination steers on these numbers: page "2.7" or total -1 says the server is confused,
    and rounding it would silently walk to the wrong page or expect the wrong count. Such a
    value is None, read like a missing key (no signal), so the walk falls back on the others.
    Numbers as strings (`"3"`, `" 3 "`, `"3.0"`) are counts as the reference allows.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value  # exact, as in to_int
    else:
        measured = to_float(value)
        if measured is None or not measured.is_integer():
            return None
        number = int(measured)
    return number if 0 <= number <= _BIGINT_MAX else None


def to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, float):
        # NaN is "not a number", not "not zero".
        return value != 0 if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "y", "t", "1.0", "on"):
            return True
        if text in ("false", "0", "no", "n", "f", "0.0", "off"):
            return False
    return None


def to_timestamp(value: Any) -> dt.datetime | None:
    """ISO 8601 (with or without zone; naive means UTC) or epoch seconds/milliseconds.

    Placeholders such as the reference's `"…"` become NULL rather than text in a timestamp column.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return pendulum.from_timestamp(seconds, tz="UTC")
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if _NUMBER.match(text):
        return to_timestamp(float(text))
    if not any(c.isdigit() for c in text):
        # pendulum reads "now" and "today" as the wall clock: a placeholder, not a time.
        return None
    try:
        parsed = pendulum.parse(text, tz="UTC")
    except (ValueError, TypeError, OverflowError, pendulum.parsing.exceptions.ParserError):
        return _http_date(text)
    if not isinstance(parsed, dt.datetime):
        if isinstance(parsed, dt.date):
            return pendulum.datetime(parsed.year, parsed.month, parsed.day, tz="UTC")
        return None
    return parsed.in_timezone("UTC")


def _http_date(text: str) -> dt.datetime | None:
    """RFC 2822 / HTTP dates ("Thu, 20 Mar 2025 10:00:00 GMT", JavaScript's toUTCString)."""
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return pendulum.instance(parsed).in_timezone("UTC")


def to_date(value: Any) -> dt.date | None:
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text[:10])
        except ValueError:
            pass
    stamp = to_timestamp(value)
    return stamp.date() if stamp else None


def to_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return json.dumps(value, sort_keys=True, default=str)


def to_id(value: Any) -> str | None:
    """An identifier as text: 123 and "123" are one pump (or one request id); None when
    missing, blank or not a single value (an object or a list identifies nothing).

    Unlike `to_text`, blank is None: an id of "" or "  " must not become a key that merges
    every broken row into one. Non-blank text is kept as sent, so the key equals the row's
    `to_text` pump_id.
    """
    if value is None or isinstance(value, dict | list):
        return None
    text = to_text(value)
    return text if text and text.strip() else None


def normalize_unknown(value: Any, key: str = "") -> Any:
    """Undocumented shapes: numbers (and numeric strings, except labels and ids) become floats."""
    if isinstance(value, dict):
        return {k: normalize_unknown(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_unknown(v, key) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if _LABEL_KEY.search(key):
        # Ids and labels stay text whichever form they come in ("id": 7 here, "a-8" there):
        # a number first would type the column double and split off a variant on the first word.
        return to_text(value)
    if isinstance(value, int | float):
        return to_float(value)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return to_float(value)
    return value


def fingerprint(row: Mapping[str, Any]) -> str:
    """A short stable hash of a row, to tell whether anything in a listing row changed.

    orjson (which dlt already depends on) is about 10x faster than json.dumps here, and this
    runs for every listed pump on every run."""
    text = orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.blake2b(text, digest_size=8).hexdigest()


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _raw_at(raw: Mapping[str, Any], path: str) -> Any:
    value: Any = raw
    for key in path.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value
