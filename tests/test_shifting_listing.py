"""Listings that move while they are paged: new pumps at the front, removals anywhere.

GET /v1/pumps and GET /v1/users/:userId/summary page by offset, and pages are requested ahead
(4 at a time by default), so a listing that changes under a walk can skip a pump. A walk that saw
its listing move is walked again, at most `settings.MAX_LISTING_WALKS` times; the listing is the
first walk that saw it hold still, else the union of the walks, flagged incomplete.

First `pipelines/pump_portal/pagination.py` alone (scripted answers, then random interleavings),
then the emulator's churn mode (`tests/portal_emulator/churn.py`), then the client and whole syncs
against the emulator over real HTTP, with the default read-ahead.
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from pipelines.pump_portal import settings
from pipelines.pump_portal.client import Listing, PortalClient
from pipelines.pump_portal.errors import InvalidRequest
from pipelines.pump_portal.pagination import ListingRead, PageWalk
from tests.conftest import rows, scalar, sync
from tests.portal_emulator import Churn, ChurnEvent, Fleet, PortalEmulator, RequestInfo

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 10
OLD = [f"p{n:02d}" for n in range(35)]  # 35 pumps: pages of 10, 10, 10, 5


# --- pagination.py alone: scripted answers -------------------------------------------------


def answer(listing: list[str], page: int, limit: int = LIMIT, **overrides: Any) -> dict[str, Any]:
    """The portal's page `page` of `listing` as it stands; `overrides` replace pagination keys
    (None drops the key)."""
    pages = math.ceil(len(listing) / limit)
    pagination = {
        "page": page,
        "limit": limit,
        "total": len(listing),
        "pages": pages,
        "has_next": page < pages,
    }
    pagination.update(overrides)
    return {
        "controllers": [{"pump_id": p} for p in listing[(page - 1) * limit : page * limit]],
        "pagination": {k: v for k, v in pagination.items() if v is not None},
    }


def walk_over(states: list[list[str]], limit: int = LIMIT, **overrides: Any) -> PageWalk:
    """One walk whose page n is answered from `states[n-1]` (the last state for later pages)."""
    walk = PageWalk("/pumps", limit)
    while walk.has_next_page:
        state = states[min(walk.number, len(states)) - 1]
        if walk.update(answer(state, walk.number, limit, **overrides)) is None:
            break
    walk.finish()
    return walk


def test_a_still_listing_is_one_complete_walk():
    read = ListingRead()
    walk = read.start("/pumps", LIMIT)
    while walk.has_next_page:
        walk.update(answer(OLD, walk.number))

    assert read.end(walk) is False
    assert [row["pump_id"] for row in read.rows()] == OLD
    assert read.listing == Listing(pages=4, total=35, complete=True, walks=1)


def test_read_ahead_asks_only_for_announced_pages():
    walk = PageWalk("/pumps", LIMIT)
    assert walk.ahead(4) == range(0)  # nothing is announced before page 1
    walk.update(answer(OLD, 1))
    assert list(walk.ahead(4)) == [2, 3, 4]
    assert list(walk.ahead(2)) == [2, 3]
    assert walk.ahead(0) == range(0)


NEW = "x1"


def repeat(pump_id: str) -> str:
    return (
        f"/pumps: 1 item(s) listed on two pages (e.g. {pump_id!r}): the listing shifted under "
        "the walk"
    )


REPEAT = repeat("p09")


@pytest.mark.parametrize(
    ("states", "problems", "missed"),
    [
        pytest.param(
            [OLD, [NEW, *OLD]],
            ["/pumps: pagination.total changed while paging (35, 36)", REPEAT],
            set(),
            id="insert-at-the-front",
        ),
        pytest.param(
            [OLD, [p for p in OLD if p != "p02"]],
            ["/pumps: pagination.total changed while paging (34, 35)"],
            {"p10"},
            id="removal-on-a-page-read",
        ),
        pytest.param(
            [OLD, [NEW, *OLD[:-1]]],
            [REPEAT, "/pumps: 34 distinct items seen over 4 page(s), pagination.total says 35"],
            {"p34"},  # gone by then: not a miss of a pump present throughout
            id="insert-and-removal-keep-the-count",
        ),
    ],
)
def test_a_walk_that_saw_the_listing_move_is_flagged_moved(states, problems, missed):
    """Pages 2.. answered from the changed listing. A removal on page 1 slides p10 onto it."""
    walk = walk_over(states)

    assert walk.listing.problems == problems
    assert set(OLD) - set(walk.rows) == missed
    assert walk.listing.complete is False
    assert walk.listing.moved is True and walk.listing.server_fault is False


def test_a_page_count_that_changes_without_a_total_is_a_move():
    walk = walk_over([OLD[:25], OLD], total=None)  # pages 3, then 4

    assert walk.listing.problems == [
        "/pumps: pagination.pages changed while paging (3, 4)",
    ]
    assert walk.listing.moved is True


def test_a_short_page_before_the_last_is_a_move():
    """Page 2 holds 9 rows though `total` says 35: a row at its end went to a page read."""
    walk = PageWalk("/pumps", LIMIT)
    for page in (1, 2, 3, 4):
        body = answer(OLD, page)
        if page == 2:
            body["controllers"] = body["controllers"][:9]
        walk.update(body)
    walk.finish()

    assert walk.listing.problems == [
        "/pumps: page(s) [2] held fewer than 10 items before the last page: items at their end "
        "moved to a page already read",
        "/pumps: 34 distinct items seen over 4 page(s), pagination.total says 35",
    ]
    assert walk.listing.moved is True


def test_an_announced_page_refused_is_a_move():
    walk = PageWalk("/pumps", LIMIT)
    walk.update(answer(OLD, 1))
    walk.refused(InvalidRequest("page out of range", status=400, code="invalid_pagination"))
    walk.finish()

    assert walk.has_next_page is False
    assert walk.listing.problems == [
        "/pumps: page 2 was announced, then refused (invalid_pagination (HTTP 400): page out of "
        "range)",
        "/pumps: 10 distinct items seen over 1 page(s), pagination.total says 35",
    ]
    assert walk.listing.moved is True


def test_a_server_fault_ends_the_read_after_one_walk():
    """The portal answers page 1 when asked for page 2: walking again would repeat it."""
    read = ListingRead()
    walk = read.start("/pumps", LIMIT)
    walk.update(answer(OLD, 1))
    walk.update(answer(OLD, 1))

    assert read.end(walk) is False
    assert read.listing.walks == 1 and read.listing.server_fault is True
    assert read.listing.problems == ["/pumps: asked for page 2, the portal answered page 1"]
    assert [row["pump_id"] for row in read.rows()] == OLD[:10]


def test_two_alike_walks_end_the_read():
    """A listing that holds one pump twice on a page never adds up; it did not move, so a
    third walk would see the same again."""
    quirky = [*OLD[:5], "p04", *OLD[5:]]  # 36 rows, 35 distinct, total 36
    read = ListingRead()
    walks = 0
    while True:
        walk = read.start("/pumps", LIMIT)
        while walk.has_next_page:
            walk.update(answer(quirky, walk.number))
        walks += 1
        if not read.end(walk):
            break

    assert walks == 2 and read.listing.walks == 2
    assert read.complete is False
    assert read.listing.problems[-1] == (
        "/pumps: no complete walk in 2, two walks in a row saw the same items and counts "
        "(a quirk of the portal); the listing is what the walks saw together"
    )


def scripted_read(walk_states: list[list[list[str]]], max_walks: int = 3) -> ListingRead:
    """A ListingRead whose walk w answers page n from `walk_states[w][n-1]`; rows carry `w`."""
    read = ListingRead(max_walks)
    for index, states in enumerate(walk_states):
        walk = read.start("/pumps", LIMIT)
        while walk.has_next_page:
            body = answer(states[min(walk.number, len(states)) - 1], walk.number)
            for row in body["controllers"]:
                row["walk"] = index + 1
            walk.update(body)
        if not read.end(walk):
            break
    return read


def test_after_a_walk_that_moved_the_next_still_walk_is_the_listing():
    """Walk 1 saw x1 arrive; p03 went between the walks. Walk 2 is the listing."""
    now = [NEW, *[p for p in OLD if p != "p03"]]
    read = scripted_read([[OLD, [NEW, *OLD]], [now], [["never", "asked"]]])

    assert read.listing.walks == 2 and read.complete is True
    assert [row["pump_id"] for row in read.rows()] == now
    assert {row["walk"] for row in read.rows()} == {2}
    assert read.listing.settled == [
        "/pumps: pagination.total changed while paging (35, 36)",
        REPEAT,
    ]
    assert read.listing.problems == []


def test_no_still_walk_within_the_bound_is_the_union_flagged():
    """A new pump at the front after every page 1: each walk moves. x3 arrives during walk 3
    and is never on a page read: the next run lists it."""
    states = [list(OLD)]
    for n in (1, 2, 3):
        states.append([f"x{n}", *states[-1]])
    read = scripted_read([[states[w], states[w + 1]] for w in range(3)])

    assert read.listing.walks == settings.MAX_LISTING_WALKS == 3
    assert read.complete is False and read.listing.moved is True
    union = {row["pump_id"]: row["walk"] for row in read.rows()}
    assert set(union) == {*OLD, "x1", "x2"}
    assert union["p00"] == 3 and union["x1"] == 3 and union["x2"] == 3  # the later row wins
    assert read.listing.problems == [
        "walk 1: /pumps: pagination.total changed while paging (35, 36)",
        f"walk 1: {REPEAT}",
        "walk 2: /pumps: pagination.total changed while paging (36, 37)",
        f"walk 2: {repeat('p08')}",
        "walk 3: /pumps: pagination.total changed while paging (37, 38)",
        f"walk 3: {repeat('p07')}",
        "/pumps: no complete walk in 3, it moved during each of 3 walks; the listing is what the "
        "walks saw together",
    ]


def test_an_insert_behind_a_removal_keeps_every_count_and_hides_a_pump():
    """The documented blind spot: a removal on page 1 and, between the same two answers, an
    insert further down (not at the front) keep total, pages and page sizes right. New pumps
    come at the front; only a pump put back at its old place can do this."""
    later = [p for p in OLD if p != "p02"]
    later.insert(15, "back")
    walk = walk_over([OLD, later])

    assert walk.listing.complete is True
    assert set(OLD) - {"p02"} - set(walk.rows) == {"p10"}


# --- pagination.py alone: random interleavings ---------------------------------------------


class MovingListing:
    """A listing that changes between answers, walked the way the client walks it: page 1
    alone, then up to `read_ahead` announced pages in flight, answered in random order and
    handled in page order. A change puts a new id at the front, removes one anywhere, or
    (`moves`) moves one to the front, as a listing ordered by last report would. `changes`
    caps how many changes happen in all (None: no cap)."""

    def __init__(self, rng: random.Random, change: float, moves: bool, changes: int | None):
        self.rng, self.change, self.moves, self.changes = rng, change, moves, changes
        self.ids = list(OLD)
        self.gone: set[str] = set()
        self.made = 0

    def _mutate(self) -> None:
        rng, ids = self.rng, self.ids
        kind = rng.random()
        if self.moves and kind < 0.3:
            ids.insert(0, ids.pop(rng.randrange(len(ids))))
        elif kind < 0.65 or len(ids) < 2:
            self.made += 1
            ids.insert(0, f"n{self.made}")
        else:
            self.gone.add(ids.pop(rng.randrange(len(ids))))
        if self.changes is not None:
            self.changes -= 1

    def walk(self, walk: PageWalk, read_ahead: int) -> PageWalk:
        pending: list[int] = []
        answered: dict[int, dict[str, Any]] = {}
        while walk.has_next_page:
            number = walk.number
            if number not in answered and number not in pending:
                pending.append(number)
            while number not in answered:
                if self.changes != 0 and self.rng.random() < self.change:
                    self._mutate()
                elif pending:
                    page = pending.pop(self.rng.randrange(len(pending)))
                    answered[page] = answer(self.ids, page, walk.limit)
            if walk.update(answered.pop(number)) is None:
                break
            for later in walk.ahead(read_ahead):
                if later not in answered and later not in pending:
                    pending.append(later)
        walk.finish()
        return walk


@pytest.mark.parametrize("moves", [False, True], ids=["inserts-removals", "and-moves-to-front"])
@pytest.mark.parametrize("read_ahead", [0, 4, 15])
def test_no_complete_walk_misses_a_pump_present_throughout(read_ahead, moves):
    """Thousands of interleavings: a walk the rules call complete holds every id that was
    listed from its first answer to its last; every other walk says the listing moved."""
    rng = random.Random(f"{read_ahead}:{moves}")
    missed_while_complete: list[set[str]] = []
    outcomes = {"complete": 0, "moved": 0, "server_fault": 0}
    for _ in range(1500):
        listing = MovingListing(rng, 0.3, moves, None)
        walk = listing.walk(PageWalk("/pumps", 5), read_ahead)
        throughout = set(OLD) - listing.gone  # a pump moved to the front is still there
        if walk.listing.complete:
            outcomes["complete"] += 1
            if throughout - set(walk.rows):
                missed_while_complete.append(throughout - set(walk.rows))
        else:
            outcomes["moved" if walk.listing.moved else "server_fault"] += 1

    assert missed_while_complete == []
    assert outcomes["server_fault"] == 0  # every incomplete walk is one to walk again
    assert outcomes["complete"] + outcomes["moved"] == 1500


def test_a_listing_that_stops_moving_is_read_exactly_within_the_bound():
    """A few changes at the start of the read (read-ahead 4). A walk that began after the last
    change is still: the read ends there with the listing exactly as it stands. A complete walk
    during the changes holds every pump present throughout. Incomplete only when the third walk
    began before the changes were over."""
    rng = random.Random(11)
    seen: set[tuple[int, str]] = set()
    for _ in range(400):
        listing = MovingListing(rng, 0.3, False, rng.randrange(1, 4))
        read = ListingRead()
        while True:
            still = listing.changes == 0
            walk = listing.walk(read.start("/pumps", 5), 4)
            if not read.end(walk):
                break
        listed = [row["pump_id"] for row in read.rows()]
        if still:
            assert read.complete and listed == listing.ids
            seen.add((read.listing.walks, "still"))
        elif read.complete:
            assert set(OLD) - listing.gone <= set(listed)
            seen.add((read.listing.walks, "complete while moving"))
        else:
            assert read.listing.walks == settings.MAX_LISTING_WALKS and read.listing.moved
            seen.add((read.listing.walks, "incomplete"))

    assert seen == {
        (1, "complete while moving"),
        (2, "still"),
        (2, "complete while moving"),
        (3, "still"),
        (3, "complete while moving"),
        (3, "incomplete"),
    }


# --- the emulator's churn mode ---------------------------------------------------------------


def get_ids(emu: PortalEmulator, path: str, page: int, limit: int = LIMIT) -> list[str]:
    response = requests.get(
        f"{emu.url}{path}",
        params={"page": page, "limit": limit},
        headers={"Authorization": f"Bearer {emu.keys.full}"},
        timeout=5,
    )
    return [row["pump_id"] for row in response.json()["controllers"]]


@pytest.fixture
def small() -> Fleet:
    return Fleet.generate(pumps=40, users=2, seed=5)


@pytest.fixture
def small_emu(small: Fleet):
    with PortalEmulator(small) as emu:
        yield emu


def test_churn_inserts_at_the_front_right_after_each_answered_page(small_emu, small):
    before = small.pump_ids()
    churn = small_emu.churn_listing(every=1, inserts=1, times=2)

    pages = [get_ids(small_emu, "/v1/pumps", page) for page in (1, 2, 3, 4)]

    x1, x2 = churn.inserted
    assert pages == [before[0:10], before[9:19], before[18:28], before[28:38]]
    assert churn.events == [
        ChurnEvent(1, "insert", x1, None),
        ChurnEvent(2, "insert", x2, None),
    ]
    assert (churn.requests, churn.changes) == (2, 2)  # `times` reached: no longer counting
    assert small.pump_ids() == [x2, x1, *before]
    assert small.pumps[x1].last_seen == small_emu.now  # a new pump that just reported


@pytest.mark.parametrize(
    ("remove", "removed", "page_2"),
    [
        ("served", 0, slice(11, 21)),  # the first row of page 1: p10 slides onto page 1
        ("ahead", 10, slice(11, 21)),  # the first row of page 2, before it is read
        ("last", 39, slice(10, 20)),  # the end of the listing: pages 1-3 keep their rows
    ],
)
def test_churn_removes_from_a_page_served_the_next_page_or_the_end(
    small_emu, small, remove, removed, page_2
):
    before = small.pump_ids()
    churn = small_emu.churn_listing(inserts=0, removals=1, remove=remove, times=1)

    get_ids(small_emu, "/v1/pumps", 1)
    second = get_ids(small_emu, "/v1/pumps", 2)

    assert churn.removed == [before[removed]]
    assert second == before[page_2]
    assert small.is_visible(before[removed]) is False


def test_churn_every_k_pages_on_a_users_listing(small_emu, small):
    user = small.user_ids()[0]
    mine = small.user_pump_ids(user)
    churn = small_emu.churn_listing(
        "/v1/users/:userId/summary", every=2, inserts=1, removals=1, remove="served"
    )

    get_ids(small_emu, f"/v1/users/{user}/summary", 1)
    get_ids(small_emu, "/v1/pumps", 1)  # another listing: not counted
    get_ids(small_emu, f"/v1/users/{user}/summary", 2)

    (new,) = churn.inserted
    assert churn.events == [
        ChurnEvent(2, "remove", mine[10], user),
        ChurnEvent(2, "insert", new, user),
    ]
    assert small.user_pump_ids(user) == [new, *mine[:10], *mine[11:]]
    small_emu.clear_churn()
    get_ids(small_emu, f"/v1/users/{user}/summary", 1)
    assert churn.requests == 2


def test_churn_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="template"):
        Churn(template="/v1/stats")
    with pytest.raises(ValueError, match="not both 0"):
        Churn(inserts=0, removals=0)
    with pytest.raises(ValueError, match="remove"):
        Churn(remove="middle")  # type: ignore[arg-type]


def test_churn_from_the_command_line(tmp_path: Path):
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.portal_emulator",
            "--pumps=40",
            "--users=2",
            "--churn-inserts=1",
            "--churn-removals=1",
            "--churn-remove=last",
            "--churn-times=1",
            f"--ready-file={ready}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        headers = {"Authorization": f"Bearer {info['keys']['full']}"}

        def page(number: int) -> dict[str, Any]:
            url = f"{info['url']}/v1/pumps?page={number}&limit=10"
            return requests.get(url, headers=headers, timeout=5).json()

        first, second, third = page(1), page(2), page(4)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert second["controllers"][0]["pump_id"] == first["controllers"][-1]["pump_id"]
    assert [first["pagination"]["total"], second["pagination"]["total"]] == [40, 40]
    assert third["controllers"][-1]["pump_id"] == "pump-039"  # pump-040 removed, once
    assert process.returncode == 0


# --- the client against the emulator: read-ahead answers pages out of order ---------------------


def page_2_after_pages_3_to_5(emu: PortalEmulator, change) -> Any:
    """An on_request hook: the first /v1/pumps page 2 waits until pages 3-5, requested ahead
    with it, were answered; then `change()` runs and page 2 is answered. Read-ahead answers
    pages in this order whenever page 2 is the slow one."""
    armed = threading.Event()
    armed.set()

    def hook(info: RequestInfo) -> None:
        if info.template != "/v1/pumps" or info.query.get("page") != "2" or not armed.is_set():
            return
        armed.clear()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pages = {r.query.get("page") for r in list(emu.requests) if r.template == "/v1/pumps"}
            if {"3", "4", "5"} <= pages:
                break
            time.sleep(0.005)
        change()

    return hook


def make_client(emu: PortalEmulator) -> PortalClient:
    # Read-ahead 4 (pages 2-5 in flight after page 1), as these scenarios describe them; the
    # whole syncs below use the default.
    return PortalClient(emu.url, emu.keys.full, backoff_seconds=0.01, read_ahead=4)


def test_one_walk_with_read_ahead_misses_a_pump_when_a_new_one_comes_first(emulator, fleet):
    """The issue, reproduced: page 3 was read before the new pump pushed page 2's last pump
    onto it; page 2, read after, starts one pump earlier. One walk never sees that pump."""
    before = fleet.pump_ids()
    emulator.on_request(page_2_after_pages_3_to_5(emulator, lambda: fleet.add_pump(position=0)))
    client = make_client(emulator)
    listing = Listing()

    ids = {row["pump_id"] for page in client.pump_pages(listing) for row in page.items}

    assert set(before) - ids == {before[99]}
    assert listing.complete is False and listing.moved is True
    assert listing.problems == [
        "/pumps: pagination.total changed while paging (300, 301)",
        "/pumps: pagination.pages changed while paging (6, 7)",
        f"/pumps: 2 item(s) listed on two pages (e.g. {before[49]!r}): the listing shifted "
        "under the walk",
    ]
    assert emulator.counts["/v1/pumps"] == 7


def test_walking_again_finds_the_pump_one_walk_missed(emulator, fleet):
    new: list[str] = []
    emulator.on_request(
        page_2_after_pages_3_to_5(emulator, lambda: new.append(fleet.add_pump(position=0)))
    )
    client = make_client(emulator)

    read = client.pump_listing()
    walks = [page.walk for page in read.pages]

    assert [row["pump_id"] for row in read.rows()] == fleet.pump_ids()
    assert len(fleet.pump_ids()) == 301 and fleet.pump_ids()[0] == new[0]
    assert read.complete is True and read.listing.walks == 2
    assert walks == [1] * 7 + [2] * 7
    assert emulator.counts["/v1/pumps"] == 14  # two walks of 7 pages (301 pumps by 50)


# --- whole syncs against the emulator, default read-ahead -------------------------------------


def loaded(pipeline) -> dict[str, Any]:
    """pump_id -> last_seen of the controllers table."""
    return dict(rows(pipeline, "select pump_id, last_seen from controllers"))


def observed(pipeline, pump_id: str) -> list[Any]:
    return [
        r[0]
        for r in rows(
            pipeline,
            "select last_seen from controller_observations "
            f"where pump_id = '{pump_id}' order by last_seen",
        )
    ]


def vanished(pipeline) -> set[str]:
    return {
        r[0]
        for r in rows(pipeline, "select pump_id from controller_visibility where not is_visible")
    }


def truth(fleet: Fleet, pump_ids) -> dict[str, Any]:
    return {p: fleet.pumps[p].last_seen for p in pump_ids}


def report_before_the_run(emulator, fleet) -> dict[str, list[Any]]:
    """Pumps at the ends and starts of pages 1-5 report a minute before the run: the rows a
    shifting walk reads twice or misses. Returns each one's observations the run must leave."""
    order = fleet.pump_ids()
    reporters = [order[i] for i in (49, 50, 99, 100, 149, 150, 199, 200, 249, 250)]
    earlier = {p: fleet.pumps[p].last_seen for p in reporters}
    emulator.advance(600)
    emulator.report(reporters)
    emulator.advance(60)
    emulator.reset_counts()
    return {
        p: [t for t in (earlier[p], fleet.pumps[p].last_seen) if t is not None] for p in reporters
    }


