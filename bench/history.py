"""`python -m bench.history`: does a scheduled cycle stay cheap once the warehouse holds a year?

Issue #11, item 4. A 15-minute cycle that reads a handful of changed pumps should cost about the
same on the first day and after a year of history; a model build or a publish that copies
everything grows with the history instead. This scenario measures that growth, in one run:

1. A fresh warehouse per case, set up by the real command line (`python -m pipelines.cli`,
   configured through environment variables as tests/conftest.py `cli_environment` does, with
   the deployment's .dlt/config.toml) against an emulated 2,000-pump portal (in this process):
   `run --no-models` creates the raw schema, dlt's state and the published copy. No models
   yet: an incremental build made now would count the history, inserted behind its back with
   older load ids, as already read.
2. History is generated DIRECTLY in the raw tables with SQL (`insert ... select ... from range()`
   on DuckDB, `generate_series()` on Postgres), never through the API: a reading per pump every
   15 minutes over the `--days` before the first sync (2,000 pumps x 96 a day x 365 days =
   70 M readings) with counters that grow and reset now and then, uptime with reboots, battery
   state of charge following the sun; one fleet snapshot and one snapshot per delegated user per
   simulated sync; a pump summary per `--summaries-per-day` with alarm episodes in its child
   table; link and visibility periods. Every simulated sync is a load recorded in `_dlt_loads`,
   and its rows carry that `_dlt_load_id` and unique `_dlt_id`s (`_dlt_root_id` and
   `_dlt_parent_id` in the child table). Only columns the destination already has are written,
   so the generator follows the raw schema as dlt made it.
3. `models` builds the models over the whole history (the warm-up: a first build, which any
   model implementation, full or incremental, must do once), timed but not a target.
4. The measured steady state: the emulator's clock moves 15 minutes, 2% of the pumps report, and
   the real `run` (sync + models + publish) runs as a subprocess, twice: the first (timed, not a
   target) also brings the older of the two reader copies up to the history, which happens once;
   the second is what every later cycle costs. Then `models` alone (publishing off). Each is
   timed in a fresh wrapper process (`python -m bench.history measure`), whose
   `getrusage(RUSAGE_CHILDREN).ru_maxrss` is the peak RSS of the largest process it waited for.

The cases: DuckDB with one day (2,000 x 96 = 192,000 readings) and with `--days` of history;
Postgres with one day and with `--postgres-readings` (10 M: 52 days), each in a database created
for the run and dropped after it. Printed: every phase's time, the table, the ratios history /
one day, and the targets: on DuckDB the cycle at ~70 M within 1.5x of the one-day cycle and
under 500 MB peak RSS; on Postgres the model step at 10 M within 1.5x of its one-day time.
Figures are measured in the same run, so the ratios compare like with like; nothing is asserted.

    .venv/bin/python -m bench.history                       # the targets' sizes (long)
    .venv/bin/python -m bench.history --quick               # --pumps 200 --days 7: 1-2 min
    .venv/bin/python -m bench.history --skip-postgres --write-results bench/HISTORY.md

It drives only the command line and the raw tables, so it measures whatever pipelines/ and sql/
hold: the working tree by default, or `--code HEAD` (any git revision). That code and
.dlt/config.toml are copied into the workdir first and every command runs from the copy, so an
edit to the checkout during a long run cannot mix two versions; the printed fingerprint names the
version measured. It writes only into `--workdir` (default: a temporary folder, removed
afterwards) and, when asked, the `--write-results` file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
RAW = "pump_portal"  # the dataset the command line loads into by default
MODELS = "pump_portal_models"  # where it builds the models by default
SEED = 7
TARGET_RATIO = 1.5
TARGET_RSS_MB = 500.0
OK_EXIT_CODES = (0, 10)  # success, partial (pumps without details yet are normal)
# A developer's own portal, destination or settings must not leak into the measured runs.
CONFIG_PREFIXES = (
    "SOURCES__",
    "DESTINATION__",
    "PIPELINES__",
    "SYNC__",
    "MODELS__",
    "NORMALIZE__",
    "LOAD__",
    "EXTRACT__",
    "DATA_WRITER__",
)
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CHUNK_DAYS = 30  # history is inserted this many days at a time (progress lines, bounded memory)
ALARM_KINDS = (  # as the emulator sends them: (code, level, message)
    ("OVERCURRENT", "critical", "Motor current above limit"),
    ("HIGH_PRESSURE", "critical", "Pressure above safe limit"),
    ("DRY_RUN", "critical", "Pump running dry"),
    ("LOW_PRESSURE", "warning", "Pressure below threshold"),
    ("LOW_BATTERY", "warning", "Battery state of charge low"),
    ("COMMS_TIMEOUT", "warning", "Controller missed heartbeats"),
)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# =============================================================================================
# the history's shape, and the SQL that writes it (one template, two dialects)
# =============================================================================================


@dataclass(frozen=True)
class Shape:
    """How much history: `days` of readings every 24 h / `readings_per_day` for every pump."""

    pumps: int
    users: int
    days: int
    readings_per_day: int
    summaries_per_day: int

    @property
    def slots(self) -> int:
        """Simulated syncs in the history (one reading per pump each)."""
        return self.days * self.readings_per_day

    @property
    def readings(self) -> int:
        return self.slots * self.pumps

    @property
    def interval_ms(self) -> int:
        return 86_400_000 // self.readings_per_day

    @property
    def summary_step(self) -> int:
        return max(1, self.readings_per_day // max(1, self.summaries_per_day))

    @property
    def summaries(self) -> int:
        return -(-self.slots // self.summary_step) * self.pumps


@dataclass(frozen=True)
class Dialect:
    """The few expressions DuckDB and Postgres spell differently; the rest is common SQL."""

    name: str
    series: Callable[[int], str]  # rows k = 0 .. n-1, as `t(k)`
    hash64: Callable[[str, int], str]  # a 64-bit hash of an integer expression and a salt
    round_to: Callable[[str, int], str]
    epoch_text: Callable[[str], str]  # a timestamp as dlt spells a load id
    iso_text: Callable[[str], str]  # a timestamp as the API's ISO 8601 text
    hex16: Callable[[str], str]
    millis: Callable[[str], str]  # an interval of a bigint number of milliseconds


DUCKDB = Dialect(
    name="duckdb",
    series=lambda n: f"range({n}) as t(k)",
    hash64=lambda e, salt: f"hash({e}, {salt})",
    round_to=lambda e, n: f"round({e}, {n})",
    epoch_text=lambda e: f"cast(epoch({e}) as varchar)",
    iso_text=lambda e: f"strftime({e}, '%Y-%m-%dT%H:%M:%S.%gZ')",
    hex16=lambda e: f"lower(to_hex({e}))",
    millis=lambda e: f"to_milliseconds({e})",  # `interval * bigint` overflows int32 here
)
POSTGRES = Dialect(
    name="postgres",
    series=lambda n: f"generate_series(0, {n} - 1) as t(k)",
    hash64=lambda e, salt: f"hashint8extended({e}, {salt})",
    round_to=lambda e, n: f"round(cast({e} as numeric), {n})",
    epoch_text=lambda e: f"cast(extract(epoch from {e}) as varchar)",
    iso_text=lambda e: f"to_char({e} at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    hex16=lambda e: f"lpad(to_hex({e}), 16, '0')",
    millis=lambda e: f"(interval '1 millisecond' * {e})",
)


def unit(hash_expression: str, slot: int) -> str:
    """A uniform value in [0, 1) from 10 bits of a hash (six independent ones per hash)."""
    return f"(cast((({hash_expression}) >> {10 * slot}) & 1023 as double precision) / 1024)"


@dataclass(frozen=True)
class Anchor:
    """What the first real sync left: its time (the history ends there) and the raw columns."""

    first_sync_at: str  # ISO 8601, the first fleet snapshot's time
    columns: dict[str, set[str]]

    def has(self, table: str) -> bool:
        return table in self.columns


@dataclass(frozen=True)
class Plan:
    shape: Shape
    dialect: Dialect
    anchor: Anchor

    def at_slot(self, slot_expression: str) -> str:
        """The time of the simulated sync `slot_expression` (slot N would be the first sync)."""
        n, step = self.shape.slots, self.shape.interval_ms
        first = f"cast('{self.anchor.first_sync_at}' as timestamptz)"
        return f"({first} - {self.dialect.millis(f'({n} - ({slot_expression})) * {step}')})"


def insert(plan: Plan, table: str, values: dict[str, str], source: str) -> str | None:
    """`insert into <raw>.<table> (...) select ...` of the columns the table has; None if the
    table does not exist (dlt creates a table only when rows arrive)."""
    existing = plan.anchor.columns.get(table)
    if existing is None:
        return None
    chosen = {column: expression for column, expression in values.items() if column in existing}
    columns = ", ".join(chosen)
    expressions = ",\n    ".join(
        f"{expression} as {column}" for column, expression in chosen.items()
    )
    return f"insert into {RAW}.{table} ({columns})\nselect\n    {expressions}\nfrom {source}"


def setup_statements(plan: Plan) -> list[str]:
    """Temporary tables: the simulated syncs (slots), and per pump / per user parameters."""
    shape, d = plan.shape, plan.dialect
    n, per_day = shape.slots, shape.readings_per_day
    interval_s = shape.interval_ms / 1000
    slots = f"""
