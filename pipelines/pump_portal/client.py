"""HTTP client of the Pump Portal Integration API v1. Knows URLs, auth, pagination, errors and
pacing; knows nothing of dlt.

Why not dlt's RESTClient: the sync needs a budget shared by every worker (pacing.py), the API's
error table mapped to typed errors with request ids, bodies that are not JSON retried like a 5xx,
and listings that report whether they were complete — none of which RESTClient's per-thread
retries and paginators give.

Why urllib3 and not `requests` (#13): the client already does itself what a `requests.Session`
adds on top of urllib3 (retries, same-origin redirects, the key added at send time), so the
session was only per-call CPU: preparing the request, merging environment settings, hooks, the
cookie jar, building a Response — about 0.4 ms of a GET's 1.1 ms in a microbenchmark, the bulk of
the detail workers' time in a profile of a full sync. One urllib3 connection pool for the
portal's origin (thread-safe, keep-alive, sized for the workers), with urllib3's retries and
redirects off, does the sending. What requests gave that matters is kept: nothing read from the
environment (no proxy, .netrc or CA bundle: the key goes to base_url only), TLS verified against
certifi's bundle, timeouts (connect, read), bodies decoded as requests decoded JSON.
"""

from __future__ import annotations

import collections
import concurrent.futures
import email.utils
import ipaddress
import json
import logging
import math
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import certifi
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.ssl_ import create_urllib3_context

from . import records, settings
from .errors import (
    InvalidRequest,
    InvalidResponse,
    ItemNotFound,
    PortalError,
    PortalUnavailable,
    PortalUnreachable,
    RateLimited,
    Stopped,
    error_class_for,
)
from .pacing import RequestPacer
from .pagination import Listing, ListingRead, Page, PageWalk

__all__ = ["Listing", "ListingRead", "Page", "PageWalk", "PortalClient"]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

# A 400 invalid_pagination on page 1 halves the page size down to this, then fails the run.
MIN_PAGE_SIZE = 10


