"""A four-day story of a small fleet with known readings, for the SQL model tests.

Times are UTC; R1..R6 are the syncs. Every water amount, battery SOC and pressure is exact in
binary floating point, so sums and averages are the same on every database and in Python.

    D1 2025-03-20  06:00 R1  pumps a, b (user 101), c (user 102, WireGuard) report; a has an alarm
                   18:00 R2  a +10.0 and b +5.5 report; c stays silent: offline from now on
    D2 2025-03-21  09:00 R3  a's counter is reset (0, then +4.0); b reboots and reports +2.5
                   14:00 R4  a +1.0 reports; pump d joins user 102 (counter at 300.0, one alarm)
    D3 2025-03-22            no sync. a +2.5 reports at 15:00; a's alarm clears at 16:00;
                             b moves from user 101 to user 102 at 20:00
    D4 2025-03-23  10:00 R5  b +7.5 and d +1.5 report
                   22:00 R6  d +0.5 reports; c was removed from the portal: it vanishes
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from tests.portal_emulator import Alarm, Fleet, PortalEmulator

UTC = dt.UTC
START = dt.datetime(2025, 3, 20, 6, 0, tzinfo=UTC)
D1, D2, D3, D4 = (dt.date(2025, 3, day) for day in (20, 21, 22, 23))


def at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


R1, R2, R3, R4, R5, R6 = at(D1, 6), at(D1, 18), at(D2, 9), at(D2, 14), at(D4, 10), at(D4, 22)
RUNS = (R1, R2, R3, R4, R5, R6)


def make_fleet() -> Fleet:
    fleet = Fleet(seed=11, start=START)
    fleet.add_user(101, "Acme Farms")
    fleet.add_user(102, "Beta Growers")
    add(fleet, "pump-a", 101, "North field", total=1000.0, soc=80, pressure=3.0, uptime=5000)
    add(fleet, "pump-b", 101, "South field", total=500.0, soc=60, pressure=2.0, uptime=8000)
    add(fleet, "pump-c", 102, "Well", total=200.0, soc=90, pressure=4.0, uptime=1000)
    with fleet.lock:
        fleet.pumps["pump-c"].communication_method = "WireGuard"
        fleet.pumps["pump-a"].alarms = [
            Alarm("alm-1", "LOW_PRESSURE", "warning", "Pressure below threshold", at(D1, 5))
        ]
    fleet.invalidate()
    return fleet


def add(
    fleet: Fleet,
    pump_id: str,
    user_id: int,
    name: str,
    *,
    total: float,
    soc: int,
    pressure: float,
    uptime: int,
) -> None:
    """A pump that reports at the simulated now, with a known state."""
    fleet.add_pump(pump_id, user_ids=[user_id], position=None)
    with fleet.lock:
        pump = fleet.pumps[pump_id]
        pump.custom_name = name
        pump.installation = {
            "installation_name": "Main",
            "location_name": f"Site {pump_id[-1].upper()}",
            "lat": 52.5,
            "lon": 5.25,
        }
        pump.total_water_delivered = total
        pump.battery = {"voltage": 12.5, "soc": soc, "current": -1.5}
        pump.current_pressure = pressure
        pump.uptime = uptime
    fleet.invalidate()


def report(emu: PortalEmulator, pump_id: str, *, water: float, soc: int, pressure: float) -> None:
    """The pump reports now: the counter grows by `water`; SOC and pressure are set as given."""
    emu.report([pump_id], water=water)
    fleet = emu.fleet
    with fleet.lock:
        pump = fleet.pumps[pump_id]
        pump.battery = {"voltage": 12.5, "soc": soc, "current": -1.5}
        pump.current_pressure = pressure
    fleet.invalidate()


def move_clock(emu: PortalEmulator, moment: dt.datetime) -> None:
    emu.advance((moment - emu.now).total_seconds())


def play(emu: PortalEmulator, sync: Callable[[], object]) -> None:
    """Drive the story; `sync()` runs one sync cycle (with models) at the emulator's now."""
    fleet = emu.fleet
    assert emu.now == R1
    sync()  # R1

    move_clock(emu, R2)
    report(emu, "pump-a", water=10.0, soc=78, pressure=3.5)
    report(emu, "pump-b", water=5.5, soc=62, pressure=2.5)
    sync()  # R2: two syncs on D1

    move_clock(emu, R3)
    fleet.set_counter("pump-a", 0.0)
    report(emu, "pump-a", water=4.0, soc=75, pressure=3.0)  # counter reset
    fleet.reboot("pump-b")
    report(emu, "pump-b", water=2.5, soc=64, pressure=2.0)  # uptime back to 0
    sync()  # R3

    move_clock(emu, R4)
    report(emu, "pump-a", water=1.0, soc=74, pressure=3.0)
    add(fleet, "pump-d", 102, "Greenhouse", total=300.0, soc=50, pressure=1.0, uptime=0)
    with fleet.lock:
        fleet.pumps["pump-d"].alarms = [
            Alarm("alm-2", "DRY_RUN", "critical", "Pump running dry", at(D2, 13))
        ]
    fleet.invalidate()
    sync()  # R4: d joins mid-day

    move_clock(emu, at(D3, 15))
    report(emu, "pump-a", water=2.5, soc=70, pressure=2.5)  # read by R5, dated D3
    move_clock(emu, at(D3, 16))
    with fleet.lock:
        fleet.pumps["pump-a"].alarms[0].cleared_at = emu.now
    fleet.invalidate()
    move_clock(emu, at(D3, 20))
    fleet.move_pump("pump-b", 101, 102, is_owner=True)

    move_clock(emu, R5)  # no sync on D3
    report(emu, "pump-b", water=7.5, soc=66, pressure=2.25)
    report(emu, "pump-d", water=1.5, soc=52, pressure=1.5)
    sync()  # R5

    move_clock(emu, R6)
    report(emu, "pump-d", water=0.5, soc=53, pressure=1.25)
    fleet.remove_pump("pump-c")
    sync()  # R6