create temporary table hist_slots as
select k, {n} - k as d, sync_at, {d.epoch_text("sync_at")} as load_id,
    extract(hour from sync_at) + extract(minute from sync_at) / 60.0 as hour_f
from (
    select cast(k as bigint) as k, {plan.at_slot("cast(k as bigint)")} as sync_at
    from {d.series(n)}
) as s"""
    h = d.hash64("idx", 11)
    pumps = f"""
create temporary table hist_pumps as
select
    pump_id, idx, water_end, uptime_end, sessions_end, rate, offset_ms, soc_bias, session_rate,
    cast(floor(water_end / rate) as bigint) as water_final,
    cast({per_day} * (60 + floor(180 * {unit(h, 1)})) as bigint) as water_epoch,
    cast(floor(uptime_end / {interval_s}) as bigint) as boot_final,
    cast({per_day} * (7 + floor(83 * {unit(h, 2)})) as bigint) as boot_epoch,
    cast(floor({n} * (0.2 + 0.5 * {unit(h, 3)})) as bigint) as vanish_k,
    cast(floor({n} * 0.1 * {unit(h, 4)}) as bigint) as link_from_k
from (
    select *,
        cast(5 + 45 * {unit(h, 0)} as double precision) as rate,
        cast(1000 + floor(({shape.interval_ms} - 2000) * {unit(h, 5)}) as bigint) as offset_ms,
        cast(20 * {unit(d.hash64("idx", 12), 0)} - 10 as double precision) as soc_bias,
        cast(0.1 + 0.4 * {unit(d.hash64("idx", 12), 1)} as double precision) as session_rate
    from (
        select
            pump_id,
            cast(row_number() over (order by pump_id) as bigint) as idx,
            cast(coalesce(pump__total_water_delivered, 0) as double precision) as water_end,
            cast(coalesce(uptime, 0) as double precision) as uptime_end,
            cast(coalesce(total_sessions, 0) as bigint) as sessions_end
        from {RAW}.controllers
    ) as listed
) as drawn"""
    users = f"""
create temporary table hist_users as
select
    user_id, name,
    cast(row_number() over (order by user_id) as bigint) as uidx,
    cast(coalesce(total_controllers, 0) as bigint) as total_controllers,
    cast(coalesce(total_water_delivered, 0) as double precision) as water_end,
    cast(coalesce(average_battery_soc, 60) as double precision) as soc,
    cast(coalesce(wireguard_connections, 0) as bigint) as wireguard
