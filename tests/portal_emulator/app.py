"""One request, start to finish, independent of sockets: record, hook, rate limit, latency,
faults, authentication, scope, endpoint.

Order of checks (choice): the rate limiter decides at arrival; then the ``on_request`` hook runs
and the simulated latency elapses (both outside the lock, so concurrent requests overlap and the
hook may mutate the fleet); then an injected fault, if one matches, replaces the answer; then, for
paths under /v1, authentication (so a broken key gets 500 even on unknown /v1 paths), then routing
(404), scope (403) and the endpoint; right after an answer, under the lock it was built under,
the listing churn (``churn.py``) changes the fleet if one is set. Paths outside /v1 answer 404
without authentication. Any method other than GET answers 404 not_found (there is no such route
in the reference).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from .api import PortalApi
from .churn import Churn
from .errors import ApiError
from .faults import FaultQueue, fault_response
from .fleet import Fleet
from .keys import KeyRing, require_scope
from .ratelimit import FixedWindowLimiter, RateLimit
from .records import RequestInfo, RequestLog
from .response import Response, error_response, json_response
from .routes import OTHER, Route, match

RequestHook = Callable[[RequestInfo], object]


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    target: str  # raw request target: path plus optional "?query"
    authorization: str | None


class PortalApp:
    """The emulator's behaviour; ``server.py`` only moves bytes. Shares ``fleet.lock``."""

    def __init__(
        self,
        fleet: Fleet,
        keyring: KeyRing,
        *,
        latency: float = 0.0,
        rate_limit: RateLimit | None = None,
        max_limit: int = 100,
        keep_records: bool = True,
    ) -> None:
        self.fleet = fleet
        self.lock = fleet.lock
        self.keyring = keyring
        self.api = PortalApi(fleet, max_limit)
        self.latency = latency
        self.rate_limit = rate_limit
        self.faults = FaultQueue()
        self.log = RequestLog(keep_records)
        self.errors: list[BaseException] = []  # unexpected exceptions (hook or emulator bugs)
        self.hook: RequestHook | None = None
        self.churn: Churn | None = None  # changes the fleet right after listing answers
        self.rate_limited_per_window: dict[int, int] = {}
        self.origin = time.monotonic()
        self._limiter: FixedWindowLimiter | None = None
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)

    def begin(self, origin: float) -> None:
        """Called when the server starts listening: rate-limit windows start here."""
        with self.lock:
            self.origin = origin
            self.rate_limited_per_window = {}
            self._limiter = None
            if self.rate_limit is not None:
                self._limiter = FixedWindowLimiter(self.rate_limit, origin)
                self.rate_limited_per_window = self._limiter.rejected_per_window

    def reset_counts(self) -> None:
        with self.lock:
            self.log.clear()
            self.rate_limited_per_window.clear()

    def __call__(self, request: IncomingRequest) -> Response:
        arrival = time.monotonic()
        path, _, raw_query = request.target.partition("?")
        route = match(path)
        template = route.template if route is not None else OTHER
        query = parse_qs(raw_query, keep_blank_values=True)
        with self.lock:
            # Unique per request and per emulator instance ("req_" + 6 hex + 8 hex counter).
            request_id = f"req_{self._id_prefix}{next(self._ids):08x}"
            retry_after = self._limiter.check(arrival) if self._limiter is not None else None
            hook = self.hook
        info = RequestInfo(
            time=arrival - self.origin,
            method=request.method,
            path=path,
            query={name: values[0] for name, values in query.items()},
            template=template,
            request_id=request_id,
        )
        key = self.keyring.identify(request.authorization)
        try:
            if hook is not None:
                hook(info)
            if self.latency > 0:
                time.sleep(self.latency)
            response = self._answer(request, path, route, query, request_id, retry_after)
        except Exception as exc:  # a failing hook or an emulator bug: answer, and keep it for tests
            with self.lock:
                self.errors.append(exc)
            response = error_response(500, "internal_error", f"Emulator error: {exc!r}", request_id)
        with self.lock:
            self.log.add(info, response.status, key.name if key is not None else None)
        return response

    def _answer(
        self,
        request: IncomingRequest,
        path: str,
        route: Route | None,
        query: dict[str, list[str]],
        request_id: str,
        retry_after: int | None,
    ) -> Response:
        if retry_after is not None:
            message = f"Too many requests; retry in {retry_after}s"
            headers = {"Retry-After": str(retry_after)}
            return error_response(429, "rate_limited", message, request_id, headers)
        template = route.template if route is not None else OTHER
        with self.lock:
            fault = self.faults.take(template, request.target)
        if fault is not None:
            return fault_response(fault, request_id)
        try:
            no_route = ApiError(404, "not_found", f"No route for {request.method} {path}")
            if not (path == "/v1" or path.startswith("/v1/")):
                raise no_route
            key = self.keyring.authenticate(request.authorization)
            if route is None or request.method != "GET":
                raise no_route
            require_scope(key, route.template)
            with self.lock:
                body = self.api.handle(route, query, key)
                if self.churn is not None:
                    # Under the lock the answer was built under: the next request, whoever
                    # sends it, is the first to see the change.
                    self.churn.after(self.fleet, route, query, self.api.max_limit)
        except ApiError as err:
            return error_response(err.status, err.code, err.message, request_id, err.headers)
        return json_response(200, body, request_id)
