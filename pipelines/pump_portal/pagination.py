"""Paging of GET /v1/pumps and GET /v1/users/:userId/summary: where a walk ends, whether it saw
the whole listing, and when to walk it again. No HTTP here: `client.PortalClient` fetches the
pages (and requests some ahead) and feeds the answers in, so every rule is testable alone.

`PageWalk` is one walk, shaped like dlt's `BasePaginator`: `update(body)` takes the answer for
page `number`, `has_next_page` says whether to ask for the next, and the walk owns the stop rules
(never loop, never fail on pagination alone) and the completeness rules (`finish`).

`ListingRead` is the re-walk policy. The listing is offset-paged (`page`/`limit`) and new pumps
appear at its front while it is read; removals shift the other way. Page n is therefore a slice
of the listing as it was when the portal answered that request, and with pages requested ahead
they are answered in any order: an item can slide onto a page already read (missed) or onto the
next one (read twice). A walk that saw the listing move is walked again, at most
`settings.MAX_LISTING_WALKS` times; the first walk that saw it still is the listing.

Why the checks in `PageWalk.finish` catch every miss the portal's own changes cause (new pumps at
the front, removals anywhere): when every page reports the same `total`, every change between two
answers added as many pumps (at the front, so before every old pump) as it removed, so an old
pump's position can only grow. For it to be missed, pages behind it must have been answered
before it moved and the page it left after; then, below it, some page answered after the move
follows a page answered before it (page 1 is always answered first: read-ahead starts from its
`pagination`), and that later page repeats the tail of the earlier one. A repeat is caught (an
id on two pages, fewer distinct ids than `total`). A count that changed is caught directly.
`tests/test_shifting_listing.py` checks this against thousands of random interleavings, also
with pumps moved to the front (a listing ordered by last report: a removal plus an insert).
What these checks cannot see: between the same two answers, a pump removed before an item and
another inserted after it (not at the front), which keeps every count and page size right. New
pumps come at the front; a pump that comes back (or is newly shared with a user, in that user's
listing) takes its old place and can cause it: the pump it hid then looks vanished (a user's
link ended) for one run, and is back on the next.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import records, settings
from .errors import InvalidResponse

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

# With no page count at all, a walk stops here (flagged) even while full pages keep coming.
MAX_PAGES_WITHOUT_COUNT = 10_000


@dataclass
class Page:
    items: list[JSON]
    body: JSON
    number: int
    #: Which walk of the listing this page belongs to (1 = the first).
    walk: int = 1


@dataclass
class Listing:
    """A paged listing walked to its end; `complete` says every item could have been seen.

    A walk is complete when every page up to `has_next: false` was read, `pagination.total` and
    `pagination.pages` stayed the same on every page, no item was listed on two pages, every page
    before the last was full, and the number of distinct ids equals `total`. Otherwise the listing
    moved while it was read (or the portal paged wrongly) and may have skipped an item: the caller
    must not treat absence as removal then.
    """

    pages: int = 0
    total: int | None = None
    complete: bool = True
    problems: list[str] = field(default_factory=list)
    #: The portal paged wrongly (a page it did not ask for, no end, no listing at all): walking
    #: again would repeat it. False while every problem only says the listing moved.
    server_fault: bool = False
    #: Walks it took (ListingRead); problems of earlier walks that a later walk settled.
    walks: int = 1
    settled: list[str] = field(default_factory=list)

    def flag(self, problem: str, *, moved: bool = False) -> None:
        """Not complete. `moved`: the listing changed while it was paged (walking again helps)."""
        self.complete = False
        self.problems.append(problem)
        if moved:
            logger.info("listing moved while paged: %s", problem)
        else:
            self.server_fault = True
            logger.warning("listing incomplete: %s", problem)

    @property
    def moved(self) -> bool:
        """Incomplete only because the listing moved: another walk can see it whole."""
        return not self.complete and not self.server_fault


class PageWalk:
    """One walk over a listing: pages 1, 2, ... until its end, and what they held.

    The end is read from the first signal present: `has_next`, else `pages` (or `total` over the
    page size), else the page size itself (a full page means "ask for the next", a short or empty
    one ends the listing). The page size is the server's `limit`, or what page 1 held: a server
    may cap the limit we ask for. Never loops and never fails on pagination alone: a server that
    keeps saying `has_next`, repeats pages, answers another page than asked, or rejects a page it
    announced ends the walk with the listing flagged incomplete.
    """

    def __init__(
        self, endpoint: str, limit: int, listing: Listing | None = None, index: int = 1
    ) -> None:
        self.endpoint = endpoint  # the path under /v1, for messages
        self.listing = listing if listing is not None else Listing()
        # One limit for the whole walk, even if another walk shrinks the client's meanwhile:
        # page n covers items (n-1)*limit.. only while the limit stays the same.
        self.limit = limit
        self.index = index
        self.number = 1  # the page to ask for next
        self.has_next_page = True
        #: id -> row, the later copy of an id read twice winning; rows without an id apart.
        self.rows: dict[str, JSON] = {}
        self.anonymous_rows: list[JSON] = []
        self._promised = True  # page 1 always exists
        self._per_page: int | None = None
        self._pages: int | None = None  # the latest page count announced
        self._max_pages: int | None = None
        self._totals: list[int] = []
        self._page_counts: list[int] = []
        self._sizes: dict[int, int] = {}
        self._first_page: dict[str, int] = {}  # id -> the page it was first read on
        self._repeated: list[str] = []
        self._sequence: list[str | None] = []  # ids in the order read, repeats included
        self._last_read = 0
        self._finished = False

    # --- reading ------------------------------------------------------------------------------

    def update(self, body: JSON) -> list[JSON] | None:
        """Take the answer for page `number`; its rows, or None when it is no listing page at all
        (the walk then ends flagged). Sets `has_next_page`, and `number` to the next page."""
        number = self.number
        items, has_items = listing_items(
            body, f"{settings.API_PREFIX}{self.endpoint}?page={number}"
        )
        pagination = body.get("pagination")
        pagination = pagination if isinstance(pagination, dict) else {}
        if not has_items and not pagination:
            self._stop(f"{self.endpoint}: page {number} has neither controllers nor pagination")
            return None
        self.listing.pages = number
        self._last_read = number
        self._sizes[number] = len(items)
        ids: list[str] = []
        for item in items:
            item_key = item_id(item)
            self._sequence.append(item_key)
            if item_key is None:
                # Rows without an id still count toward `total`: one broken row must not leave
                # every listing incomplete (and so every vanished pump unnoticed) forever.
                self.anonymous_rows.append(item)
                continue
            if self._first_page.setdefault(item_key, number) != number:
                self._repeated.append(item_key)
            # An item read twice in one shifting walk: the later copy is the newer.
            self.rows.pop(item_key, None)
            self.rows[item_key] = item
            ids.append(item_key)
        repeats_only = bool(ids) and all(self._first_page[i] < number for i in ids)
        echoed = records.to_count(pagination.get("page"))
        if echoed is not None and echoed != number:
            # The items are still real pumps (duplicates merge on pump_id), but the server did
            # not page as asked: what lies beyond cannot be reached safely.
            self._stop(
                f"{self.endpoint}: asked for page {number}, the portal answered page {echoed}"
            )
            return items
        total = records.to_count(pagination.get("total"))
        if total is not None:
            self.listing.total = total
            self._totals.append(total)
        if self._per_page is None:
            self._per_page = records.to_count(pagination.get("limit")) or len(items) or self.limit
        per_page = self._per_page
        pages = records.to_count(pagination.get("pages"))
        if pages is None and total is not None:
            pages = math.ceil(total / per_page) if per_page > 0 else None
        self._pages = pages
        if pages is not None:
            self._page_counts.append(pages)
            bound = pages + settings.EXTRA_PAGES_ALLOWED
            self._max_pages = bound if self._max_pages is None else max(self._max_pages, bound)

        # Absent, blank or unreadable ("maybe", a list) is no signal: the counts decide then.
        has_next = records.to_bool(pagination.get("has_next"))
        if has_next is not None:
            # `pages` beyond this page despite has_next false: read on, a request is cheap.
            more = has_next or (pages is not None and number < pages)
            self._promised = more
        elif pages is not None:
            more = self._promised = number < pages
        else:
            more, self._promised = bool(items) and len(items) >= (per_page or 1), False
        if not more:
            self.has_next_page = False
        elif not items:
            self._stop(f"{self.endpoint}: page {number} is empty but announces more")
        elif number > 1 and repeats_only:
            # A server that loops; or the listing moved: the counts changed meanwhile (a page's
            # worth of new pumps at the front pushed read rows onto this page), or a server that
            # echoes the page it was asked for (so it pages) returned rows that moved there (a
            # page's worth of pumps moved to the front, in a listing ordered by last report).
            # Walking again settles a move; a server that loops this way loops again, and two
            # like walks end the read (ListingRead.end).
            moved = (
                echoed == number or len(set(self._totals)) > 1 or len(set(self._page_counts)) > 1
            )
            self._stop(f"{self.endpoint}: page {number} repeats only items already seen", moved)
        elif self._max_pages is not None and number >= self._max_pages:
            self._stop(f"{self.endpoint}: has_next still true after {number} pages (pages={pages})")
        elif self._max_pages is None and number >= MAX_PAGES_WITHOUT_COUNT:
            self._stop(f"{self.endpoint}: has_next still true after {number} pages, no page count")
        else:
            self.number = number + 1
        return items

    def refused(self, error: Exception) -> None:
        """Page `number` (not page 1) was answered 400 invalid_pagination or 404: a page past the
        end may be. That ends the walk; flagged when a page count or `has_next` announced it
        (the listing shrank while it was read)."""
        if self._promised:
            self.listing.flag(
                f"{self.endpoint}: page {self.number} was announced, then refused ({error})",
                moved=True,
            )
        self.has_next_page = False

    def ahead(self, depth: int) -> range:
        """Pages announced after the one just read, at most `depth` of them: safe to request now
        (they are still handled strictly in order)."""
        if not self.has_next_page or self._pages is None or depth <= 0:
            return range(0)
        return range(self._last_read + 1, min(self._pages, self._last_read + depth) + 1)

    def _stop(self, problem: str, moved: bool = False) -> None:
        self.listing.flag(problem, moved=moved)
        self.has_next_page = False

    # --- completeness -------------------------------------------------------------------------

    def finish(self) -> Listing:
        """The end-of-walk rules (once): did the listing hold still while it was read?"""
        listing = self.listing
        if self._finished or listing.server_fault:
            self._finished = True
            return listing
        self._finished = True
        where = f"{self.endpoint}:"
        if len(set(self._totals)) > 1:
            # An insert and a removal between pages can leave the count right but the set wrong.
            listing.flag(
                f"{where} pagination.total changed while paging ({_span(self._totals)})", moved=True
            )
        if len(set(self._page_counts)) > 1:
            listing.flag(
                f"{where} pagination.pages changed while paging ({_span(self._page_counts)})",
                moved=True,
            )
        if self._repeated:
            listing.flag(
                f"{where} {len(self._repeated)} item(s) listed on two pages "
                f"(e.g. {self._repeated[0]!r}): the listing shifted under the walk",
                moved=True,
            )
        # Measured against the fullest page read, not `limit`: a server that caps the page size
        # without saying so still fills every page but the last.
        full = max(self._sizes.values(), default=0)
        short = [n for n in range(1, listing.pages) if self._sizes.get(n, 0) < full]
        if short:
            listing.flag(
                f"{where} page(s) {short} held fewer than {full} items before the last page: "
                "items at their end moved to a page already read",
                moved=True,
            )
        seen = len(self.rows) + len(self.anonymous_rows)
        if len(set(self._totals)) == 1 and listing.total is not None and seen != listing.total:
            listing.flag(
                f"{where} {seen} distinct items seen over {listing.pages} page(s), "
                f"pagination.total says {listing.total}",
                moved=True,
            )
        elif listing.total is None and self._pages is not None and listing.pages < self._pages:
            listing.flag(f"{where} stopped at page {listing.pages} of {self._pages}", moved=True)
        return listing

    def signature(self) -> tuple[Any, ...]:
        """What the walk saw, rows' contents aside: two walks alike did not see the listing move."""
        return (
            tuple(self._sequence),
            tuple(self._totals),
            tuple(self._page_counts),
            tuple(self.listing.problems),
        )