from {RAW}.delegated_users"""
    return [slots, pumps, users]


def readings_source(plan: Plan, first: int, last: int, step: int = 1) -> str:
    """One row per pump per simulated sync in [first, last) (every `step`-th): the reading's
    values (`r.*`) and, per pump-week, an alarm episode."""
    shape, d = plan.shape, plan.dialect
    interval_s = shape.interval_ms / 1000
    week = 7 * shape.readings_per_day
    h, a = "h", "ah"
    return f"""(
    select
        pump_id, idx, k, d, sync_at, load_id, last_seen, rate, soc_bias, boot_epoch, week,
        (hour_f >= 6 and hour_f < 19 and {unit(h, 0)} < 0.75) as running,
        case
            when d <= water_final then water_end - rate * d + 0.9 * rate * {unit(h, 1)}
            else rate * (water_epoch - 1 - ((d - water_final - 1) % water_epoch))
                + 0.9 * rate * {unit(h, 1)}
        end as water,
        case
            when d <= boot_final then uptime_end - d * {interval_s}
            else (boot_epoch - 1 - ((d - boot_final - 1) % boot_epoch)) * {interval_s}
                + offset_ms / 1000.0
        end as uptime,
        greatest(0, sessions_end - cast(floor(d * session_rate) as bigint)) as sessions,
        least(100, greatest(5,
            60 + soc_bias + 30 * sin(2 * pi() * (hour_f - 9) / 24) + 6 * ({unit(h, 2)} - 0.5)
        )) as soc,
        {unit(h, 3)} as u_pressure,
        {unit(h, 4)} as u_current,
        case when {unit(h, 5)} < 0.01 then 1 when {unit(h, 5)} < 0.013 then 2 else 0 end
            as alarms,
        ({unit(a, 0)} < 0.125 and k >= week * {week} + floor({unit(a, 1)} * {week} / 3.5))
            as alarm_on,
        cast(floor(6 * {unit(a, 2)}) as bigint) as alarm_kind,
        cast(week * {week} + floor({unit(a, 1)} * {week} / 3.5) as bigint) as alarm_raised_k,
        ({unit(a, 3)} < 0.8 and (week + 1) * {week} - 1 < {shape.slots}) as alarm_cleared,
        {d.hex16(d.hash64("week * 1000003 + idx", 13))} as alarm_key
    from (
        select
            p.*, s.k, s.d, s.sync_at, s.load_id, s.hour_f,
            s.sync_at - {d.millis("p.offset_ms")} as last_seen,
            cast((s.k - s.k % {week}) / {week} as bigint) as week,
            {d.hash64("s.k * 1000003 + p.idx", 1)} as {h},
            {d.hash64(f"cast((s.k - s.k % {week}) / {week} as bigint) * 1000003 + p.idx", 2)}
                as {a}
        from hist_slots as s
        cross join hist_pumps as p
        where s.k >= {first} and s.k < {last} and s.k % {step} = 0
    ) as drawn
) as r"""


def observation_values(plan: Plan) -> dict[str, str]:
    rnd, pumps = plan.dialect.round_to, plan.shape.pumps
    return {
        "pump_id": "pump_id",
        "last_seen": "last_seen",
        "last_heartbeat": "last_seen",
        "pump__status": "case when running then 'running' else 'idle' end",
        "pump__total_water_delivered": rnd("water", 1),
        "pump__running": "running",
        "battery__voltage": rnd("11.4 + soc * 0.013", 2),
        "battery__soc": rnd("soc", 1),
        "battery__current": (
            f"case when running then {rnd('-1 - 3 * u_current', 1)} "
            f"else {rnd('0.2 + u_current', 1)} end"
        ),
        "current_pressure": (
            f"case when running then {rnd('1.5 + 5 * u_pressure', 1)} "
            f"else {rnd('0.3 * u_pressure', 1)} end"
        ),
        "active_alarms_count": "alarms",
        "highest_alarm_level": "case alarms when 1 then 'warning' when 2 then 'critical' end",
        "total_sessions": "sessions",
        "uptime": rnd("uptime", 0),
        "observed_at": "sync_at",
        "_dlt_load_id": "load_id",
        "_dlt_id": f"'o' || cast(k * {pumps} + idx as varchar)",
    }


def summary_values(plan: Plan) -> dict[str, str]:
    rnd, shape = plan.dialect.round_to, plan.shape
    return {
        "pump_id": "pump_id",
        "metadata__pump_id": "pump_id",
        "live_data__current_pressure": (
            f"case when running then {rnd('1.5 + 5 * u_pressure', 1)} else 0.0 end"
        ),
        "live_data__battery_soc": rnd("soc", 1),
        "live_data__battery_voltage": rnd("11.4 + soc * 0.013", 2),
        "live_data__last_updated": "last_seen",
        "today__date": "cast(sync_at as date)",
        "today__snapshot_count": f"k % {shape.readings_per_day} + 1",
        "today__is_today": "true",
        "recent_alarms__count": "case when alarm_on then 1 else 0 end",
        "recent_alarms__critical": "case when alarm_on and alarm_kind < 3 then 1 else 0 end",
        "recent_alarms__warning": "case when alarm_on and alarm_kind >= 3 then 1 else 0 end",
        "week_trends__total_water_delivered": rnd(f"rate * {shape.readings_per_day} * 7", 1),
        "week_trends__avg_pressure": rnd("2.2 + rate / 50", 2),
        "week_trends__avg_battery_soc": rnd("60 + soc_bias", 1),
        "week_trends__avg_uptime": rnd(f"boot_epoch * {shape.interval_ms / 2000}", 0),
        "last_updated": "last_seen",
        "data_source": "'database'",
        "fetched_at": "sync_at",
        "_dlt_load_id": "load_id",
        "_dlt_id": f"'s' || cast(k * {shape.pumps} + idx as varchar)",
    }


def alarm_values(plan: Plan) -> dict[str, str]:
    d, pumps = plan.dialect, plan.shape.pumps
    week = 7 * plan.shape.readings_per_day

    def by_kind(position: int) -> str:
        cases = " ".join(f"when {i} then '{kind[position]}'" for i, kind in enumerate(ALARM_KINDS))
        return f"case alarm_kind {cases} end"

    parent = f"'s' || cast(k * {pumps} + idx as varchar)"
    return {
        "alarm_id": "'hist-' || cast(idx as varchar) || '-' || cast(week as varchar)",
        "code": by_kind(0),
        "level": by_kind(1),
        "message": by_kind(2),
        "raised_at": d.iso_text(plan.at_slot("alarm_raised_k")),
        "cleared_at": (
            f"case when alarm_cleared then {d.iso_text(plan.at_slot(f'(week + 1) * {week} - 1'))}"
            " end"
        ),
        "alarm_key": "alarm_key",
        "pump_id": "pump_id",
        "_dlt_root_id": parent,
        "_dlt_parent_id": parent,
        "_dlt_list_idx": "0",
        "_dlt_id": f"'a' || cast(k * {pumps} + idx as varchar)",
    }


def user_snapshot_values(plan: Plan) -> dict[str, str]:
    rnd, shape = plan.dialect.round_to, plan.shape
    share = f"(0.55 + 0.2 * {unit(plan.dialect.hash64('s.k * 1000003 + u.uidx', 3), 0)})"
    users = max(1, shape.users)
    return {
        "user_id": "u.user_id",
        "name": "u.name",
        "total_controllers": "u.total_controllers",
        "active_controllers": f"cast(round(u.total_controllers * {share}) as bigint)",
        "offline_controllers": (
            f"u.total_controllers - cast(round(u.total_controllers * {share}) as bigint)"
        ),
        "total_water_delivered": rnd(
            f"u.water_end * (0.5 + 0.5 * cast(s.k as double precision) / {shape.slots})", 1
        ),
        "average_battery_soc": rnd("u.soc + 8 * sin(2 * pi() * (s.hour_f - 9) / 24)", 1),
        "wireguard_connections": "u.wireguard",
        "snapshot_at": "s.sync_at",
        "_dlt_load_id": "s.load_id",
        "_dlt_id": f"'u' || cast(s.k * {users + 1} + u.uidx as varchar)",
    }


def chunk_statements(plan: Plan, first: int, last: int) -> list[tuple[str, str]]:
    """The inserts for simulated syncs [first, last): (table, statement)."""
    step = plan.shape.summary_step
    users_source = (
        f"hist_slots as s cross join hist_users as u where s.k >= {first} and s.k < {last}"
    )
    alarms_source = f"{readings_source(plan, first, last, step)} where alarm_on"
    candidates = [
        (
            "controller_observations",
            insert(
                plan,
                "controller_observations",
                observation_values(plan),
                readings_source(plan, first, last),
            ),
        ),
        (
            "pump_summaries",
            insert(
                plan,
                "pump_summaries",
                summary_values(plan),
                readings_source(plan, first, last, step),
            ),
        ),
        (
            "pump_summaries__recent_alarms__alarms",
            insert(
                plan, "pump_summaries__recent_alarms__alarms", alarm_values(plan), alarms_source
            ),
        ),
        (
            "delegated_user_snapshots",
            insert(plan, "delegated_user_snapshots", user_snapshot_values(plan), users_source),
        ),
    ]
    return [(table, sql) for table, sql in candidates if sql is not None]


def once_statements(plan: Plan) -> list[tuple[str, str]]:
    """The loads, fleet snapshots, visibility changes and link periods of the whole history."""
    shape, rnd = plan.shape, plan.dialect.round_to
    n, per_day = shape.slots, shape.readings_per_day
    loads = f"""insert into {RAW}._dlt_loads
    (load_id, schema_name, status, inserted_at, schema_version_hash)
