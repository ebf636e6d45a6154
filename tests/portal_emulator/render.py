"""JSON shapes of listing rows, statistics and metadata, built from fleet data.

Kept apart from the fleet container so the wire format (omitted keys, numbers-as-strings) is in one
place. Nothing here takes locks; callers hold ``Fleet.lock``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from .clock import iso_ms
from .model import Pump

ACTIVE_WINDOW = timedelta(minutes=15)
"""A pump is "active" when its last_seen is within this window before the simulated now (choice:
the reference does not define it). A last_seen in the future (device clock ahead) also counts as
active; a last_seen moved far into the past (clock reset) counts as offline."""


def json_number(value: int | float) -> int | float:
    """Integral averages are emitted as ints (the reference shows both ``85`` and ``82.5``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def as_text(value: int | float) -> str:
    """A number the way a portal that stores it as text would send it: "4.2", "85", "15420.5"."""
    return str(value)


def is_active(pump: Pump, now: datetime) -> bool:
    return pump.last_seen is not None and pump.last_seen >= now - ACTIVE_WINDOW


def listing_status(pump: Pump, now: datetime) -> str:
    """Choice: never-seen pumps say "never_seen", inactive ones "offline", else the reported
    status ("running" | "idle")."""
    if pump.last_seen is None:
        return "never_seen"
    if not is_active(pump, now):
        return "offline"
    return pump.status


def listing_row(pump: Pump, is_owner: bool, now: datetime) -> dict[str, Any]:
    """One controller of GET /v1/pumps, in the reference's key order.

    Omitted, as the reference allows: custom_name when unnamed, last_seen/last_heartbeat when never
    seen, installation when not configured, battery when none is reported. current_pressure and
    highest_alarm_level are present but null when unknown. For ``numbers_as_strings`` pumps,
    current_pressure, battery.soc/voltage and pump.total_water_delivered are JSON strings.
    """
    text = pump.numbers_as_strings
    row: dict[str, Any] = {"pump_id": pump.pump_id}
    if pump.custom_name is not None:
        row["custom_name"] = pump.custom_name
    row["is_owner"] = 1 if is_owner else 0
    if pump.last_seen is not None:
        row["last_seen"] = iso_ms(pump.last_seen)
    if pump.last_heartbeat is not None:
        row["last_heartbeat"] = iso_ms(pump.last_heartbeat)
    if pump.installation is not None:
        row["installation"] = dict(pump.installation)
    status = listing_status(pump, now)
    water = pump.total_water_delivered
    row["pump"] = {
        "status": status,
        "total_water_delivered": as_text(water) if text else water,
        "running": status == "running",
    }
    battery = pump.battery
    if battery is not None:
        row["battery"] = {
            "voltage": as_text(battery["voltage"]) if text else battery["voltage"],
            "soc": as_text(battery["soc"]) if text else battery["soc"],
            "current": battery["current"],
        }
    row["communication_method"] = pump.communication_method
    pressure = pump.current_pressure
    row["current_pressure"] = as_text(pressure) if text and pressure is not None else pressure
    row["active_alarms_count"] = pump.active_alarms_count
    row["highest_alarm_level"] = pump.highest_alarm_level
    row["total_sessions"] = pump.total_sessions
    row["uptime"] = pump.uptime
    row["profile"] = pump.profile
    return row


def statistics(pumps: Iterable[Pump], now: datetime) -> dict[str, Any]:
    """The statistics object of GET /v1/pumps, /v1/stats and the per-user views.

    total_water_delivered is rounded to 1 decimal (float sums drift); average_battery_soc is the
    mean soc of pumps that report a battery, rounded to 1 decimal, null when none does.
    """
    cutoff = now - ACTIVE_WINDOW
    total = active = wireguard = soc_count = 0
    water = soc_sum = 0.0
    for pump in pumps:
        total += 1
        if pump.last_seen is not None and pump.last_seen >= cutoff:
            active += 1
        water += pump.total_water_delivered
        if pump.battery is not None:
            soc_sum += pump.battery["soc"]
            soc_count += 1
        if pump.communication_method == "WireGuard":
            wireguard += 1
    return {
        "total_controllers": total,
        "active_controllers": active,
        "offline_controllers": total - active,
        "total_water_delivered": round(water, 1),
        "average_battery_soc": json_number(round(soc_sum / soc_count, 1)) if soc_count else None,
        "wireguard_connections": wireguard,
    }


def metadata(pump: Pump, extra: dict[str, Any]) -> dict[str, Any]:
    """The ``metadata`` object of GET /v1/pumps/:pumpId/metadata.

    Installation keys are omitted when the pump has no installation, last_seen when never seen.
    ``extra`` (fleet-wide extras, then the pump's own) is merged last, so "more metadata fields may
    appear over time" can be simulated, and an extra may deliberately shadow a core field.
    """
    body: dict[str, Any] = {"pump_id": pump.pump_id}
    if pump.installation is not None:
        body["installation_name"] = pump.installation["installation_name"]
        body["location_name"] = pump.installation["location_name"]
        body["latitude"] = pump.installation["lat"]
        body["longitude"] = pump.installation["lon"]
    if pump.last_seen is not None:
        body["last_seen"] = iso_ms(pump.last_seen)
    water = pump.total_water_delivered
    body["total_water_delivered"] = as_text(water) if pump.numbers_as_strings else water
    body.update(extra)
    return body