def test_a_pump_that_reported_just_before_the_run_is_not_missed(emulator, fleet, pipeline):
    """The issue's run: a new pump comes first while page 2 is slow; one walk would miss the
    pump at the end of page 2 (it reported just before the run). The second walk has it."""
    sync(emulator, pipeline)
    expected = report_before_the_run(emulator, fleet)
    assert fleet.pump_ids()[99] in expected
    new: list[str] = []
    emulator.on_request(
        page_2_after_pages_3_to_5(emulator, lambda: new.append(fleet.add_pump(position=0)))
    )

    # read-ahead 4, as the hook has it (pages 3-5 ahead of page 2); with more pages ahead,
    # whether walk 1 still asks for page 7 depends on timing
    result = sync(emulator, pipeline, page_read_ahead=4)

    assert result.outcome == "success" and result.report.listing_complete is True
    assert loaded(pipeline) == truth(fleet, fleet.pump_ids())  # the 300 and the new one
    assert {p: observed(pipeline, p) for p in expected} == expected
    assert result.report.pumps_changed == len(expected) + len(new) == 11
    assert vanished(pipeline) == set()
    assert emulator.counts["/v1/pumps"] == 14  # two walks of 7 pages (301 pumps by 50)


def test_new_pumps_at_the_front_during_paging_lose_no_pump(emulator, fleet, pipeline):
    """Churn: a new pump at the front after each of the first 3 listing pages answered. Walk 1
    sees the count move (300, then 301-303); walk 2 sees 303 still and is the listing."""
    sync(emulator, pipeline)
    expected = report_before_the_run(emulator, fleet)
    churn = emulator.churn_listing(every=1, inserts=1, times=3)

    result = sync(emulator, pipeline)

    assert result.outcome == "success" and result.report.listing_complete is True
    assert len(churn.inserted) == 3 and set(churn.inserted) <= set(fleet.pump_ids())
    assert loaded(pipeline) == truth(fleet, fleet.pump_ids())
    assert {p: observed(pipeline, p) for p in expected} == expected
    assert {p: observed(pipeline, p) for p in churn.inserted} == {
        p: [fleet.pumps[p].last_seen] for p in churn.inserted
    }
    assert result.report.pumps_changed == 10 + 3
    assert vanished(pipeline) == set()
    assert emulator.counts["/v1/pumps"] == 14  # walks of 7 pages: 300 -> 303 pumps, by 50