# What requests' Session sent besides the key (urllib3 decodes every encoding it advertises).
_HEADERS = {
    "User-Agent": "pump-portal-sync/0.1",
    "Accept-Encoding": urllib3.util.make_headers(accept_encoding=True)["accept-encoding"],
    "Accept": "application/json",
    "Connection": "keep-alive",
}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Exceptions of one send that mean "no usable HTTP answer"; urllib3's all derive from HTTPError,
# and socket errors are OSError.
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class Answer:
    """One HTTP answer as `_interpret` reads it: status, reason, case-insensitive headers, the
    whole body, the URL asked (for relative `Location`s), and requests' `is_redirect`/`json()`."""

    __slots__ = ("content", "headers", "reason", "status_code", "url")

    def __init__(self, raw: urllib3.BaseHTTPResponse, url: str) -> None:
        self.status_code: int = raw.status
        self.reason: str | None = raw.reason
        self.headers: urllib3.HTTPHeaderDict = raw.headers
        self.content: bytes = raw.data or b""
        self.url = url

    @property
    def is_redirect(self) -> bool:
        return self.status_code in _REDIRECT_STATUSES and "Location" in self.headers

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not. Decoded by the charset the Content-Type
        declares, else by JSON's own UTF-8/16/32 detection (requests read text/* without a charset
        as ISO-8859-1: mojibake for a JSON body); bytes that do not decode become U+FFFD instead
        of failing, as with requests."""
        encoding = _charset(self.headers.get("Content-Type")) or json.detect_encoding(self.content)
        try:
            text = str(self.content, encoding, errors="replace")
        except LookupError:  # an unknown charset
            text = str(self.content, "utf-8", errors="replace")
        return json.loads(text)

    def __repr__(self) -> str:
        return f"<Answer [{self.status_code}]>"


def _charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip(" '\"") or None
    return None


@dataclass
class ClientStats:
    """What the client did, for the run summary and the `sync_runs` table."""

    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    rate_limited: int = 0
    #: Wall-clock seconds the client stood paused after 429s (a pause counts once, not per worker).
    rate_limit_wait_seconds: float = 0.0
    retries: int = 0
    #: `api_version` values other than 1.x seen in answers (their data is still read as v1).
    unexpected_api_versions: set[str] = field(default_factory=set)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class PortalClient:
    """Thread-safe: one connection pool and one pacer shared by every worker."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        page_size: int = settings.DEFAULT_PAGE_SIZE,
        timeout: tuple[float, float] = settings.DEFAULT_TIMEOUT,
        max_retries: int = settings.DEFAULT_MAX_RETRIES,
        backoff_seconds: float = settings.DEFAULT_BACKOFF_SECONDS,
        retry_seconds: float = settings.DEFAULT_RETRY_SECONDS,
        pacer: RequestPacer | None = None,
        pool_size: int = settings.DEFAULT_CONCURRENCY,
        max_retry_after: float = settings.MAX_RETRY_AFTER_SECONDS,
        allow_insecure_http: bool = False,
        read_ahead: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) origin, got {base_url!r}")
        if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
            raise ValueError(
                f"base_url {parts.scheme}://{parts.netloc} is plain HTTP to a remote host: the API "
                "key would cross the network in clear text. Use https://, or set "
                "allow_insecure_http = true under [sources.pump_portal] if you really mean it."
            )
        if not api_key:
            raise ValueError("api_key is empty")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self._api_key = api_key
        self.page_size = page_size
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.retry_seconds = retry_seconds
        self.max_retry_after = max_retry_after
        self.pacer = pacer or RequestPacer()
        # Default: the workers' number less the page being read (settings.py).
        self.read_ahead = max(0, max(pool_size, 1) - 1 if read_ahead is None else read_ahead)
        # Set when the run must stop (SIGTERM/SIGINT): no new request starts, no wait goes on.
        self.stop = stop or threading.Event()
        self._page_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.stats = ClientStats()
        self._stats_lock = threading.Lock()
        # Every worker and the page read-ahead share the connections; more than that in flight
        # (block=False) opens extra ones that are not kept, as requests' adapter did.
        self._pool_size = max(pool_size, 1) + self.read_ahead
        self._timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        self._pool: urllib3.HTTPConnectionPool | None = None

    def _connections(self) -> urllib3.HTTPConnectionPool:
        """The keep-alive pool of the portal's origin, opened on first use (and after `close`).
        Nothing of the environment is read (proxies, .netrc, CA bundles): the key goes to
        base_url only. Retries and redirects are ours (`get`, `_send`), never urllib3's."""
        pool = self._pool
        if pool is None:
            with self._stats_lock:
                if self._pool is None:
                    options: dict[str, Any] = {}
                    if self.origin.startswith("https:"):
                        options = {"ssl_context": _tls_context(), "cert_reqs": "CERT_REQUIRED"}
                    self._pool = urllib3.connection_from_url(
                        self.origin,
                        maxsize=self._pool_size,
                        block=False,
                        retries=False,
                        **options,
                    )
                pool = self._pool
        return pool

    def close(self) -> None:
        """Shut the read-ahead pool and the HTTP connections; a later request opens them
        again."""
        with self._stats_lock:
            if self._page_pool is not None:
                self._page_pool.shutdown(wait=False, cancel_futures=True)
                self._page_pool = None
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _pages_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._stats_lock:
            if self._page_pool is None:
                self._page_pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=max(1, self.read_ahead), thread_name_prefix="portal-pages"
                )
            return self._page_pool

    # --- endpoints -------------------------------------------------------------------------

    def statistics(self) -> JSON:
        return self.get(settings.ENDPOINT_STATS)

    def delegated_users(self) -> JSON:
        return self.get(settings.ENDPOINT_DELEGATED_USERS)

    def pump_metadata(self, pump_id: str) -> JSON:
        return self.get(settings.ENDPOINT_PUMP_METADATA.format(pump_id=quote(pump_id, safe="")))

    def pump_summary(self, pump_id: str) -> JSON:
        return self.get(settings.ENDPOINT_PUMP_SUMMARY.format(pump_id=quote(pump_id, safe="")))

    def pump_pages(self, listing: Listing) -> Iterator[Page]:
        return self.pages(settings.ENDPOINT_PUMPS, listing)

    def pump_listing(self, max_walks: int = settings.MAX_LISTING_WALKS) -> ListingRead:
        """GET /v1/pumps, walked again while it moves: iterate `.pages`, then read `.rows()`."""
        return self.listing(settings.ENDPOINT_PUMPS, max_walks)

    def user_summary_listing(
        self, user_id: int, max_walks: int = settings.MAX_LISTING_WALKS
    ) -> ListingRead:
        """GET /v1/users/:userId/summary, walked again while it moves (see `pump_listing`)."""
        return self.listing(settings.ENDPOINT_USER_SUMMARY.format(user_id=user_id), max_walks)

    # --- pagination ------------------------------------------------------------------------

    def listing(self, path: str, max_walks: int = settings.MAX_LISTING_WALKS) -> ListingRead:
        """A listing read to a consistent end: its `pages` walk `path` (every page of every walk,
        each `Page.walk` numbered) until a walk saw the listing hold still, at most `max_walks`
        walks (pagination.ListingRead); after the iteration, `rows()` and `listing` say what the
        listing is. A still listing costs one walk; one that moves, a walk more per move seen."""
        read = ListingRead(max_walks)

        def walks() -> Iterator[Page]:
            while True:
                walk = read.start(path, self.page_size)
                yield from self._pages(path, walk)
                if not read.end(walk):
                    return

        read.pages = walks()
        return read

    def pages(self, path: str, listing: Listing) -> Iterator[Page]:
        """Yield pages 1, 2, ... of one walk to the listing's end; record completeness in
        `listing`. The stop and completeness rules are `pagination.PageWalk`'s: has_next, else
        pages or total, else the page size; never loops, never fails the run on pagination
        alone. One walk only: `listing()` walks again when the listing moved."""
        return self._pages(path, PageWalk(path, self.page_size, listing))

    def _pages(self, path: str, walk: PageWalk) -> Iterator[Page]:
        # Pages announced by `pagination.pages` are requested ahead, `read_ahead` at a time, and
        # still handled strictly in order: 100 pages at 20 ms no longer cost 2 s of waiting.
        ahead: dict[int, concurrent.futures.Future[JSON]] = {}
        try:
            yield from self._walk(path, walk, ahead)
        finally:
            for future in ahead.values():
                future.cancel()

    def _walk(
        self, path: str, walk: PageWalk, ahead: dict[int, concurrent.futures.Future[JSON]]
    ) -> Iterator[Page]:
        def fetch(page: int, limit: int) -> JSON:
            future = ahead.pop(page, None)
            if future is not None:
                return future.result()
            return self.get(path, {"page": page, "limit": limit})

        while walk.has_next_page:
            number = walk.number
            try:
                body = fetch(number, walk.limit)
            except (InvalidRequest, ItemNotFound) as error:
                if number == 1:
                    smaller = self._smaller_limit(error, walk.limit)
                    if smaller is not None:
                        walk.limit = smaller
                        continue
                    raise
                # A page past the end may be answered 400 invalid_pagination (or 404).
                walk.refused(error)
                break
            items = walk.update(body)
            if items is None:
                break
            for later in walk.ahead(self.read_ahead):
                if later not in ahead:
                    query = {"page": later, "limit": walk.limit}
                    ahead[later] = self._pages_pool().submit(self.get, path, query)
            yield Page(items=items, body=body, number=number, walk=walk.index)
        walk.finish()

    def _smaller_limit(self, error: PortalError, refused: int) -> int | None:
        """After a 400 invalid_pagination on page 1: the next limit to try, or None to give up.

        The reference allows a server to reject a `limit` above its maximum instead of capping
        it. A configured page size above the default is the operator's setting: refused, it fails
        the run (InvalidRequest names it). The default, the reference's own example, refused means
        a stricter server: the limit halves, down to MIN_PAGE_SIZE, and later listings start there.
        """
        if not isinstance(error, InvalidRequest) or error.code not in (None, "invalid_pagination"):
            return None
        if refused > settings.DEFAULT_PAGE_SIZE:
            return None
        smaller = refused // 2
        if smaller < MIN_PAGE_SIZE:
            return None
        with self._stats_lock:
            self.page_size = min(self.page_size, smaller)
        logger.warning("the portal refused limit=%d; trying %d", refused, smaller)
        return smaller

    # --- one request ------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> JSON:
        """GET /v1<path>; the JSON object, or a typed `PortalError`.

        429 waits `Retry-After` (shared by all workers) and never counts as an attempt;
        5xx, connection errors and non-JSON bodies retry with backoff and jitter while the
        request's time budget (`retry_seconds`) lasts, at most `max_retries` times.
        """
        url = f"{self.origin}{settings.API_PREFIX}{path}"
        endpoint = self._display(path, params.get("page") if params else None)
        template = _template(path)
        began = time.monotonic()
        attempt = 0
        rate_limited = 0
        while True:
            self._raise_if_stopped()
            waited = self.pacer.acquire()
            if waited:
                self._add_wait(waited)
            self._raise_if_stopped()
            self._count(template)
            try:
                response = self._send(url, params)
            except _TRANSPORT_ERRORS as exc:
                failure: PortalError = PortalUnreachable(
                    self.scrub(connection_failure(exc, self.origin)), endpoint=endpoint
                )
            else:
                outcome = self._interpret(response, endpoint)
                if isinstance(outcome, dict):
                    return outcome
                failure = outcome
                if isinstance(failure, RateLimited):
                    rate_limited += 1
                    if rate_limited > settings.MAX_RATE_LIMITED_ATTEMPTS:
                        raise failure
                    delay = self._retry_after(response)
                    with self._stats_lock:
                        self.stats.rate_limited += 1
                    logger.info(
                        "rate limited on GET %s, everyone waits %.1f s [request id %s]",
                        endpoint,
                        delay,
                        failure.request_id,
                    )
                    self.pacer.rate_limited(delay)
                    continue
                if not _is_transient(failure):
                    raise failure
            attempt += 1
            delay = self._backoff(attempt)
            if attempt > self.max_retries or time.monotonic() - began + delay > self.retry_seconds:
                raise failure
            with self._stats_lock:
                self.stats.retries += 1
            # INFO, not WARNING: a flaky portal retries hundreds of requests a run; what still
            # fails after its retries is reported once, by the caller.
            logger.info("GET %s failed (%s), retry %d in %.1f s", endpoint, failure, attempt, delay)
            self.pause(delay)

    def _backoff(self, attempt: int) -> float:
        """Doubling waits, capped, half of each random: workers that failed together (a portal
        restart) do not all come back in the same instant."""
        ceiling: float = min(
            self.backoff_seconds * 2 ** (attempt - 1), settings.MAX_BACKOFF_SECONDS
        )
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _raise_if_stopped(self) -> None:
        if self.stop.is_set():
            raise Stopped("the run was asked to stop; no new request is started")

    def pause(self, seconds: float) -> None:
        """Sleep, but wake and raise `Stopped` as soon as the run is asked to stop."""
        if self.stop.wait(seconds):
            self._raise_if_stopped()

    def _send(self, url: str, params: dict[str, Any] | None) -> Answer:
        """GET that follows redirects only within the portal's origin.

        A redirect elsewhere is answered as an error instead of followed: the key must never
        reach another origin, not even as a header a client would strip on the way.
        """
        if params:
            url = f"{url}?{_query(params)}"
        response = self._get(url)
        for _ in range(5):
            if not response.is_redirect:
                return response
            target = urljoin(response.url, response.headers.get("Location", ""))
            parts = urlsplit(target)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                return response
            response = self._get(target)
        return response

    def _get(self, url: str) -> Answer:
        """One GET of `url` (on the portal's origin), the body read whole. The key joins the
        headers here, in a dict that lives for this call only."""
        parts = urlsplit(url)
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
        headers = {**_HEADERS, "Authorization": f"Bearer {self._api_key}"}
        raw = self._connections().urlopen(
            "GET",
            target,
            headers=headers,
            retries=False,
            redirect=False,
            timeout=self._timeout,
            preload_content=True,
        )
        return Answer(raw, url)

    def _interpret(self, response: Answer, endpoint: str) -> JSON | PortalError:
        request_id = response.headers.get("X-Request-ID")
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if 200 <= response.status_code < 300:
            if isinstance(body, dict):
                self._check_version(body.get("api_version"), endpoint)
                return body
            return InvalidResponse(
                f"HTTP {response.status_code} with a body that is not a JSON object "
                f"({response.headers.get('Content-Type', 'no content type')}, "
                f"{len(response.content)} bytes)",
                status=response.status_code,
                request_id=request_id,
                endpoint=endpoint,
            )
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message")
        if not isinstance(message, str) or not message:
            message = response.reason or f"HTTP {response.status_code}"
        request_id = request_id or records.to_id(error.get("request_id"))
        cls = error_class_for(response.status_code, code)
        if not code and response.is_redirect:
            location = urlsplit(urljoin(response.url, response.headers.get("Location", "")))
            message = (
                f"redirected to {location.scheme}://{location.netloc}, another origin; not "
                f"followed, so the API key stays with {self.origin}"
            )
        return cls(
            self.scrub(message),
            status=response.status_code,
            code=self.scrub(code) if code else None,
            request_id=self.scrub(request_id) if request_id else None,
            endpoint=endpoint,
        )

    def _check_version(self, version: Any, endpoint: str) -> None:
        """Another `api_version` under /v1 is noted, not fatal: the path promises v1 shapes, and
        every field is read defensively; refusing would stop the sync over a label."""
        if version is None or str(version).strip().lower().removeprefix("v").split(".")[0] == "1":
            return
        text = self.scrub(str(version))
        with self._stats_lock:
            if text in self.stats.unexpected_api_versions:
                return
            self.stats.unexpected_api_versions.add(text)
        logger.warning("GET %s answered api_version %r; read as v1", endpoint, text)

    def _retry_after(self, response: Answer) -> float:
        value = response.headers.get("Retry-After", "").strip()
        seconds: float | None = None
        if value:
            try:
                seconds = float(value)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(value)
                    seconds = when.timestamp() - time.time()
                except (TypeError, ValueError, IndexError):
                    seconds = None
        if seconds is None or not math.isfinite(seconds):
            seconds = settings.DEFAULT_RETRY_AFTER_SECONDS
        return min(max(seconds, 0.05), self.max_retry_after)

    def scrub(self, text: str) -> str:
        """Remove the API key from text that came from elsewhere (server messages, exceptions)."""
        return text.replace(self._api_key, "***") if self._api_key in text else text

    def _count(self, template: str) -> None:
        with self._stats_lock:
            self.stats.requests[template] += 1

    def _add_wait(self, seconds: float) -> None:
        """A worker waited `seconds` in the pacer. Every worker waits out the same 429 pause
        (and the budget), so summing their waits counted one pause once per worker: the stat is
        the pacer's wall-clock time paused after 429s instead."""
        with self._stats_lock:
            self.stats.rate_limit_wait_seconds = self.pacer.paused_seconds

    @staticmethod
    def _display(path: str, page: Any = None) -> str:
        shown = f"{settings.API_PREFIX}{path}"
        return f"{shown}?page={page}" if page is not None else shown

    def __repr__(self) -> str:
        return f"PortalClient({self.origin!r})"