select s.load_id, l.schema_name, 0, s.sync_at + interval '2 seconds', l.schema_version_hash
from hist_slots as s
cross join (
    select schema_name, schema_version_hash from {RAW}._dlt_loads order by load_id limit 1
) as l"""
    fleet = insert(
        plan,
        "fleet_snapshots",
        {
            "total_controllers": "f.total_controllers",
            "active_controllers": "cast(round(f.total_controllers * 0.6) as bigint)",
            "offline_controllers": (
                "f.total_controllers - cast(round(f.total_controllers * 0.6) as bigint)"
            ),
            "total_water_delivered": rnd(
                f"f.total_water_delivered * (0.5 + 0.5 * cast(s.k as double precision) / {n})", 1
            ),
            "average_battery_soc": rnd("55 + 8 * sin(2 * pi() * (s.hour_f - 9) / 24)", 1),
            "wireguard_connections": "f.wireguard_connections",
            "snapshot_at": "s.sync_at",
            "source_endpoint": "'/v1/stats'",
            "_dlt_load_id": "s.load_id",
            "_dlt_id": "'f' || cast(s.k as varchar)",
        },
        f"""hist_slots as s
cross join (
    select total_controllers, total_water_delivered, wireguard_connections
    from {RAW}.fleet_snapshots order by snapshot_at limit 1
) as f""",
    )
    # Every pump listed from the first simulated sync; 2% vanish for two days once.
    churn = f"p.idx % 50 = 0 and p.vanish_k + {2 * per_day} < {n}"
    visibility = insert(
        plan,
        "controller_visibility",
        {
            "pump_id": "v.pump_id",
            "changed_at": "v.changed_at",
            "is_visible": "v.is_visible",
            "_dlt_load_id": "v.load_id",
            "_dlt_id": "v.dlt_id",
        },
        f"""(
    select p.pump_id, s.sync_at as changed_at, true as is_visible, s.load_id,
        'v' || cast(p.idx as varchar) as dlt_id
    from hist_pumps as p join hist_slots as s on s.k = 0
    union all
    select p.pump_id, s.sync_at, false, s.load_id, 'w' || cast(p.idx as varchar)
    from hist_pumps as p join hist_slots as s on s.k = p.vanish_k
    where {churn}
    union all
    select p.pump_id, s.sync_at, true, s.load_id, 'x' || cast(p.idx as varchar)
    from hist_pumps as p join hist_slots as s on s.k = p.vanish_k + {2 * per_day}
    where {churn}
) as v""",
    )
    # Today's links held since the first simulated sync (closed where the first real sync opened
    # them again), and 5% of the pumps shared with another user for a while.
    links = insert(
        plan,
        "user_pump_links",
        {
            "user_id": "l.user_id",
            "pump_id": "l.pump_id",
            "is_owner": "l.is_owner",
            "valid_from": "l.valid_from",
            "valid_to": "l.valid_to",
            "_dlt_load_id": "l.load_id",
            "_dlt_id": "l.dlt_id",
        },
        f"""(
    select c.user_id, c.pump_id, c.is_owner, s.sync_at as valid_from, c.valid_from as valid_to,
        s.load_id, 'l' || cast(row_number() over (order by c.user_id, c.pump_id) as varchar)
            as dlt_id
    from {RAW}.user_pump_links as c join hist_slots as s on s.k = 0
    where c.valid_to is null
    union all
    select u.user_id, p.pump_id, false, s.sync_at, e.sync_at, s.load_id,
        'm' || cast(p.idx as varchar)
    from hist_pumps as p
    join hist_users as u on u.uidx = p.idx % {max(1, shape.users)} + 1
    join hist_slots as s on s.k = p.link_from_k
    join hist_slots as e on e.k = p.link_from_k + {n // 2}
    where p.idx % 20 = 0 and not exists (
        select 1 from {RAW}.user_pump_links as x
        where x.user_id = u.user_id and x.pump_id = p.pump_id
    )
) as l""",
    )
    candidates = [
        ("_dlt_loads", loads),
        ("fleet_snapshots", fleet),
        ("controller_visibility", visibility),
        ("user_pump_links", links),
    ]
    return [(table, sql) for table, sql in candidates if sql is not None]


# =============================================================================================
# running the generation on a warehouse
# =============================================================================================


class Cursor(Protocol):
    def execute(self, sql: str) -> Any: ...
    def fetchall(self) -> list[tuple[Any, ...]]: ...


ANCHOR_SQL = f"select min(snapshot_at) from {RAW}.fleet_snapshots"
COLUMNS_SQL = (
    f"select table_name, column_name from information_schema.columns where table_schema = '{RAW}'"
)


def read_anchor(cursor: Cursor) -> Anchor:
    cursor.execute(ANCHOR_SQL)
    first = cursor.fetchall()[0][0]
    if first is None:
        raise RuntimeError("the first sync wrote no fleet snapshot: nothing to anchor history on")
    cursor.execute(COLUMNS_SQL)
    columns: dict[str, set[str]] = {}
    for table, column in cursor.fetchall():
        columns.setdefault(table, set()).add(column)
    moment = first.astimezone(dt.UTC).isoformat()
    return Anchor(first_sync_at=moment, columns=columns)


@dataclass
class Generation:
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    per_table_s: dict[str, float] = field(default_factory=dict)


def chunks(shape: Shape) -> Iterator[tuple[int, int]]:
    size = CHUNK_DAYS * shape.readings_per_day
    for first in range(0, shape.slots, size):
        yield first, min(shape.slots, first + size)


def generate_history(
    cursor: Cursor, dialect: Dialect, shape: Shape, commit: Callable[[], None]
) -> Generation:
    """Insert the history through `cursor`; `commit` ends each chunk's transaction."""
    started = time.monotonic()
    plan = Plan(shape, dialect, read_anchor(cursor))
    result = Generation()

    def run(table: str, sql: str) -> None:
        began = time.monotonic()
        cursor.execute(sql)
        result.per_table_s[table] = result.per_table_s.get(table, 0.0) + time.monotonic() - began

    for sql in setup_statements(plan):
        run("(setup)", sql)
    for table, sql in once_statements(plan):
        run(table, sql)
    commit()
    for first, last in chunks(shape):
        for table, sql in chunk_statements(plan, first, last):
            run(table, sql)
        commit()
        day = last // shape.readings_per_day
        say(
            f"  history day {day}/{shape.days}: {last * shape.pumps / 1e6:.1f} M readings, "
            f"{time.monotonic() - started:.0f} s"
        )
    for table in ("controller_observations", "pump_summaries", "_dlt_loads"):
        if plan.anchor.has(table):
            cursor.execute(f"select count(*) from {RAW}.{table}")
            result.rows[table] = int(cursor.fetchall()[0][0])
    result.seconds = time.monotonic() - started
    return result


def generate_duckdb(path: Path, shape: Shape, memory_limit: str, spill: Path) -> Generation:
    import duckdb

    spill.mkdir(parents=True, exist_ok=True)
    config = {
        "memory_limit": memory_limit,
        "threads": os.cpu_count() or 2,
        "preserve_insertion_order": False,
        "temp_directory": str(spill),
    }
    with duckdb.connect(str(path), config=config) as connection:
        connection.execute("set TimeZone = 'UTC'")
        connection.execute("begin")

        def commit() -> None:
            connection.execute("commit")
            connection.execute("begin")

        result = generate_history(connection, DUCKDB, shape, commit)
        connection.execute("commit")
        began = time.monotonic()
        connection.execute("checkpoint")
        result.per_table_s["(checkpoint)"] = time.monotonic() - began
    result.seconds += result.per_table_s["(checkpoint)"]
    return result


def generate_postgres(url: str, shape: Shape) -> Generation:
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("set timezone = 'UTC'")
            result = generate_history(cursor, POSTGRES, shape, connection.commit)
            connection.commit()
        # Statistics as autovacuum would leave them on a warehouse that grew over a year.
        began = time.monotonic()
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"analyze {RAW}._dlt_loads")
            for table in plan_tables():
                with contextlib.suppress(psycopg2.Error):
                    cursor.execute(f"analyze {RAW}.{table}")
        result.per_table_s["(analyze)"] = time.monotonic() - began
        result.seconds += result.per_table_s["(analyze)"]
        return result
    finally:
        connection.close()


