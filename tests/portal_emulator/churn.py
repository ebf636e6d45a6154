"""Listing churn: the fleet changes while a listing is being paged.

The reference pages by ``page``/``limit`` (offsets), so a pump registered at the front of the
newest-first listing while a client pages it pushes every later row one place back (a row at the
end of a page read next moves onto the page after it, and is read twice); a removal pulls later
rows one place forward (the first row of the next page slides onto a page already read, and is
missed). ``Churn`` makes such changes happen at exact moments: right after every ``every``-th
answered 200 of its listing, still under the fleet lock that answer was built under, so no other
request sees the fleet in between, and the next request of any client sees the change.

Each change removes ``removals`` pumps, then inserts ``inserts`` new pumps at the front
(``Fleet.add_pump(position=0)``: active, just reported). Which pumps are removed (choice):

- ``"served"``: the first rows of the page just answered: rows a walk has already been served,
  so the rows behind them slide onto served pages;
- ``"ahead"``: the first rows of the page after it: a page a sequential walk has not yet read;
- ``"last"``: the last rows of the listing.

On ``/v1/pumps`` a removal is ``Fleet.remove_pump``; on ``/v1/users/:userId/summary`` the
requested user loses the pump (``Fleet.move_pump(pump, user, None)``: gone from the integration
only if no other user sees it), and new pumps go to that user. ``events`` records every change as
ground truth for tests: pumps present before the run minus ``removed`` were present throughout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .fleet import Fleet
from .pagination import parse_page
from .routes import PUMPS, USER_SUMMARY, Route

RemoveFrom = Literal["served", "ahead", "last"]
REMOVE_FROM: tuple[str, ...] = ("served", "ahead", "last")


@dataclass(frozen=True)
class ChurnEvent:
    request: int  # the n-th answered listing request (1-based) it followed
    kind: Literal["insert", "remove"]
    pump_id: str
    user_id: int | None  # the user whose listing it was (user summaries), else None


@dataclass
class Churn:
    """Changes the fleet after every ``every``-th answered request of ``template`` (``times``
    changes at most; None: until ``PortalEmulator.clear_churn``). Not locked itself: the
    emulator calls it under the fleet lock."""

    template: str = PUMPS
    every: int = 1
    inserts: int = 1
    removals: int = 0
    remove: RemoveFrom = "served"
    times: int | None = None
    requests: int = 0  # answered 200s of `template` so far
    changes: int = 0
    events: list[ChurnEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.template not in (PUMPS, USER_SUMMARY):
            raise ValueError(f"template must be {PUMPS!r} or {USER_SUMMARY!r}")
        if self.every < 1:
            raise ValueError("every must be >= 1")
        if self.inserts < 0 or self.removals < 0 or self.inserts + self.removals == 0:
            raise ValueError("inserts and removals must be >= 0, and not both 0")
        if self.remove not in REMOVE_FROM:
            raise ValueError(f"remove must be one of {REMOVE_FROM}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for unlimited)")

    @property
    def inserted(self) -> list[str]:
        return [e.pump_id for e in self.events if e.kind == "insert"]

    @property
    def removed(self) -> list[str]:
        return [e.pump_id for e in self.events if e.kind == "remove"]

    def after(
        self, fleet: Fleet, route: Route, query: Mapping[str, Sequence[str]], max_limit: int
    ) -> None:
        """A 200 for ``route`` was just built (under ``fleet.lock``): change the fleet if due."""
        if route.template != self.template:
            return
        if self.times is not None and self.changes >= self.times:
            return
        self.requests += 1
        if self.requests % self.every:
            return
        page = parse_page(query, max_limit)
        user_id = int(route.params["userId"]) if self.template == USER_SUMMARY else None
        listed = fleet.pump_ids() if user_id is None else fleet.user_pump_ids(user_id)
        if self.remove == "served":
            start = page.offset
        elif self.remove == "ahead":
            start = page.offset + page.limit
        else:
            start = max(0, len(listed) - self.removals)
        for pump_id in listed[start : start + self.removals]:
            if user_id is None:
                fleet.remove_pump(pump_id)
            else:
                fleet.move_pump(pump_id, user_id, None)
            self.events.append(ChurnEvent(self.requests, "remove", pump_id, user_id))
        owners = (user_id,) if user_id is not None else tuple(fleet.user_ids()[:1])
        for _ in range(self.inserts):
            pump_id = fleet.add_pump(user_ids=owners, position=0)
            self.events.append(ChurnEvent(self.requests, "insert", pump_id, user_id))
        self.changes += 1