@pytest.mark.parametrize(
    ("inserts", "remove"),
    [(0, "served"), (0, "ahead"), (1, "last")],
    ids=["from-a-page-served", "from-the-next-page", "new-first-last-gone-count-holds"],
)
def test_removals_during_paging_keep_every_pump_present_throughout(
    emulator, fleet, pipeline, inserts, remove
):
    """Churn: one pump removed (and with `inserts`, one new at the front: the count holds)
    after each of the first 2 listing pages answered. Walk 1 sees the count move or a pump on
    two pages; walk 2 is still: the listing is the fleet as it stands, and the removed pumps,
    gone from a complete listing, are marked vanished in this very run (with what the run
    before loaded: a walk that saw them later was not the listing)."""
    sync(emulator, pipeline)
    first_run = loaded(pipeline)
    expected = report_before_the_run(emulator, fleet)
    before = set(fleet.pump_ids())
    churn = emulator.churn_listing(every=1, inserts=inserts, removals=1, remove=remove, times=2)

    result = sync(emulator, pipeline)

    throughout = before - set(churn.removed)
    assert len(churn.removed) == 2 and len(throughout) == 298
    assert result.outcome == "success" and result.report.listing_complete is True
    assert set(fleet.pump_ids()) == throughout | set(churn.inserted)
    assert loaded(pipeline) == {
        **{p: first_run[p] for p in churn.removed},
        **truth(fleet, fleet.pump_ids()),
    }
    assert {p: observed(pipeline, p) for p in set(expected) & throughout} == {
        p: expected[p] for p in set(expected) & throughout
    }
    assert vanished(pipeline) == set(churn.removed)
    assert result.report.pumps_vanished == 2
    assert emulator.counts["/v1/pumps"] == 12  # two walks of 6 pages (298-300 pumps by 50)