def plan_tables() -> tuple[str, ...]:
    return (
        "controller_observations",
        "pump_summaries",
        "pump_summaries__recent_alarms__alarms",
        "delegated_user_snapshots",
        "fleet_snapshots",
        "controller_visibility",
        "user_pump_links",
    )


# =============================================================================================
# measuring one command-line run: a fresh wrapper process per measurement
# =============================================================================================


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    peak_rss_mb: float
    exit_code: int
    log: str = ""
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after

    @property
    def ok(self) -> bool:
        return self.exit_code in OK_EXIT_CODES


def measure_main(args: argparse.Namespace) -> int:
    """`python -m bench.history measure --log FILE -- command...`: run the command (its output to
    FILE), print {wall_s, peak_rss_mb, exit_code} as JSON. ru_maxrss of RUSAGE_CHILDREN is the
    largest process this wrapper waited for: the command, or a child of it if one was larger."""
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    with open(args.log, "ab") as log:
        began = time.monotonic()
        process = subprocess.Popen(
            command, cwd=args.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            code = stop_group(process)
        wall = time.monotonic() - began
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"wall_s": wall, "peak_rss_mb": peak_kb / 1024, "exit_code": code}))
    return 0


def stop_group(process: subprocess.Popen[bytes]) -> int:
    """A run past its timeout: SIGTERM (the command line stops cleanly), then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
            break
    return process.returncode if process.returncode is not None else -9


def measure(
    command: Sequence[str], env: dict[str, str], log: Path, timeout: float, code: Path
) -> Measurement:
    """`python -m pipelines.cli <command>` of the code snapshot `code` under the wrapper; its log
    goes to `log`."""
    wrapper = [
        sys.executable,
        "-m",
        "bench.history",
        "measure",
        "--log",
        str(log),
        "--timeout",
        str(timeout),
        "--cwd",
        str(code),
        "--",
        sys.executable,
        "-m",
        "pipelines.cli",
        *command,
    ]
    with open(log, "a") as file:
        file.write(f"\n$ pipelines.cli {' '.join(command)}\n")
    load_before = os.getloadavg()[0]
    done = subprocess.run(
        wrapper, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout + 120
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"the measuring wrapper failed: {done.stderr.strip()[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return Measurement(
        wall_s=figures["wall_s"],
        peak_rss_mb=figures["peak_rss_mb"],
        exit_code=figures["exit_code"],
        log=tail(log, 60),
        load=(load_before, os.getloadavg()[0]),
    )


def tail(log: Path, lines: int = 12) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


SUMMARY_LINE = re.compile(
    r"(pump_portal sync \w+ in [\d.]+ s|^\s+pumps listed \d+, changed .*|built \d+ models .*)"
)


def run_summary(measurement: Measurement) -> str:
    """The command line's own words: how long its sync (with models) and its build took, and
    what it synced."""
    lines = measurement.log.splitlines()
    found = [m.group(1).strip() for m in map(SUMMARY_LINE.search, lines) if m]
    return "; ".join(found[-3:])


# =============================================================================================
# the code under test: a snapshot, so edits to the checkout during a run do not mix versions
# =============================================================================================

CODE_PATHS = ("pipelines", "sql", ".dlt/config.toml")


def snapshot_code(target: Path, revision: str) -> str:
    """Copy the job's code and settings (`CODE_PATHS`) into `target`, from the working tree
    (`revision` "worktree") or a git revision (`git archive`; the checkout is only read).
    The command line runs from there (`python -m` imports the folder it starts in first);
    returns a description of what was copied."""
    target.mkdir(parents=True, exist_ok=True)
    if revision == "worktree":
        for relative in CODE_PATHS:
            source, copy = ROOT / relative, target / relative
            if source.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(source, copy, ignore=ignore, dirs_exist_ok=True)
            elif source.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy)
        described = f"working tree of {git('rev-parse', '--short', 'HEAD')}"
        changed = git("status", "--porcelain", "--", *CODE_PATHS).splitlines()
        if changed:
            described += f" with {len(changed)} changed files in {', '.join(CODE_PATHS)}"
    else:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", revision, "--", *CODE_PATHS],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
        described = f"{revision} ({git('rev-parse', '--short', revision)})"
    return f"{described}; fingerprint {fingerprint(target)}"


def git(*arguments: str) -> str:
    done = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def fingerprint(folder: Path) -> str:
    """A short hash of every file's path and content: two runs with one fingerprint ran one
    version of the code."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# =============================================================================================
