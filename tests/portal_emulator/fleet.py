"""The simulated fleet: listing order, visibility, mutation and cached aggregates.

One ``RLock`` (``Fleet.lock``) guards everything; the HTTP handlers and the test-facing mutators
take it. Aggregates (visible order, statistics, per-user views) are cached and invalidated by a
version counter, so a request against a 20,000-pump fleet costs O(page), not O(fleet), unless the
fleet changed since the previous request.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from . import render
from .clock import DEFAULT_START, SimClock, ensure_utc
from .generate import generate, id_width, pump_id_for, voltage_for
from .model import Pump, User
from .pump_summary import pump_summary
from .response import JsonFragments
from .rowcache import RowCache


class Fleet:
    """Pumps and delegated users of the integration, in the portal's listing order.

    A pump is *visible* (listed, counted, readable) when it was not removed and at least one
    delegated user can see it. ``pumps`` also holds removed pumps, so tests can inspect them.
    ``clock`` is the simulated clock (starts at ``start``); the emulator serving the fleet uses it.
    """

    def __init__(self, *, seed: int = 0, start: datetime = DEFAULT_START) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.start = ensure_utc(start)
        self.clock = SimClock(self.start)  # simulated time is part of the simulated world
        self.pumps: dict[str, Pump] = {}
        self.users: dict[int, User] = {}
        self.forbidden_detail_pumps: set[str] = set()
        self.missing_detail_pumps: set[str] = set()
        self.inactive_users: set[int] = set()
        self._order: list[str] = []  # every pump ever added, removed ones included (restore_pump)
        self._removed: set[str] = set()
        self._global_extra: dict[str, Any] = {}
        self._next_number = 1
        self._width = 3
        self._version = 0  # bumped by any change; guards the statistics caches
        self._order_version = 0  # bumped by changes to order/visibility/membership
        self._holders: dict[str, dict[int, bool]] = {}  # reverse of User.pumps, kept in step
        self._visible: list[str] | None = None  # None: rebuilt on the next read
        self._user_visible: dict[int, list[str]] | None = None
        self._cache_stamp: tuple[int, int, datetime] | None = None
        self._cache: dict[Any, Any] = {}
        self._rows = RowCache()

    # ----------------------------------------------------------------- construction
    @classmethod
    def generate(
        cls, pumps: int = 300, users: int = 12, seed: int = 7, start: datetime | None = None
    ) -> Fleet:
        """A deterministic fleet for ``seed`` (see ``generate.py`` for the proportions)."""
        begin = ensure_utc(start) if start is not None else DEFAULT_START
        made = generate(pumps, users, seed, begin)
        fleet = cls(seed=seed, start=begin)
        fleet.pumps = made.pumps
        fleet.users = made.users
        fleet._order = made.order
        fleet._rebuild_holders()
        fleet._next_number = pumps + 1
        fleet._width = id_width(pumps)
        # By default the never-seen pumps have no persisted metadata/summary (404 not_found).
        fleet.missing_detail_pumps = set(made.never_seen)
        return fleet

    # ----------------------------------------------------------------- caches
    def invalidate(self) -> None:
        """Call after mutating ``pumps``/``users`` dataclasses directly instead of via methods."""
        with self.lock:
            self._rows.clear()
            self._rebuild_holders()
            self._visible = None
            self._touch(order=True)

    def _touch(self, order: bool = False, pump_id: str | None = None) -> None:
        self._version += 1
        if order:
            self._order_version += 1
            self._user_visible = None
        if pump_id is not None:
            self._rows.bump(pump_id)

    def _rebuild_holders(self) -> None:
        holders: dict[str, dict[int, bool]] = {}
        for uid, user in self.users.items():
            for pump_id, is_owner in user.pumps.items():
                holders.setdefault(pump_id, {})[uid] = is_owner
        self._holders = holders

    def _visible_ids(self) -> list[str]:
        """The listing order. add_pump/remove_pump patch it in place (a C-speed list insert or
        remove); other membership changes rebuild it on the next read."""
        if self._visible is None:
            holders, removed = self._holders, self._removed
            self._visible = [pid for pid in self._order if holders.get(pid) and pid not in removed]
        return self._visible

    def _user_lists(self) -> dict[int, list[str]]:
        """Every user's visible pumps in listing order, built in one pass (no sorting)."""
        if self._user_visible is None:
            per_user: dict[int, list[str]] = {uid: [] for uid in self.users}
            holders = self._holders
            for pump_id in self._visible_ids():
                for uid in holders[pump_id]:
                    per_user[uid].append(pump_id)
            self._user_visible = per_user
        return self._user_visible

    def _is_owned(self, pump_id: str) -> bool:
        return any(self._holders.get(pump_id, {}).values())

    def _cached(self, now: datetime, key: Any, compute: Callable[[], Any]) -> Any:
        stamp = (self._version, self._order_version, now)
        if stamp != self._cache_stamp:
            self._cache = {}
            self._cache_stamp = stamp
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # ----------------------------------------------------------------- ground truth
    def pump_ids(self) -> list[str]:
        """Visible pump ids in listing order."""
        with self.lock:
            return list(self._visible_ids())

    def user_ids(self) -> list[int]:
        """Delegated user ids in the order /v1/delegated-users lists them."""
        with self.lock:
            return list(self.users)

    def user_pump_ids(self, user_id: int) -> list[str]:
        """That user's visible pump ids, in listing order."""
        with self.lock:
            return list(self._user_lists()[user_id])

    def is_visible(self, pump_id: str) -> bool:
        with self.lock:
            return (
                pump_id in self.pumps
                and bool(self._holders.get(pump_id))
                and pump_id not in self._removed
            )

    def statistics(self, now: datetime, pump_ids: Iterable[str] | None = None) -> dict[str, Any]:
        """The API statistics object, fleet-wide (visible pumps) or for the given pump ids."""
        with self.lock:
            if pump_ids is None:
                return dict(self.fleet_statistics(now))
            return render.statistics((self.pumps[pid] for pid in pump_ids), now)

    def listing_row(self, pump_id: str, now: datetime) -> dict[str, Any]:
        """The GET /v1/pumps row: is_owner is 1 when any delegated user owns the pump."""
        with self.lock:
            return render.listing_row(self.pumps[pump_id], self._is_owned(pump_id), now)

    def user_row(self, user_id: int, pump_id: str, now: datetime) -> dict[str, Any]:
        """The GET /v1/users/:userId/summary row: is_owner is that user's ownership."""
        with self.lock:
            return render.listing_row(self.pumps[pump_id], self.users[user_id].pumps[pump_id], now)

    def metadata(self, pump_id: str) -> dict[str, Any]:
        with self.lock:
            pump = self.pumps[pump_id]
            return render.metadata(pump, {**self._global_extra, **pump.metadata_extra})

    def summary(self, pump_id: str, now: datetime) -> dict[str, Any]:
        with self.lock:
            return pump_summary(self.pumps[pump_id], now, self.seed)

    # ----------------------------------------------------------------- views used by the API
    def fleet_statistics(self, now: datetime) -> dict[str, Any]:
        """Cached fleet-wide statistics; the returned dict is shared, do not mutate it."""
        with self.lock:
            ids = self._visible_ids()
            return self._cached(
                now, "fleet", lambda: render.statistics(map(self.pumps.__getitem__, ids), now)
            )

    def user_statistics(self, user_id: int, now: datetime) -> dict[str, Any]:
        """Cached statistics of one user's visible pumps; shared, do not mutate."""
        with self.lock:
            ids = self._user_lists()[user_id]
            return self._cached(
                now,
                ("user", user_id),
                lambda: render.statistics(map(self.pumps.__getitem__, ids), now),
            )

    def encoded_page(
        self, now: datetime, offset: int, limit: int, user_id: int | None = None
    ) -> tuple[JsonFragments, int]:
        """JSON-encoded rows of one page (slice first, render only the slice; rows are cached)
        and the total item count. ``user_id``: that user's view, with that user's is_owner."""
        with self.lock:
            encode = self._rows.encoded_row
            pumps = self.pumps
            if user_id is None:
                ids = self._visible_ids()
                owned = self._is_owned
                chosen = ids[offset : offset + limit]
                rows = [encode(pumps[pid], owned(pid), now) for pid in chosen]
            else:
                ids = self._user_lists()[user_id]
                mine = self.users[user_id].pumps
                chosen = ids[offset : offset + limit]
                rows = [encode(pumps[pid], mine[pid], now) for pid in chosen]
            return JsonFragments(rows), len(ids)

    def delegated_user_rows(self, now: datetime) -> list[dict[str, Any]]:
        """Rows of GET /v1/delegated-users (cached; shared, do not mutate)."""
        with self.lock:

            def build() -> list[dict[str, Any]]:
                return [
                    {"user_id": uid, "name": user.name, **self.user_statistics(uid, now)}
                    for uid, user in self.users.items()
                ]

            return self._cached(now, "delegated", build)

    # ----------------------------------------------------------------- mutation
    def add_user(self, user_id: int | None = None, name: str | None = None) -> int:
        """A new delegated user with no pumps (extra to the brief; handy for listing changes)."""
        with self.lock:
            uid = user_id if user_id is not None else max(self.users, default=100) + 1
            if uid in self.users:
                raise ValueError(f"user {uid} already exists")
            self.users[uid] = User(user_id=uid, name=name)
            self._touch(order=True)
            return uid

    def add_pump(
        self,
        pump_id: str | None = None,
        user_ids: Iterable[int] = (101,),
        owner_user_id: int | None = None,
        position: int | None = 0,
    ) -> str:
        """Insert a freshly seen pump before the visible pump at ``position`` (clamped to the
        listing; None: append). ``owner_user_id`` defaults to the first of ``user_ids``; an id not
        among them means the pump is owned outside the integration (is_owner 0 for everyone)."""
        with self.lock:
            users = list(user_ids)
            for uid in users:
                if uid not in self.users:
                    raise KeyError(f"unknown delegated user {uid}")
            if pump_id is None:
                while pump_id_for(self._next_number, self._width) in self.pumps:
                    self._next_number += 1
                pump_id = pump_id_for(self._next_number, self._width)
                self._next_number += 1
            if pump_id in self.pumps:
                raise ValueError(f"pump {pump_id} already exists")
            owner = owner_user_id if owner_user_id is not None else (users[0] if users else None)
            self.pumps[pump_id] = self._new_pump(pump_id)
            visible = self._visible_ids()
            index = len(visible) if position is None else min(max(0, position), len(visible))
            if index == len(visible):
                self._order.append(pump_id)
            else:
                self._order.insert(self._order.index(visible[index]), pump_id)
            for uid in users:
                self.users[uid].pumps[pump_id] = uid == owner
                self._holders.setdefault(pump_id, {})[uid] = uid == owner
            if users:
                visible.insert(index, pump_id)
            self._touch(order=True, pump_id=pump_id)
            return pump_id

    def _new_pump(self, pump_id: str) -> Pump:
        """A new pump that reported just now (active, with a battery and an installation)."""
        rng = random.Random(f"{self.seed}:new:{pump_id}")
        now = self.clock.now
        soc = rng.randint(40, 100)
        return Pump(
            pump_id=pump_id,
            custom_name=f"New pump {pump_id}",
            last_seen=now,
            last_heartbeat=now,
            installation={
                "installation_name": "Main",
                "location_name": "Site N",
                "lat": round(rng.uniform(50.8, 53.5), 4),
                "lon": round(rng.uniform(3.4, 7.2), 4),
            },
            status="idle",
            total_water_delivered=0.0,
            battery={"voltage": voltage_for(soc), "soc": soc, "current": 0.0},
            communication_method="MQTT",
            current_pressure=round(rng.uniform(1.5, 5.0), 1),
            total_sessions=0,
            uptime=0,
            profile="IRRIGATION",
        )

    def _require(self, pump_id: str) -> None:
        if pump_id not in self.pumps:
            raise KeyError(f"unknown pump {pump_id}")

    def remove_pump(self, pump_id: str) -> None:
        """Gone from every listing, statistic and user view; details answer 403 forbidden."""
        with self.lock:
            self._require(pump_id)
            if pump_id not in self._removed and self._visible is not None:
                with contextlib.suppress(ValueError):  # not listed anyway (no delegated user)
                    self._visible.remove(pump_id)
            self._removed.add(pump_id)
            self._touch(order=True)

    def restore_pump(self, pump_id: str) -> None:
        """Visible again at its old position in the listing."""
        with self.lock:
            self._require(pump_id)
            self._removed.discard(pump_id)
            self._visible = None
            self._touch(order=True)

    def set_last_seen(self, pump_id: str, moment: datetime | None) -> None:
        """Sets last_seen and last_heartbeat together (None: both keys omitted, "never seen")."""
        with self.lock:
            pump = self.pumps[pump_id]
            pump.last_seen = None if moment is None else ensure_utc(moment)
            pump.last_heartbeat = pump.last_seen
            self._touch(pump_id=pump_id)

    def set_counter(self, pump_id: str, total_water: float) -> None:
        with self.lock:
            self.pumps[pump_id].total_water_delivered = total_water
            self._touch(pump_id=pump_id)

    def reboot(self, pump_id: str) -> None:
        """Uptime drops to 0 now and grows again from this moment on later reports."""
        with self.lock:
            pump = self.pumps[pump_id]
            pump.uptime = 0
            pump.rebooted_at = self.clock.now
            self._touch(pump_id=pump_id)

    def move_pump(
        self, pump_id: str, from_user: int | None, to_user: int | None, is_owner: bool = True
    ) -> None:
        """Moves visibility between delegated users. ``from_user=None`` only adds ``to_user``
        (sharing); ``to_user=None`` only removes ``from_user`` (if no user is left, the pump leaves
        the integration and is invisible everywhere)."""
        with self.lock:
            self._require(pump_id)
            if from_user is not None:
                if pump_id not in self.users[from_user].pumps:
                    raise ValueError(f"user {from_user} does not see {pump_id}")
                del self.users[from_user].pumps[pump_id]
                del self._holders[pump_id][from_user]
            if to_user is not None:
                self.users[to_user].pumps[pump_id] = is_owner
                self._holders.setdefault(pump_id, {})[to_user] = is_owner
            self._visible = None
            self._touch(order=True)

    def set_metadata_extra(self, pump_id: str | None = None, **fields: Any) -> None:
        """Extra metadata fields (None: every pump); later calls add to / overwrite earlier ones."""
        with self.lock:
            if pump_id is None:
                self._global_extra.update(fields)
            else:
                self.pumps[pump_id].metadata_extra.update(fields)
            self._touch()

    def report(
        self, pump_ids: Iterable[str], now: datetime | None = None, water: float | None = None
    ) -> None:
        """The pumps report at ``now`` (default: the simulated clock); see
        ``PortalEmulator.report``. Deterministic from the seed, pump id and session count."""
        with self.lock:
            moment = self.clock.now if now is None else ensure_utc(now)
            for pump_id in pump_ids:
                self._report_one(self.pumps[pump_id], moment, water)
                self._touch(pump_id=pump_id)

    def _report_one(self, pump: Pump, now: datetime, water: float | None) -> None:
        rng = random.Random(f"{self.seed}:report:{pump.pump_id}:{pump.total_sessions}")
        amount = round(rng.uniform(5.0, 50.0), 1) if water is None else water
        if pump.last_seen is None:
            # First report of a never-seen pump: from now on it has persisted metadata/summary.
            self.missing_detail_pumps.discard(pump.pump_id)
        since = pump.rebooted_at or pump.last_seen
        if since is not None and now > since:
            pump.uptime += int((now - since) / timedelta(seconds=1))
        pump.rebooted_at = None
        pump.last_seen = pump.last_heartbeat = now
        pump.total_water_delivered = round(pump.total_water_delivered + amount, 1)
        pump.total_sessions += 1
        pump.status = "running" if amount > 0 else "idle"
        pump.current_pressure = round(rng.uniform(1.5, 6.5), 1)
        if pump.battery is not None:
            soc = pump.battery["soc"]
            step = rng.choice((-3, -2, -1, 1, 2, 3))
            if isinstance(soc, int):
                new_soc: int | float = min(100, max(5, soc + step))
            else:
                new_soc = round(min(100.0, max(5.0, soc + step)), 1)
            pump.battery = {
                "voltage": voltage_for(new_soc),
                "soc": new_soc,
                "current": round(rng.uniform(-5.0, 3.0), 1),
            }
        if pump.today_date != now.date():
            pump.today_date, pump.today_water, pump.today_snapshots = now.date(), 0.0, 0
        pump.today_water = round(pump.today_water + amount, 1)
        pump.today_snapshots += 1
