"""Seeded generation of a plausible fleet: the same seed always yields the same pumps and users.

Proportions (approximate, drawn from one ``random.Random(seed)``): 5% never seen (no last_seen,
last_heartbeat or battery, status "never_seen", no metadata/summary); 10% of the rest report no
battery; 10% have no installation; 15% are unnamed; 10% send some numbers as strings; battery soc is
an int for ~60% and a one-decimal float for the others; ~70% of seen pumps were seen within the
active window before ``start``, the rest over the previous 72 hours; ~20% of pumps are shared by two
delegated users (the first owns it, is_owner 1; the second has is_owner 0); ~5% of the unshared ones
are only shared *to* the integration (no delegated owner, is_owner 0 everywhere).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .model import Alarm, Battery, Installation, Pump, User

USER_ID_BASE = 101  # delegated user ids are 101, 102, ... (the reference example uses 101)

_NAME_FIRST = ("Acme", "Green", "Hill", "River", "Sun", "Oak", "Delta", "Prairie", "Lake", "Stone")
_NAME_SECOND = ("Farms", "Growers", "Ranch", "Orchards", "Estates", "Co-op", "Dairy", "Fields")
_FIELDS = ("North field", "South field", "Barn", "Orchard", "Paddock", "Well", "Greenhouse")
_SITES = ("Site A", "Site B", "Site C", "Upper meadow", "Lower meadow", "Yard")
_INSTALLATIONS = ("Main", "Backup", "East", "West", "Borehole")
_PROFILES = ("IRRIGATION", "LIVESTOCK", "DOMESTIC", "INDUSTRIAL")
_PROFILE_WEIGHTS = (50, 25, 15, 10)
_METHODS = ("MQTT", "WireGuard", "LTE")
_METHOD_WEIGHTS = (60, 25, 15)
ALARM_KINDS = (
    ("LOW_PRESSURE", "warning", "Pressure below threshold"),
    ("HIGH_PRESSURE", "critical", "Pressure above safe limit"),
    ("LOW_BATTERY", "warning", "Battery state of charge low"),
    ("DRY_RUN", "critical", "Pump running dry"),
    ("COMMS_TIMEOUT", "warning", "Controller missed heartbeats"),
    ("OVERCURRENT", "critical", "Motor current above limit"),
)


@dataclass
class GeneratedFleet:
    pumps: dict[str, Pump]
    order: list[str]
    users: dict[int, User]
    never_seen: set[str] = field(default_factory=set)


def pump_id_for(number: int, width: int) -> str:
    return f"pump-{number:0{width}d}"


def id_width(pump_count: int) -> int:
    """Ids are zero-padded to at least 3 digits ("pump-001"), wider for big fleets."""
    return max(3, len(str(pump_count)))


def battery_for(soc: int | float, rng: random.Random) -> Battery:
    return {"voltage": voltage_for(soc), "soc": soc, "current": round(rng.uniform(-5.0, 3.0), 1)}


def voltage_for(soc: int | float) -> float:
    """A 12 V lead-acid-ish curve: voltage follows soc, so both move together on reports."""
    return round(11.4 + float(soc) * 0.013, 2)


def _ms(rng: random.Random, low_s: float, high_s: float) -> timedelta:
    """A random whole-millisecond offset, so datetimes survive the API's millisecond format."""
    return timedelta(milliseconds=rng.randint(int(low_s * 1000), int(high_s * 1000)))


def _users(count: int, rng: random.Random) -> dict[int, User]:
    users: dict[int, User] = {}
    for index in range(count):
        user_id = USER_ID_BASE + index
        name: str | None = None
        if rng.random() >= 0.2:  # ~20% of delegated users have no display name (null)
            name = f"{rng.choice(_NAME_FIRST)} {rng.choice(_NAME_SECOND)} {index + 1}"
        users[user_id] = User(user_id=user_id, name=name)
    return users


def _alarms(number: int, last_seen: datetime, rng: random.Random) -> list[Alarm]:
    alarms = []
    for k in range(rng.randint(1, 3)):
        code, level, message = rng.choice(ALARM_KINDS)
        raised = last_seen - _ms(rng, 60, 3 * 86400)
        alarms.append(Alarm(f"alm-{number:05d}-{k + 1}", code, level, message, raised))
    return alarms