# the emulated portal and one warehouse case
# =============================================================================================


class Portal:
    """The emulator in this process (the measured command line is another process)."""

    def __init__(self, pumps: int, users: int, latency_ms: float, start: dt.datetime) -> None:
        from tests.portal_emulator import Fleet, PortalEmulator

        self.fleet = Fleet.generate(pumps=pumps, users=users, seed=SEED, start=start)
        self.emulator = PortalEmulator(self.fleet, latency=latency_ms / 1000, keep_records=False)
        self.url = self.emulator.start()

    def environment(self) -> dict[str, str]:
        return {
            "SOURCES__PUMP_PORTAL__BASE_URL": self.url,
            "SOURCES__PUMP_PORTAL__API_KEY": self.emulator.keys.full,
            "SOURCES__PUMP_PORTAL__BACKOFF_SECONDS": "0.01",
        }

    def cycle(self, seconds: float, fraction: float) -> int:
        """The clock moves on and `fraction` of the pumps report; returns how many did."""
        self.emulator.advance(seconds)
        ids = self.fleet.pump_ids()
        chosen = random.Random(SEED).sample(ids, round(len(ids) * fraction))
        self.emulator.report(chosen)
        return len(chosen)

    def stop(self) -> None:
        self.emulator.stop()


@dataclass(frozen=True)
class Case:
    label: str
    destination: str  # duckdb | postgres
    shape: Shape
    directory: Path
    database_url: str | None = None  # Postgres: the case's own database

    def environment(self) -> dict[str, str]:
        env = {
            "PIPELINES__PUMP_PORTAL__DESTINATION_TYPE": self.destination,
            "PIPELINES__PUMP_PORTAL__PIPELINES_DIR": str(self.directory / "pipelines"),
            "DESTINATION__DUCKDB__CREDENTIALS": str(self.working_file),
            "SYNC__PUBLISH_TO": str(self.directory / "pump_portal_warehouse.duckdb"),
        }
        if self.database_url:
            env["DESTINATION__POSTGRES__CREDENTIALS"] = self.database_url
        return env

    @property
    def working_file(self) -> Path:
        return self.directory / "pump_portal_sync.duckdb"


@dataclass
class CaseResult:
    case: Case
    first_sync: Measurement
    generation: Generation
    warm_up: Measurement
    cycle: Measurement
    models: Measurement
    reported: int
    working_file_mb: float | None
    model_rows: dict[str, int]


@dataclass(frozen=True)
class Options:
    latency_ms: float
    fraction: float
    advance_s: float
    memory_limit: str
    warm_up_memory: str
    timeout_s: float
    code: Path  # the snapshot of the job's code the command line runs from


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_PREFIXES)}


def run_case(case: Case, options: Options) -> CaseResult:
    case.directory.mkdir(parents=True, exist_ok=True)
    log = case.directory / "cli.log"
    shape = case.shape
    say(
        f"{case.label}: {shape.pumps:,} pumps, {shape.readings:,} readings and "
        f"{shape.summaries:,} pump summaries to generate"
    )
    # The clock starts one cycle back, so the measured cycle's reports land near the wall clock.
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=options.advance_s)
    portal = Portal(shape.pumps, shape.users, options.latency_ms, start)
    try:
        env = {**clean_environment(), **portal.environment(), **case.environment()}

        def step(
            name: str, command: Sequence[str], extra: dict[str, str] | None = None
        ) -> Measurement:
            measured = measure(
                command, {**env, **(extra or {})}, log, options.timeout_s, options.code
            )
            if not measured.ok:
                raise RuntimeError(
                    f"{case.label}: `{' '.join(command)}` exited {measured.exit_code}; "
                    f"log {log}:\n{measured.log}"
                )
            say(
                f"  {name}: {measured.wall_s:.1f} s, peak RSS {measured.peak_rss_mb:.0f} MB "
                f"(load average {measured.load[0]:.1f} -> {measured.load[1]:.1f})"
            )
            return measured

        first = step("first sync (run --no-models)", ["run", "--no-models"])
        say("  generating history in the raw tables")
        generation = generate(case, options)
        say(
            f"  generated in {generation.seconds:.0f} s: "
            + ", ".join(f"{t} {n:,}" for t, n in generation.rows.items())
        )
        say("  " + ", ".join(f"{t} {s:.1f} s" for t, s in generation.per_table_s.items()))
        # A first (full) build reads all history at once: it needs more than the run's default
        # DuckDB memory limit, which bounds the scheduled cycles measured below.
        warm_up = step(
            f"warm-up build over the history (models, DuckDB memory {options.warm_up_memory})",
            ["models"],
            {"SYNC__DUCKDB_MEMORY_LIMIT": options.warm_up_memory},
        )
        rows = model_rows(case)
        if rows:
            say("  models: " + ", ".join(f"{t} {n:,} rows" for t, n in rows.items()))
        # The reader copy is two files updated in turn: the first sync wrote one before the
        # history existed, the warm-up the other. The first cycle brings the older one up to the
        # history once (a full catch-up); the second is every later cycle: the one measured.
        reported = portal.cycle(options.advance_s, options.fraction)
        say(f"  clock +{options.advance_s / 60:.0f} min, {reported} pumps reported")
        step("catch-up cycle (run: its publish brings the older reader copy up)", ["run"])
        reported = portal.cycle(options.advance_s, options.fraction)
        say(f"  clock +{options.advance_s / 60:.0f} min, {reported} pumps reported")
        cycle = step("cycle (run: sync, models, publish on DuckDB)", ["run"])
        say(f"    {run_summary(cycle)}")
        models = step(
            "model build alone (models, publish off)", ["models"], {"SYNC__PUBLISH_TO": ""}
        )
        size = case.working_file.stat().st_size / 2**20 if case.working_file.exists() else None
        return CaseResult(case, first, generation, warm_up, cycle, models, reported, size, rows)
    finally:
        portal.stop()


