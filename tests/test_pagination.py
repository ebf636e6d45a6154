"""pagination.PageWalk alone: no HTTP, answers fed to `update()` as the client would.

Each test scripts the portal's answer for every page number asked and checks where the walk
stops (`has_next_page`, `number`) and what `finish()` concludes. Listings that move while they
are read, and `ListingRead`'s re-walks, are in tests/test_shifting_listing.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipelines.pump_portal import pagination, settings
from pipelines.pump_portal.errors import InvalidRequest, InvalidResponse
from pipelines.pump_portal.pagination import Listing, ListingRead, PageWalk

JSON = dict[str, Any]
OMIT = object()  # a key the portal leaves out
FIVE = ["a", "b", "c", "d", "e"]


def body(ids: list[str], **keys: Any) -> JSON:
    """A listing page holding `ids`; `keys` are its pagination (OMIT drops one; none at all:
    no `pagination` object)."""
    page: JSON = {"controllers": [{"pump_id": i} for i in ids]}
    if keys:
        page["pagination"] = {k: v for k, v in keys.items() if v is not OMIT}
    return page


def sliced(ids: list[str], size: int, /, **keys: Any) -> Callable[[int], JSON]:
    """Page n of `ids` in pages of `size`; a key given as a callable is called with n."""

    def answer(number: int) -> JSON:
        page = ids[(number - 1) * size : number * size]
        return body(page, **{k: v(number) if callable(v) else v for k, v in keys.items()})

    return answer


def drive(walk: PageWalk, answer: Callable[[int], JSON], cap: int = 20_000) -> list[int]:
    """Feed `answer(n)` for every page the walk asks for; the page numbers asked, in order."""
    asked: list[int] = []
    while walk.has_next_page and len(asked) < cap:
        asked.append(walk.number)
        if walk.update(answer(walk.number)) is None:
            break
    return asked


def refusal() -> InvalidRequest:
    return InvalidRequest("page out of range", status=400, code="invalid_pagination")


REFUSED = "(invalid_pagination (HTTP 400): page out of range)"


# --- has_next -----------------------------------------------------------------------------


@pytest.mark.parametrize("has_next", [True, 1, "true", "True", " TRUE ", "t", "1", "yes"])
def test_has_next_true_asks_for_the_next_page(has_next: Any) -> None:
    walk = PageWalk("/pumps", 2)
    walk.update(body(["a"], page=1, limit=2, has_next=has_next))  # short page: has_next wins

    assert walk.has_next_page is True
    assert walk.number == 2


@pytest.mark.parametrize("has_next", [False, 0, "false", "False", " false ", "f", "0", "no"])
def test_has_next_false_ends_the_walk_complete(has_next: Any) -> None:
    walk = PageWalk("/pumps", 2)
    walk.update(body(["a", "b"], page=1, limit=2, has_next=has_next))  # a full page: still ends

    assert walk.has_next_page is False
    assert walk.number == 1
    assert walk.finish() == Listing(pages=1)


@pytest.mark.parametrize("has_next", [OMIT, None, "", "  ", "maybe", []])
def test_has_next_absent_or_unreadable_is_no_signal(has_next: Any) -> None:
    """Then the page size decides: a full page asks for the next, a short one ends it."""
    full = PageWalk("/pumps", 2)
    full.update(body(["a", "b"], page=1, limit=2, has_next=has_next))
    short = PageWalk("/pumps", 2)
    short.update(body(["a"], page=1, limit=2, has_next=has_next))

    assert (full.has_next_page, full.number) == (True, 2)
    assert (short.has_next_page, short.number) == (False, 1)
    assert short.finish() == Listing(pages=1)


def test_has_next_false_but_pages_says_more_reads_on() -> None:
    walk = PageWalk("/pumps", 2)
    asked = drive(walk, sliced(FIVE, 2, page=lambda n: n, pages=3, has_next="false"))

    assert asked == [1, 2, 3]
    assert walk.finish() == Listing(pages=3)
    assert list(walk.rows) == FIVE


def test_every_number_as_a_string() -> None:
    walk = PageWalk("/pumps", 2)
    answer = sliced(
        FIVE,
        2,
        page=str,
        limit="2",
        total="5",
        pages="3",
        has_next=lambda n: "true" if n < 3 else "false",
    )

    assert drive(walk, answer) == [1, 2, 3]
    assert walk.finish() == Listing(pages=3, total=5)
    assert list(walk.rows) == FIVE


# --- pages, total, or neither ---------------------------------------------------------------


def test_pages_only() -> None:
    walk = PageWalk("/pumps", 2)
    answer = sliced(FIVE, 2, page=lambda n: n, pages=3)
    walk.update(answer(1))
    assert list(walk.ahead(5)) == [2, 3]

    assert drive(walk, answer) == [2, 3]
    assert walk.finish() == Listing(pages=3)


def test_total_only_with_a_page_size_the_server_capped() -> None:
    """Asked for 50, the server sends 20 per page and says only `total`: page 1's size is the
    page size, so `total` 45 means 3 pages."""
    ids = [f"p{n:02d}" for n in range(45)]
    walk = PageWalk("/pumps", 50)

    assert drive(walk, sliced(ids, 20, total=45)) == [1, 2, 3]
    assert walk.finish() == Listing(pages=3, total=45)
    assert list(walk.rows) == ids


@pytest.mark.parametrize(
    ("ids", "asked"),
    [
        (FIVE, [1, 2, 3]),  # 2, 2, 1: the short page is the last
        (FIVE[:4], [1, 2, 3]),  # 2, 2, then an empty page ends it
        ([], [1]),
    ],
)
def test_neither_pages_nor_total_the_page_size_decides(ids: list[str], asked: list[int]) -> None:
    walk = PageWalk("/pumps", 2)

    assert drive(walk, sliced(ids, 2)) == asked
    assert walk.finish() == Listing(pages=len(asked))
    assert list(walk.rows) == ids


def test_counts_that_are_not_whole_numbers_are_no_signal() -> None:
    """`pages` "2.7" and `total` -1 are not rounded into a page count: the page size decides."""
    walk = PageWalk("/pumps", 2)
    answer = sliced(FIVE, 2, page=lambda n: n, limit="2", total="-1", pages="2.7")

    assert drive(walk, answer) == [1, 2, 3]
    assert walk.finish() == Listing(pages=3, total=None)


def test_an_empty_listing_with_counts() -> None:
    walk = PageWalk("/pumps", 50)

    assert drive(walk, sliced([], 50, page=1, total=0, pages=0, has_next=False)) == [1]
    assert walk.finish() == Listing(pages=1, total=0)


def test_a_row_without_an_id_counts_toward_total() -> None:
    walk = PageWalk("/pumps", 50)
    walk.update(
        {
            "controllers": [{"pump_id": "a"}, {"pump_id": " "}, {"custom_name": "no id"}],
            "pagination": {"page": 1, "total": 3, "pages": 1, "has_next": False},
        }
    )

    assert walk.finish() == Listing(pages=1, total=3)
    assert list(walk.rows) == ["a"]
    assert walk.anonymous_rows == [{"pump_id": " "}, {"custom_name": "no id"}]


def test_a_pump_id_as_number_and_as_string_is_one_item() -> None:
    walk = PageWalk("/pumps", 1)
    asked = drive(
        walk,
        lambda n: {
            "controllers": [{"pump_id": 7} if n == 1 else {"pump_id": "7"}],
            "pagination": {"page": n, "total": 1, "has_next": n < 2},
        },
    )

    assert asked == [1, 2]
    assert walk.rows == {"7": {"pump_id": "7"}}  # the later copy wins
    assert walk.finish().problems == [
        "/pumps: 1 item(s) listed on two pages (e.g. '7'): the listing shifted under the walk",
    ]


# --- servers that page wrongly -----------------------------------------------------------


def test_has_next_forever_stops_past_the_announced_pages() -> None:
    walk = PageWalk("/pumps", 1)
    answer = sliced(
        [f"x{n}" for n in range(100)], 1, page=lambda n: n, total=3, pages=3, has_next=True
    )

    assert drive(walk, answer) == list(range(1, 4 + settings.EXTRA_PAGES_ALLOWED))
    assert walk.has_next_page is False
    assert walk.finish() == Listing(
        pages=13,
        total=3,
        complete=False,
        problems=["/pumps: has_next still true after 13 pages (pages=3)"],
        server_fault=True,
    )


def test_has_next_forever_without_counts_stops_at_the_cap() -> None:
    walk = PageWalk("/pumps", 1)
    cap = pagination.MAX_PAGES_WITHOUT_COUNT
    answer = sliced([f"x{n}" for n in range(cap + 5)], 1, has_next=True)

    assert drive(walk, answer) == list(range(1, cap + 1))
    assert walk.finish() == Listing(
        pages=cap,
        complete=False,
        problems=[f"/pumps: has_next still true after {cap} pages, no page count"],
        server_fault=True,
    )
    assert len(walk.rows) == cap


@pytest.mark.parametrize("counts", [{}, {"total": 2, "pages": 1}])
def test_a_repeated_page_ends_the_walk(counts: JSON) -> None:
    """The server ignores `page` (and echoes none): page 2 is page 1 again."""
    walk = PageWalk("/pumps", 2)

    assert drive(walk, lambda n: body(["a", "b"], has_next=True, **counts)) == [1, 2]
    assert walk.finish() == Listing(
        pages=2,
        total=counts.get("total"),
        complete=False,
        problems=["/pumps: page 2 repeats only items already seen"],
        server_fault=True,
    )
    assert list(walk.rows) == ["a", "b"]


def test_a_repeated_page_with_counts_grown_is_a_move() -> None:
    """Two new pumps at the front pushed page 1's items onto page 2: not a server fault."""
    walk = PageWalk("/pumps", 2)
    walk.update(body(["a", "b"], page=1, total=4, pages=2, has_next=True))
    walk.update(body(["a", "b"], page=2, total=6, pages=3, has_next=True))

    assert walk.has_next_page is False
    listing = walk.finish()
    assert listing.problems == [
        "/pumps: page 2 repeats only items already seen",
        "/pumps: pagination.total changed while paging (4, 6)",
        "/pumps: pagination.pages changed while paging (2, 3)",
        "/pumps: 2 item(s) listed on two pages (e.g. 'a'): the listing shifted under the walk",
    ]
    assert listing.moved is True and listing.server_fault is False


