"""Plain data of the simulated fleet: pumps, alarms and delegated users.

These are the ground truth tests assert against. Mutate them through ``Fleet`` methods (which
take the lock and invalidate caches); after editing a field directly, call ``Fleet.invalidate()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypedDict


class Installation(TypedDict):
    installation_name: str
    location_name: str
    lat: float
    lon: float


class Battery(TypedDict):
    voltage: float
    # int for some pumps, float (e.g. 82.5) for others: the reference shows both forms.
    soc: int | float
    current: float


@dataclass
class Alarm:
    """An alarm. Choice: every generated alarm is still active (``cleared_at`` None), so
    ``recent_alarms.count`` equals the listing's ``active_alarms_count``."""

    alarm_id: str
    code: str
    level: str  # "warning" | "critical"
    message: str
    raised_at: datetime
    cleared_at: datetime | None = None


@dataclass
class Pump:
    """One controller. ``status`` is the last *reported* state ("running" | "idle"); the listing
    derives "never_seen" (no last_seen) and "offline" (not active) from it at render time."""

    pump_id: str
    custom_name: str | None
    last_seen: datetime | None
    last_heartbeat: datetime | None
    installation: Installation | None
    status: str
    total_water_delivered: float
    battery: Battery | None
    communication_method: str  # "MQTT" | "WireGuard" | "LTE"
    current_pressure: float | None
    total_sessions: int
    uptime: int  # seconds since the last reboot
    profile: str
    alarms: list[Alarm] = field(default_factory=list)
    numbers_as_strings: bool = False  # render some numeric fields as JSON strings
    placeholder_last_updated: bool = False  # summary live_data.last_updated is the "…" placeholder
    history_days: int = 0  # days of daily summaries the summary endpoint has (0..7)
    today_date: date | None = None
    today_water: float = 0.0
    today_snapshots: int = 0
    metadata_extra: dict[str, Any] = field(default_factory=dict)
    rebooted_at: datetime | None = None  # uptime counts from here (not last_seen) after a reboot

    @property
    def active_alarms_count(self) -> int:
        return sum(1 for alarm in self.alarms if alarm.cleared_at is None)

    @property
    def highest_alarm_level(self) -> str | None:
        levels = {alarm.level for alarm in self.alarms if alarm.cleared_at is None}
        if "critical" in levels:
            return "critical"
        return "warning" if levels else None


@dataclass
class User:
    """A delegated portal user; ``pumps`` maps pump id -> whether this user owns it."""

    user_id: int
    name: str | None
    pumps: dict[str, bool] = field(default_factory=dict)