# --- what the marts must say ------------------------------------------------------------------

# fleet_history: day, snapshots, total, active, offline, reporting, water, avg SOC, wireguard,
# last sync. Portal statistics per sync (emulator: SOC mean rounded to 1 decimal):
#   R1 3/3/0 soc 76.7   R2 3/2/1 soc 76.7   R3 3/2/1 soc 76.3   R4 4/2/2 soc 69.5
#   R5 4/2/2 soc 69.5   R6 3/1/2 soc 63 (c gone, so no WireGuard pump is left)
FLEET_HISTORY = [
    (D1, 2, 3, 2, 1, 3, 15.5, (76.7 + 76.7) / 2, 1, R2),
    (D2, 2, 4, 2, 2, 3, 7.5, (76.3 + 69.5) / 2, 1, R4),
    (D3, 0, None, None, None, 1, 2.5, None, None, None),
    (D4, 2, 3, 1, 2, 2, 9.5, (69.5 + 63.0) / 2, 0, R6),
]

# controller_daily: pump, day, observations, water, SOC min/avg/max, avg pressure, max active
# alarms, reboots, last reading, day's last sync, listed at it, online at it.
CONTROLLER_DAILY = [
    ("pump-a", D1, 2, 10.0, 78.0, 79.0, 80.0, 3.25, 1, 0, R2, R2, True, True),
    ("pump-a", D2, 2, 5.0, 74.0, 74.5, 75.0, 3.0, 1, 0, R4, R4, True, True),
    ("pump-a", D3, 1, 2.5, 70.0, 70.0, 70.0, 2.5, 0, 0, at(D3, 15), None, None, None),
    ("pump-a", D4, 0, 0.0, None, None, None, None, None, 0, None, R6, True, False),
    ("pump-b", D1, 2, 5.5, 60.0, 61.0, 62.0, 2.25, 0, 0, R2, R2, True, True),
    ("pump-b", D2, 1, 2.5, 64.0, 64.0, 64.0, 2.0, 0, 1, R3, R4, True, False),
    ("pump-b", D3, 0, 0.0, None, None, None, None, None, 0, None, None, None, None),
    ("pump-b", D4, 1, 7.5, 66.0, 66.0, 66.0, 2.25, 0, 0, R5, R6, True, False),
    ("pump-c", D1, 1, 0.0, 90.0, 90.0, 90.0, 4.0, 0, 0, R1, R2, True, False),
    ("pump-c", D2, 0, 0.0, None, None, None, None, None, 0, None, R4, True, False),
    ("pump-c", D3, 0, 0.0, None, None, None, None, None, 0, None, None, None, None),
    ("pump-c", D4, 0, 0.0, None, None, None, None, None, 0, None, R6, False, False),
    ("pump-d", D2, 1, 0.0, 50.0, 50.0, 50.0, 1.0, 1, 0, R4, R4, True, True),
    ("pump-d", D3, 0, 0.0, None, None, None, None, None, 0, None, None, None, None),
    ("pump-d", D4, 2, 2.0, 52.0, 52.5, 53.0, 1.375, 1, 0, R6, R6, True, True),
]