def test_a_repeated_page_the_portal_says_is_the_page_asked_for_is_a_move() -> None:
    """Counts unchanged, but the answer echoes page 2: the portal pages, and page 1's pumps are
    on page 2 because two pumps moved to the front while it was read (a listing ordered by last
    report, read ahead: page 2 answered after the moves)."""
    walk = PageWalk("/pumps", 2)
    walk.update(body(["a", "b"], page=1, total=6, pages=3, has_next=True))
    walk.update(body(["a", "b"], page=2, total=6, pages=3, has_next=True))

    listing = walk.finish()
    assert listing.problems[0] == "/pumps: page 2 repeats only items already seen"
    assert listing.moved is True and listing.server_fault is False


def test_a_portal_that_echoes_the_page_but_repeats_page_1_is_walked_twice() -> None:
    """A loop that echoes the page asked for looks like a move once; the second walk is the
    same, which ends the read: two more requests, then incomplete (nothing marked vanished)."""
    read = ListingRead()
    walks = 0
    while True:
        walk = read.start("/pumps", 2)
        walk.update(body(["a", "b"], page=1, total=4, pages=2, has_next=True))
        walk.update(body(["a", "b"], page=2, total=4, pages=2, has_next=True))
        walks += 1
        if not read.end(walk):
            break

    assert walks == 2
    assert read.listing.complete is False and read.listing.walks == 2
    assert [row["pump_id"] for row in read.rows()] == ["a", "b"]