def test_a_listing_that_moves_on_every_page_stops_at_the_bound(emulator, fleet, pipeline):
    """A pathological portal: a new pump at the front after every listing page. Every walk
    moves; after 3 walks the listing is their union, flagged: nothing is marked vanished (not
    even the pump really removed before the run), and the run succeeds. The next run, on a
    portal that holds still, settles it all."""
    sync(emulator, pipeline)
    gone = fleet.pump_ids()[7]
    fleet.remove_pump(gone)
    emulator.advance(60)
    emulator.reset_counts()
    churn = emulator.churn_listing(every=1, inserts=1)

    result = sync(emulator, pipeline)

    assert result.outcome == "success" and result.error is None
    assert result.report.listing_complete is False
    assert result.report.pumps_vanished == 0 and vanished(pipeline) == set()
    assert any(
        w.startswith("controllers listing was not complete, so no pump is marked vanished")
        and "no complete walk in 3, it moved during each of 3 walks" in w
        for w in result.report.warnings
    )
    # 299 pumps, +1 after every page: each walk reads 7 pages of 50 (299..319 pumps)
    assert emulator.counts["/v1/pumps"] == 3 * 7 == settings.MAX_LISTING_WALKS * 7
    assert churn.changes == 21

    emulator.clear_churn()
    emulator.reset_counts()
    settled = sync(emulator, pipeline)

    assert settled.report.listing_complete is True
    assert vanished(pipeline) == {gone}
    assert loaded(pipeline) == truth(fleet, {*fleet.pump_ids(), gone})
    assert emulator.counts["/v1/pumps"] == 7  # one walk: 320 pumps by 50