def generate(case: Case, options: Options) -> Generation:
    if case.destination == "duckdb":
        spill = case.directory / "generate.tmp"
        try:
            return generate_duckdb(case.working_file, case.shape, options.memory_limit, spill)
        finally:
            shutil.rmtree(spill, ignore_errors=True)
    assert case.database_url is not None
    return generate_postgres(case.database_url, case.shape)


MODEL_CHECKS = ("fleet_history", "controller_daily")


def model_rows(case: Case) -> dict[str, int]:
    """Row counts of two marts after the warm-up: the history reached the models (n/a is fine
    if a future model layout names them otherwise)."""
    counts: dict[str, int] = {}
    with contextlib.suppress(Exception):
        if case.destination == "duckdb":
            import duckdb

            with duckdb.connect(str(case.working_file), read_only=True) as connection:
                for table in MODEL_CHECKS:
                    with contextlib.suppress(duckdb.Error):
                        row = connection.execute(f"select count(*) from {MODELS}.{table}")
                        counts[table] = int(row.fetchone()[0])
        elif case.database_url:
            import psycopg2

            with contextlib.closing(psycopg2.connect(case.database_url)) as connection:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    for table in MODEL_CHECKS:
                        with contextlib.suppress(psycopg2.Error):
                            cursor.execute(f"select count(*) from {MODELS}.{table}")
                            counts[table] = int(cursor.fetchone()[0])
    return counts


# =============================================================================================
# Postgres: a database per case, created and dropped here
# =============================================================================================


@contextlib.contextmanager
def postgres_database(base_url: str, name: str) -> Iterator[str]:
    """A fresh database `name` on the server of `base_url`; yields its URL, drops it after."""
    import psycopg2

    def admin(sql: str) -> None:
        with contextlib.closing(psycopg2.connect(base_url)) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)

    admin(f"drop database if exists {name} with (force)")
    admin(f"create database {name}")
    try:
        yield urllib.parse.urlsplit(base_url)._replace(path=f"/{name}").geturl()
    finally:
        admin(f"drop database if exists {name} with (force)")


# =============================================================================================
# the report
# =============================================================================================


def ratio(history: float, one_day: float) -> float:
    return history / one_day if one_day > 0 else float("inf")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def mb(value: float) -> str:
    return f"{value:,.0f} MB"


def table_rows(results: Sequence[CaseResult]) -> list[list[str]]:
    rows = []
    for r in results:
        rows.append(
            [
                r.case.label,
                f"{r.case.shape.readings:,}",
                f"{r.generation.seconds:.0f} s",
                f"{r.warm_up.wall_s:.1f} s",
                f"{r.cycle.wall_s:.1f} s",
                mb(r.cycle.peak_rss_mb),
                f"{r.models.wall_s:.1f} s",
                mb(r.models.peak_rss_mb),
                f"{r.working_file_mb:,.0f} MB" if r.working_file_mb is not None else "—",
            ]
        )
    return rows


HEADER = [
    "case",
    "readings",
    "generate",
    "warm-up build",
    "cycle wall",
    "cycle peak RSS",
    "models wall",
    "models peak RSS",
    "working file",
]


def pairs(results: Sequence[CaseResult]) -> list[tuple[CaseResult, CaseResult]]:
    """(one day, history) per destination, in the order measured."""
    found = []
    for destination in ("duckdb", "postgres"):
        cases = [r for r in results if r.case.destination == destination]
        if len(cases) == 2:
            found.append((cases[0], cases[1]))
    return found


def ratio_lines(results: Sequence[CaseResult]) -> list[str]:
    lines = []
    for day, history in pairs(results):
        name = "DuckDB" if day.case.destination == "duckdb" else "Postgres"
        lines.append(
            f"{name} {history.case.shape.readings / 1e6:.1f} M / one day: "
            f"cycle {ratio(history.cycle.wall_s, day.cycle.wall_s):.2f}x wall, "
            f"{ratio(history.cycle.peak_rss_mb, day.cycle.peak_rss_mb):.2f}x peak RSS; "
            f"models {ratio(history.models.wall_s, day.models.wall_s):.2f}x wall, "
            f"{ratio(history.models.peak_rss_mb, day.models.peak_rss_mb):.2f}x peak RSS"
        )
    return lines


def target_lines(results: Sequence[CaseResult]) -> list[str]:
    lines = []
    for day, history in pairs(results):
        size = f"{history.case.shape.readings / 1e6:.1f} M"
        if day.case.destination == "duckdb":
            cycle = ratio(history.cycle.wall_s, day.cycle.wall_s)
            rss = history.cycle.peak_rss_mb
            lines += [
                f"DuckDB cycle at {size} within {TARGET_RATIO}x of the one-day cycle: "
                f"{cycle:.2f}x ({history.cycle.wall_s:.1f} s vs {day.cycle.wall_s:.1f} s) "
                f"-> {verdict(cycle <= TARGET_RATIO)}",
                f"DuckDB cycle at {size} under {TARGET_RSS_MB:.0f} MB peak RSS: {mb(rss)} "
                f"-> {verdict(rss < TARGET_RSS_MB)}",
            ]
        else:
            build = ratio(history.models.wall_s, day.models.wall_s)
            lines.append(
                f"Postgres model step at {size} within {TARGET_RATIO}x of its one-day time: "
                f"{build:.2f}x ({history.models.wall_s:.1f} s vs {day.models.wall_s:.1f} s) "
                f"-> {verdict(build <= TARGET_RATIO)}"
            )
    return lines


NOTES = (
    "peak RSS: ru_maxrss of the largest process of the command line (the Postgres server's "
    "memory is not in it)",
    "cycle: `run` after 2% of the pumps reported (sync, models, and on DuckDB the publish); "
    "models: `models` alone, publishing off; warm-up: the first `models` over the history",
    "wall times include whatever else the host ran meanwhile: the progress lines give the 1-minute "
    "load average before and after each step",
)


def render_console(results: Sequence[CaseResult], code: str) -> str:
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    notes = [*NOTES, f"code: {code}"]
    return "\n".join([*text, "", *ratio_lines(results), "", *target_lines(results), "", *notes])


def load(measurement: Measurement) -> str:
    before, after = measurement.load
    return f"{before:.1f}-{after:.1f}"