def test_an_echoed_page_other_than_asked_ends_the_walk() -> None:
    walk = PageWalk("/pumps", 2)
    first = sliced(FIVE, 2, page=1, total=5, pages=3, has_next=True)
    walk.update(first(1))

    rows = walk.update(first(1))  # asked for page 2, answered page 1

    assert rows == [{"pump_id": "a"}, {"pump_id": "b"}]  # real pumps all the same
    assert (walk.has_next_page, walk.number) == (False, 2)
    assert walk.finish() == Listing(
        pages=2,
        total=5,
        complete=False,
        problems=["/pumps: asked for page 2, the portal answered page 1"],
        server_fault=True,
    )


@pytest.mark.parametrize("echo", [2, "2", " 2 ", "2.0", 2.0, OMIT, None, "", "two", "1.5"])
def test_an_echo_that_is_page_2_or_no_number_goes_on(echo: Any) -> None:
    """ "1.5" is no page number at all: not cut to 1 and taken for a wrong page."""
    walk = PageWalk("/pumps", 2)
    walk.update(body(["a", "b"], page=1, pages=3))
    walk.update(body(["c", "d"], page=echo, pages=3))

    assert (walk.has_next_page, walk.number) == (True, 3)
    assert walk.listing.problems == []


def test_total_changing_between_pages_is_a_move() -> None:
    """Page 1 from [a b c d]; then x is inserted at the front and pages 2, 3 come from
    [x a b c d]: b is read twice, x (new meanwhile) not at all."""
    before, after = ["a", "b", "c", "d"], ["x", "a", "b", "c", "d"]
    walk = PageWalk("/pumps", 2)

    def answer(n: int) -> JSON:
        ids = before if n == 1 else after
        pages = -(-len(ids) // 2)
        return body(
            ids[(n - 1) * 2 : n * 2], page=n, total=len(ids), pages=pages, has_next=n < pages
        )

    assert drive(walk, answer) == [1, 2, 3]
    listing = walk.finish()
    assert listing.problems == [
        "/pumps: pagination.total changed while paging (4, 5)",
        "/pumps: pagination.pages changed while paging (2, 3)",
        "/pumps: 1 item(s) listed on two pages (e.g. 'b'): the listing shifted under the walk",
    ]
    assert (listing.pages, listing.total, listing.complete) == (3, 5, False)
    assert listing.moved is True
    assert list(walk.rows) == ["a", "b", "c", "d"]
    assert walk.finish() is listing and len(listing.problems) == 3  # the rules apply once


def test_an_empty_page_that_announces_more_ends_the_walk() -> None:
    walk = PageWalk("/pumps", 2)
    walk.update(body([], page=1, has_next=True))

    assert walk.has_next_page is False
    assert walk.finish().problems == ["/pumps: page 1 is empty but announces more"]
    assert walk.listing.server_fault is True


def test_a_body_that_is_no_listing_page() -> None:
    walk = PageWalk("/pumps", 2)

    assert walk.update({"api_version": "1"}) is None
    assert walk.has_next_page is False
    assert walk.finish() == Listing(
        pages=0,
        complete=False,
        problems=["/pumps: page 1 has neither controllers nor pagination"],
        server_fault=True,
    )


def test_controllers_keyed_by_index_are_a_list_and_anything_else_is_refused() -> None:
    walk = PageWalk("/pumps", 2)
    walk.update({"controllers": {"0": {"pump_id": "a"}, "1": {"pump_id": "b"}}})
    assert list(walk.rows) == ["a", "b"]

    with pytest.raises(InvalidResponse, match="`controllers` is not a list"):
        PageWalk("/pumps", 2).update({"controllers": "a,b"})


# --- a page refused (400 invalid_pagination / 404) ------------------------------------------


def test_a_refused_page_nobody_announced_is_the_end() -> None:
    """Only the page size suggested page 2 (page 1 was full)."""
    walk = PageWalk("/pumps", 2)
    walk.update(body(["a", "b"]))
    assert walk.has_next_page is True

    walk.refused(refusal())

    assert walk.has_next_page is False
    assert walk.finish() == Listing(pages=1)


def test_a_refused_page_has_next_announced_is_a_move() -> None:
    walk = PageWalk("/pumps", 2)
    walk.update(body(["a", "b"], page=1, has_next="true"))
    walk.refused(refusal())

    assert walk.has_next_page is False
    listing = walk.finish()
    assert listing.problems == [f"/pumps: page 2 was announced, then refused {REFUSED}"]
    assert listing.moved is True


def test_a_refused_page_the_page_count_announced_is_a_move() -> None:
    walk = PageWalk("/pumps", 2)
    answer = sliced(FIVE, 2, page=lambda n: n, pages=3)
    walk.update(answer(1))
    walk.update(answer(2))
    walk.refused(refusal())

    listing = walk.finish()
    assert listing.problems == [
        f"/pumps: page 3 was announced, then refused {REFUSED}",
        "/pumps: stopped at page 2 of 3",
    ]
    assert (listing.pages, listing.moved) == (2, True)