# --- user <-> pump links: the per-user listings ---------------------------------------------


@pytest.fixture
def one_user():
    """One delegated user with 60 pumps: its summary spans 6 pages of 10."""
    with PortalEmulator(Fleet.generate(pumps=60, users=1, seed=3)) as emu:
        yield emu


def open_links(pipeline) -> set[str]:
    return {
        r[0] for r in rows(pipeline, "select pump_id from user_pump_links where valid_to is null")
    }


def ended_links(pipeline) -> set[str]:
    return {
        r[0]
        for r in rows(pipeline, "select pump_id from user_pump_links where valid_to is not null")
    }


def test_a_users_listing_that_moves_is_walked_again_and_its_links_stay_exact(one_user, pipeline):
    emu, fleet = one_user, one_user.fleet
    (user,) = fleet.user_ids()
    sync(emu, pipeline, page_size=LIMIT)
    emu.advance(60)
    emu.reset_counts()
    churn = emu.churn_listing(
        "/v1/users/:userId/summary", every=1, inserts=1, removals=1, remove="ahead", times=2
    )

    result = sync(emu, pipeline, page_size=LIMIT)

    assert result.outcome == "success"
    assert len(churn.removed) == len(churn.inserted) == 2
    assert open_links(pipeline) == set(fleet.user_pump_ids(user))
    assert ended_links(pipeline) == set(churn.removed)
    assert scalar(pipeline, "select count(*) from user_pump_links") == 60 + 2
    # walk 1 (60 pumps all along, a pump read on two pages), walk 2 still: 6 pages each
    assert emu.counts["/v1/users/:userId/summary"] == 12


