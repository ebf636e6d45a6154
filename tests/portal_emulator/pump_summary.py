"""The payload of GET /v1/pumps/:pumpId/summary.

The reference gives the outer shape only; the element shapes chosen here are:

* ``recent_alarms.alarms[]``: {"alarm_id", "code", "level", "message", "raised_at", "cleared_at"},
  newest first; count/critical/warning are computed from that list.
* ``week_trends.daily_summaries[]``: {"date", "water_delivered" (string, e.g. "123.4"),
  "avg_pressure", "avg_battery_soc", "snapshot_count"}, oldest first, up to the 7 days before today.
* ``today.statistics``: {"water_delivered", "avg_pressure", "min_battery_soc", "max_battery_soc"},
  or ``{}`` with snapshot_count 0 when the pump has not reported today (simulated date).

Daily summaries are derived from (seed, pump id, date), so they are stable for a simulated day;
"today" comes from the pump's reports. ``week_trends.total_water_delivered`` and ``avg_uptime``
are strings as in the reference; ``live_data.last_updated`` is the "…" placeholder for some pumps
and for never-seen ones.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import date, datetime, timedelta
from typing import Any

from .clock import iso_ms
from .model import Pump

PLACEHOLDER = "…"


def _unit_values(key: str) -> tuple[float, float, float, float]:
    """Four deterministic values in [0, 1) for ``key``: one hash instead of seeding a
    ``random.Random`` per day, which made summaries ~5x slower."""
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    a, b, c, d = struct.unpack("<4I", digest)
    scale = 2.0**32
    return a / scale, b / scale, c / scale, d / scale


def _daily_summaries(pump: Pump, today: date, seed: int) -> list[dict[str, Any]]:
    days = min(pump.history_days, 7)
    rows: list[dict[str, Any]] = []
    for back in range(days, 0, -1):
        day = (today - timedelta(days=back)).isoformat()
        water, pressure, soc, snapshots = _unit_values(f"{seed}:daily:{pump.pump_id}:{day}")
        rows.append(
            {
                "date": day,
                "water_delivered": f"{water * 400.0:.1f}",
                "avg_pressure": round(1.5 + pressure * 4.5, 1),
                "avg_battery_soc": 20 + int(soc * 81),
                "snapshot_count": 1 + int(snapshots * 96),
            }
        )
    return rows


def _today(pump: Pump, today: date) -> dict[str, Any]:
    if pump.today_date != today or pump.today_snapshots == 0:
        return {"date": today.isoformat(), "statistics": {}, "snapshot_count": 0, "is_today": True}
    soc = pump.battery["soc"] if pump.battery is not None else None
    stats = {
        "water_delivered": round(pump.today_water, 1),
        "avg_pressure": pump.current_pressure,
        "min_battery_soc": None if soc is None else max(0, int(soc) - 5),
        "max_battery_soc": None if soc is None else min(100, int(soc) + 5),
    }
    return {
        "date": today.isoformat(),
        "statistics": stats,
        "snapshot_count": pump.today_snapshots,
        "is_today": True,
    }


def _alarms(pump: Pump) -> dict[str, Any]:
    alarms = sorted(pump.alarms, key=lambda alarm: alarm.raised_at, reverse=True)
    return {
        "count": len(alarms),
        "critical": sum(1 for alarm in alarms if alarm.level == "critical"),
        "warning": sum(1 for alarm in alarms if alarm.level == "warning"),
        "alarms": [
            {
                "alarm_id": alarm.alarm_id,
                "code": alarm.code,
                "level": alarm.level,
                "message": alarm.message,
                "raised_at": iso_ms(alarm.raised_at),
                "cleared_at": None if alarm.cleared_at is None else iso_ms(alarm.cleared_at),
            }
            for alarm in alarms
        ],
    }


def pump_summary(pump: Pump, now: datetime, seed: int) -> dict[str, Any]:
    """The summary body (without ``api_version``) for ``pump`` at simulated time ``now``."""
    today = now.date()
    daily = _daily_summaries(pump, today, seed)
    battery = pump.battery
    if daily:
        total = round(sum(float(row["water_delivered"]) for row in daily), 1)
        avg_pressure: float | None = round(
            sum(row["avg_pressure"] for row in daily) / len(daily), 2
        )
        avg_soc: float | None = round(sum(row["avg_battery_soc"] for row in daily) / len(daily), 1)
        avg_uptime = str(min(pump.uptime, 86400))
        method = "daily_summaries"
        average_water: dict[str, Any] = {
            "avg_daily_water": round(total / len(daily), 1),
            "total_water": total,
            "days_with_data": len(daily),
            "calculation_method": method,
        }
    else:
        total, avg_pressure, avg_soc, avg_uptime, method = 0.0, None, None, "0", "no_data"
        average_water = {
            "avg_daily_water": 0,
            "total_water": 0,
            "days_with_data": 0,
            "calculation_method": method,
        }
    if pump.placeholder_last_updated or pump.last_seen is None:
        live_updated = PLACEHOLDER
    else:
        live_updated = iso_ms(pump.last_seen)
    return {
        "pump_id": pump.pump_id,
        "metadata": {"pump_id": pump.pump_id},
        "live_data": {
            "current_pressure": pump.current_pressure,
            "battery_soc": None if battery is None else battery["soc"],
            "battery_voltage": None if battery is None else battery["voltage"],
            "last_updated": live_updated,
        },
        "today": _today(pump, today),
        "recent_alarms": _alarms(pump),
        "week_trends": {
            "daily_summaries": daily,
            "total_water_delivered": f"{total:.1f}",
            "avg_pressure": avg_pressure,
            "avg_battery_soc": avg_soc,
            "avg_uptime": avg_uptime,
        },
        "total_average_water": average_water,
        "lifetime_averages": {
            "avg_pressure": avg_pressure,
            "avg_battery_soc": avg_soc,
            "calculation_method": method,
        },
        "last_updated": iso_ms(now),
        "data_source": "database",
    }