def render_markdown(results: Sequence[CaseResult], command: str, code: str) -> str:
    def md(row: Sequence[str]) -> str:
        return "| " + " | ".join(row) + " |"

    lines = [
        "# History benchmark (issue #11, item 4)",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node() or 'this host'}, "
        f"{os.cpu_count()} cores. Generated by bench/history.py; see its docstring for the method.",
        f"Code measured: {code}.",
        "",
        md(HEADER),
        md(["---"] * len(HEADER)),
        *(md(row) for row in table_rows(results)),
        "",
        "Ratios (history / one day, same run):",
        "",
        *(f"- {line}" for line in ratio_lines(results)),
        "",
        "Targets:",
        "",
        *(f"- {line}" for line in target_lines(results)),
        "",
        *(f"- {note}" for note in NOTES),
        "",
        "Phases:",
        "",
    ]
    for r in results:
        per_table = ", ".join(f"{t} {s:.1f} s" for t, s in r.generation.per_table_s.items())
        lines += [
            f"- {r.case.label}: first sync {r.first_sync.wall_s:.1f} s; generation "
            f"{r.generation.seconds:.0f} s ({per_table}); warm-up build {r.warm_up.wall_s:.1f} s "
            f"({mb(r.warm_up.peak_rss_mb)}); cycle after {r.reported} reports: "
            f"{run_summary(r.cycle)}; host load average during cycle / models: "
            f"{load(r.cycle)} / {load(r.models)}",
        ]
    return "\n".join(lines) + "\n"


# =============================================================================================
# the command line
# =============================================================================================


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.history",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="subcommand", metavar="")
    wrapper = sub.add_parser("measure", help="(internal) run one command, print its figures")
    wrapper.add_argument("--log", required=True)
    wrapper.add_argument("--timeout", type=float, required=True)
    wrapper.add_argument("--cwd", default=None, help="the command's working folder")
    wrapper.add_argument("argv", nargs=argparse.REMAINDER, help="-- the command")
    parser.add_argument("--quick", action="store_true", help="--pumps 200 --days 7: a try-out")
    parser.add_argument("--pumps", type=int, default=None, help="(None: 2,000)")
    parser.add_argument(
        "--users", type=int, default=None, help="delegated users (None: pumps / 20)"
    )
    parser.add_argument("--days", type=int, default=None, help="history length (None: 365)")
    parser.add_argument("--readings-per-day", type=int, default=96)
    parser.add_argument(
        "--summaries-per-day",
        type=int,
        default=None,
        help="pump summaries per pump per day in the history (None: one per reading, as the "
        "sync fetches a summary for every pump that reported)",
    )
    parser.add_argument(
        "--postgres-readings",
        type=int,
        default=10_000_000,
        help="Postgres history size (at most --days days)",
    )
    parser.add_argument(
        "--code",
        default="worktree",
        help="the job's code to measure: the working tree, or a git revision such as HEAD "
        "(copied into the workdir either way, so edits during the run do not mix versions)",
    )
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-duckdb", action="store_true")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="server to use")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the warehouses go (None: a temporary folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the warehouses after the run")
    parser.add_argument("--write-results", type=Path, default=None, metavar="FILE")
    parser.add_argument("--report-fraction", type=float, default=0.02)
    parser.add_argument("--advance-minutes", type=float, default=15.0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="emulator latency")
    parser.add_argument(
        "--memory-limit", default="1GB", help="DuckDB memory limit while generating (spills)"
    )
    parser.add_argument(
        "--warm-up-memory-limit",
        default="4GB",
        help="SYNC__DUCKDB_MEMORY_LIMIT for the first (full) build over the history",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per command-line run, s")
    args = parser.parse_args(argv)
    if args.pumps is None:
        args.pumps = 200 if args.quick else 2_000
    if args.days is None:
        args.days = 7 if args.quick else 365
    return args


def planned_cases(args: argparse.Namespace) -> list[tuple[str, str, Shape]]:
    """(label, destination, shape) in the order they run."""
    users = args.users if args.users is not None else max(2, args.pumps // 20)
    per_day = args.readings_per_day
    summaries = args.summaries_per_day or per_day

    def shape(days: int) -> Shape:
        return Shape(args.pumps, users, days, per_day, summaries)

    pg_days = max(1, min(args.days, round(args.postgres_readings / (args.pumps * per_day))))
    cases = []
    if not args.skip_duckdb:
        cases += [("DuckDB, 1 day", "duckdb", shape(1))]
        cases += [(f"DuckDB, {args.days} days", "duckdb", shape(args.days))]
    if not args.skip_postgres:
        cases += [("Postgres, 1 day", "postgres", shape(1))]
        cases += [(f"Postgres, {pg_days} days", "postgres", shape(pg_days))]
    return cases


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def run_all(
    args: argparse.Namespace, workdir: Path, options: Options
) -> tuple[list[CaseResult], list[str]]:
    """Every planned case; a case that fails is reported and the others still run."""
    results, failures = [], []
    for label, destination, shape in planned_cases(args):
        directory = workdir / slug(label)
        try:
            if destination == "duckdb":
                results.append(run_case(Case(label, destination, shape, directory), options))
            else:
                name = f"bench_history_{os.getpid()}_{slug(label)}"
                with postgres_database(args.postgres_url, name) as url:
                    case = Case(label, destination, shape, directory, database_url=url)
                    results.append(run_case(case, options))
        except Exception as error:  # noqa: BLE001 - one failed case must not hide the others
            failures.append(f"{label}: {error}")
            say(f"{label} FAILED: {error}")
        finally:
            if not args.keep:
                shutil.rmtree(directory, ignore_errors=True)
    return results, failures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.subcommand == "measure":
        return measure_main(args)
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench-history-")) if temporary else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        code = workdir / "code"
        described = snapshot_code(code, args.code)
        say(f"working in {workdir}; code: {described}")
        options = Options(
            latency_ms=args.latency_ms,
            fraction=args.report_fraction,
            advance_s=args.advance_minutes * 60,
            memory_limit=args.memory_limit,
            warm_up_memory=args.warm_up_memory_limit,
            timeout_s=args.timeout,
            code=code,
        )
        results, failures = run_all(args, workdir, options)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"done in {time.monotonic() - started:.0f} s\n")
    print(render_console(results, described))
    for failure in failures:
        print(f"FAILED {failure}")
    if args.write_results is not None:
        command = "python -m bench.history " + " ".join(sys.argv[1:] if argv is None else argv)
        args.write_results.write_text(render_markdown(results, command.strip(), described))
        say(f"wrote {args.write_results}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