# user_history: user, day, name, snapshots, total, active, offline, linked pumps, reporting
# pumps, water, avg SOC, wireguard, last sync. User statistics per sync:
#   101: R1 2/2/0 soc 70  R2 2/2/0 soc 70  R3 2/2/0 soc 69.5  R4 2/1/1 soc 69
#        R5 1/0/1 soc 70  R6 1/0/1 soc 70        (b left for 102 before R5)
#   102: R1 1/1/0 soc 90  R2 1/0/1 soc 90  R3 1/0/1 soc 90  R4 2/1/1 soc 70
#        R5 3/2/1 soc 69.3  R6 2/1/1 soc 59.5    (d from R4, b from R5, c gone at R6)
USER_HISTORY = [
    (101, D1, "Acme Farms", 2, 2, 2, 0, 2, 2, 15.5, 70.0, 0, R2),
    (101, D2, "Acme Farms", 2, 2, 1, 1, 2, 2, 7.5, (69.5 + 69.0) / 2, 0, R4),
    (101, D3, "Acme Farms", 0, None, None, None, 2, 1, 2.5, None, None, None),
    (101, D4, "Acme Farms", 2, 1, 0, 1, 2, 0, 0.0, 70.0, 0, R6),
    (102, D1, "Beta Growers", 2, 1, 0, 1, 1, 1, 0.0, 90.0, 1, R2),
    (102, D2, "Beta Growers", 2, 2, 1, 1, 2, 1, 0.0, (90.0 + 70.0) / 2, 1, R4),
    (102, D3, "Beta Growers", 0, None, None, None, 2, 0, 0.0, None, None, None),
    (102, D4, "Beta Growers", 2, 2, 1, 1, 3, 2, 9.5, (69.3 + 59.5) / 2, 0, R6),
]

# controllers_current (as of R6): pump, name, location, has delegated owner, owner, owner name,
# user count, user ids, first listed, last seen, last sync, visible, online, status, running,
# SOC, pressure, active alarms, highest level, lifetime water, sessions, uptime (s).
# fmt: off
CONTROLLERS_CURRENT = [
    ("pump-a", "North field", "Site A", True, 101, "Acme Farms", 1, "101", R1, at(D3, 15),
     R6, True, False, "offline", False, 70.0, 2.5, 0, None, 7.5, 4, 210200.0),
    ("pump-b", "South field", "Site B", True, 102, "Beta Growers", 1, "102", R1, R5,
     R6, True, False, "offline", False, 66.0, 2.25, 0, None, 515.5, 3, 176400.0),
    ("pump-c", "Well", "Site C", True, None, None, 0, None, R1, R1,
     R6, False, False, "offline", False, 90.0, 4.0, 0, None, 200.0, 0, 1000.0),
    ("pump-d", "Greenhouse", "Site D", True, 102, "Beta Growers", 1, "102", R4, R6,
     R6, True, True, "running", True, 53.0, 1.25, 1, "critical", 302.0, 2, 201600.0),
]
# fmt: on

# alarms: alarm id, pump, code, level, raised, cleared, first and last summary that listed it,
# summaries listing it, active. a's summary was fetched at R1-R5 (it reported before each) and
# at R6 (its turn in the spread refresh: a and b, both fetched at R5 and due within two runs of
# 12 h, are refreshed one a run, a first); d's at R4-R6; alm-1 changed content (cleared) at R5
# and is still one alarm.
ALARMS = [
    ("alm-1", "pump-a", "LOW_PRESSURE", "warning", at(D1, 5), at(D3, 16), R1, R6, 6, False),
    ("alm-2", "pump-d", "DRY_RUN", "critical", at(D2, 13), None, R4, R6, 3, True),
]