def _template(path: str) -> str:
    """/pumps/pump-001/summary -> /v1/pumps/:pumpId/summary, for per-endpoint request counts."""
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "pumps":
        parts[1] = ":pumpId"
    elif len(parts) == 3 and parts[0] == "users":
        parts[1] = ":userId"
    return settings.API_PREFIX + "/" + "/".join(parts)


def _query(params: dict[str, Any]) -> str:
    """The query string as requests encoded it: None values left out, sequences repeated."""
    return urlencode([(k, v) for k, v in params.items() if v is not None], doseq=True)


_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """One context for every client (loading the CA bundle costs milliseconds): certificates
    verified against certifi's bundle, as requests did, not the system's or the environment's."""
    global _tls
    if _tls is None:
        context = create_urllib3_context()
        context.load_verify_locations(certifi.where())
        _tls = context
    return _tls


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_transient(error: PortalError) -> bool:
    return isinstance(error, PortalUnavailable | InvalidResponse)


def connection_failure(error: BaseException, origin: str) -> str:
    """One line naming the host and what went wrong, instead of urllib3's nested repr."""
    parts = urlsplit(origin)
    causes = list(_causes(error))
    if any(isinstance(c, socket.gaierror) for c in causes):
        return f"cannot resolve host {parts.hostname!r} (unknown host)"
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return f"connection to {parts.netloc} refused (nothing listens on that port)"
    timeout = _timeout_kind(causes)
    if timeout:
        return f"{parts.netloc} did not answer in time ({timeout})"
    if any(isinstance(c, ssl.SSLError) for c in causes):
        return f"TLS with {parts.netloc} failed: {str(causes[-1])[:160]}"
    return f"cannot reach {parts.netloc}: {type(causes[-1]).__name__}: {str(causes[-1])[:160]}"


def _timeout_kind(causes: list[BaseException]) -> str | None:
    """ReadTimeout or ConnectTimeout (the names requests gave them), None if no timeout. urllib3
    makes every failed connect a ConnectTimeoutError subclass (NewConnectionError): not those."""
    for cause in causes:
        if isinstance(cause, ReadTimeoutError):
            return "ReadTimeout"
        if isinstance(cause, ConnectTimeoutError) and not isinstance(cause, NewConnectionError):
            return "ConnectTimeout"
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what caused it; urllib3 keeps the socket error in `reason` or `args`."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending and len(seen) < 20:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(current.args)
        pending += [link for link in linked if isinstance(link, BaseException)]