def _pump(number: int, width: int, start: datetime, rng: random.Random) -> Pump:
    pump_id = pump_id_for(number, width)
    never_seen = rng.random() < 0.05
    custom_name = None if rng.random() < 0.15 else f"{rng.choice(_FIELDS)} {number}"
    installation: Installation | None = None
    if rng.random() >= 0.10:
        installation = {
            "installation_name": rng.choice(_INSTALLATIONS),
            "location_name": rng.choice(_SITES),
            "lat": round(rng.uniform(50.8, 53.5), 4),
            "lon": round(rng.uniform(3.4, 7.2), 4),
        }
    method = rng.choices(_METHODS, _METHOD_WEIGHTS)[0]
    profile = rng.choices(_PROFILES, _PROFILE_WEIGHTS)[0]
    as_strings = rng.random() < 0.10
    if never_seen:
        return Pump(
            pump_id=pump_id,
            custom_name=custom_name,
            last_seen=None,
            last_heartbeat=None,
            installation=installation,
            status="idle",
            total_water_delivered=0.0,
            battery=None,
            communication_method=method,
            current_pressure=None,
            total_sessions=0,
            uptime=0,
            profile=profile,
            numbers_as_strings=as_strings,
        )
    if rng.random() < 0.70:
        last_seen = start - _ms(rng, 0, 14.5 * 60)
    else:
        last_seen = start - _ms(rng, 16 * 60, 72 * 3600)
    heartbeat = last_seen
    if rng.random() < 0.3:
        heartbeat = min(start, last_seen + _ms(rng, 1, 120))
    battery: Battery | None = None
    if rng.random() >= 0.10:
        soc: int | float = (
            rng.randint(15, 100) if rng.random() < 0.6 else round(rng.uniform(15, 99), 1)
        )
        battery = battery_for(soc, rng)
    running = rng.random() < 0.4
    pump = Pump(
        pump_id=pump_id,
        custom_name=custom_name,
        last_seen=last_seen,
        last_heartbeat=heartbeat,
        installation=installation,
        status="running" if running else "idle",
        total_water_delivered=round(rng.uniform(0.0, 50000.0), 1),
        battery=battery,
        communication_method=method,
        current_pressure=round(rng.uniform(1.5, 6.5) if running else rng.uniform(0.0, 1.0), 1),
        total_sessions=rng.randint(1, 5000),
        uptime=rng.randint(60, 30 * 86400),
        profile=profile,
        numbers_as_strings=as_strings,
        placeholder_last_updated=rng.random() < 0.10,
        history_days=rng.choices((7, rng.randint(1, 6), 0), (80, 10, 10))[0],
    )
    if rng.random() < 0.12:
        pump.alarms = _alarms(number, last_seen, rng)
    if last_seen.date() == start.date():
        pump.today_date = start.date()
        pump.today_snapshots = rng.randint(1, 40)
        pump.today_water = round(rng.uniform(0.0, 300.0), 1)
    return pump


def _assign(order: list[str], users: dict[int, User], rng: random.Random) -> None:
    """Every pump gets a primary user (every user gets >= 1 pump when pumps >= users); user sizes
    are skewed like real customers; ~20% of pumps are also shared with a second user."""
    user_ids = list(users)
    weights = [1.0 / (rank + 1) ** 0.7 for rank in range(len(user_ids))]
    primaries = user_ids[: len(order)]
    primaries += rng.choices(user_ids, weights, k=max(0, len(order) - len(user_ids)))
    rng.shuffle(primaries)
    for pump_id, primary in zip(order, primaries, strict=True):
        shared = len(user_ids) > 1 and rng.random() < 0.20
        owner = shared or rng.random() >= 0.05
        users[primary].pumps[pump_id] = owner
        if shared:
            second = rng.choice([uid for uid in user_ids if uid != primary])
            users[second].pumps[pump_id] = False


def generate(pumps: int, users: int, seed: int, start: datetime) -> GeneratedFleet:
    if pumps < 0:
        raise ValueError("pumps must be >= 0")
    if users < 1:
        raise ValueError("users must be >= 1 (use the no_users key for an empty integration)")
    rng = random.Random(seed)
    width = id_width(pumps)
    user_map = _users(users, rng)
    pump_map: dict[str, Pump] = {}
    for number in range(1, pumps + 1):
        pump = _pump(number, width, start, rng)
        pump_map[pump.pump_id] = pump
    order = list(pump_map)
    _assign(order, user_map, rng)
    never_seen = {pid for pid, pump in pump_map.items() if pump.last_seen is None}
    return GeneratedFleet(pump_map, order, user_map, never_seen)