class ListingRead:
    """Walks of one listing until one is consistent, at most `max_walks` of them.

    The listing is the rows of the first walk that is complete. Walking stops early when a walk
    shows the portal paging wrongly (walking again would repeat it) or saw exactly what the walk
    before it saw (the same ids in the same order and the same counts: a quirk of the portal,
    not a listing that moved). Without a complete walk the listing is the union of every walk's
    rows, the later walk's row of a pump winning, and it stays incomplete: nothing is marked
    vanished on it, and a pump first seen or gone mid-walk is settled by the next run.

    `pages` is set by the client: iterating it walks (HTTP) and feeds this object.
    """

    def __init__(self, max_walks: int = settings.MAX_LISTING_WALKS) -> None:
        self.max_walks = max(1, max_walks)
        self.walks: list[PageWalk] = []
        self.listing = Listing(complete=False, walks=0)  # until a walk has ended the read
        self.current: PageWalk | None = None
        self.done = False
        self.pages: Iterator[Page] = iter(())

    def start(self, endpoint: str, limit: int) -> PageWalk:
        """The next walk."""
        if self.done:
            raise RuntimeError("the listing was already read")
        self.current = PageWalk(endpoint, limit, index=len(self.walks) + 1)
        return self.current

    def end(self, walk: PageWalk) -> bool:
        """The walk reached its end; True when the listing is to be walked again."""
        outcome = walk.finish()
        self.walks.append(walk)
        if outcome.complete:
            reason = None
        elif outcome.server_fault:
            reason = "the portal paged wrongly, so walking again would not help"
        elif len(self.walks) >= self.max_walks:
            reason = f"it moved during each of {len(self.walks)} walks"
        elif len(self.walks) >= 2 and self.walks[-2].signature() == walk.signature():
            reason = "two walks in a row saw the same items and counts (a quirk of the portal)"
        else:
            logger.info(
                "%s moved while walk %d read it; walking it again", walk.endpoint, walk.index
            )
            return True
        self._settle(reason)
        return False

    def _settle(self, reason: str | None) -> None:
        self.done = True
        last = self.walks[-1].listing
        self.listing = Listing(
            pages=last.pages,
            total=last.total,
            complete=last.complete,
            server_fault=last.server_fault,
            walks=len(self.walks),
        )
        earlier = [p for w in self.walks[:-1] for p in w.listing.problems]
        if last.complete:
            self.listing.settled = earlier
            if earlier:
                logger.info(
                    "%s read whole on walk %d after it moved: %s",
                    self.walks[-1].endpoint,
                    len(self.walks),
                    "; ".join(earlier),
                )
            return
        if len(self.walks) == 1:
            self.listing.problems = list(last.problems)
            return
        self.listing.problems = [
            f"walk {w.index}: {problem}" for w in self.walks for problem in w.listing.problems
        ]
        self.listing.problems.append(
            f"{self.walks[-1].endpoint}: no complete walk in {len(self.walks)}, {reason}; "
            "the listing is what the walks saw together"
        )

    @property
    def complete(self) -> bool:
        return self.done and self.listing.complete

    def rows(self) -> list[JSON]:
        """The listing's rows: the complete walk's, or the union of every walk's (the later
        walk's row of a pump wins; rows without an id from the last walk only)."""
        if not self.walks:
            return []
        last = self.walks[-1]
        if last.listing.complete or len(self.walks) == 1:
            return [*last.rows.values(), *last.anonymous_rows]
        union: dict[str, JSON] = {}
        for walk in self.walks:
            union.update(walk.rows)
        return [*union.values(), *last.anonymous_rows]

    def listed(self) -> tuple[int, int | None]:
        """Distinct ids the walk under way (or the last one) has read so far, and the
        `pagination.total` it was last told."""
        if self.current is None:
            return 0, None
        return len(self.current.rows), self.current.listing.total


def _span(values: list[int]) -> str:
    unique = sorted(set(values))
    return ", ".join(map(str, unique)) if len(unique) <= 4 else f"{unique[0]}..{unique[-1]}"


def listing_items(body: JSON, endpoint: str) -> tuple[list[JSON], bool]:
    """`controllers` of a listing page, and whether the key was there at all.

    An object keyed "0", "1", ... (how some JSON encoders send a list with holes) is read as
    its values; anything else that is not a list is not a listing.
    """
    raw = body.get("controllers")
    if raw is None:
        return [], False
    if isinstance(raw, dict) and all(isinstance(v, dict) for v in raw.values()):
        raw = list(raw.values())
    if not isinstance(raw, list):
        raise InvalidResponse("`controllers` is not a list", endpoint=endpoint)
    return [item for item in raw if isinstance(item, dict)], True


def item_id(item: JSON) -> str | None:
    """A listing row's pump_id as text (123 and "123" are one pump); None when missing or blank."""
    return records.to_id(item.get("pump_id"))