def test_a_users_listing_that_moves_on_every_page_ends_no_link(one_user, pipeline):
    """After every page of the user's summary a new pump comes first and the last one goes:
    the count holds, but page 2 always starts with page 1's last pump. After 3 walks the links
    are the union, and none ends. The next run, still, ends exactly the links of the pumps gone.
    (A removal from the page just served with a new pump first shifts nothing behind it: such
    walks are complete, and rightly so.)"""
    emu, fleet = one_user, one_user.fleet
    (user,) = fleet.user_ids()
    sync(emu, pipeline, page_size=LIMIT)
    mine = set(fleet.user_pump_ids(user))
    emu.advance(60)
    emu.reset_counts()
    churn = emu.churn_listing(
        "/v1/users/:userId/summary", every=1, inserts=1, removals=1, remove="last"
    )

    result = sync(emu, pipeline, page_size=LIMIT)

    assert result.outcome == "success"
    assert ended_links(pipeline) == set()  # no complete walk: no link ends
    assert open_links(pipeline) >= mine - set(churn.removed)
    assert emu.counts["/v1/users/:userId/summary"] == 3 * 6  # the bound: 3 walks of 6 pages

    emu.clear_churn()
    emu.advance(60)
    sync(emu, pipeline, page_size=LIMIT)

    assert churn.changes == 18 and set(churn.removed) <= mine
    assert open_links(pipeline) == set(fleet.user_pump_ids(user))
    assert ended_links(pipeline) == set(churn.removed)
