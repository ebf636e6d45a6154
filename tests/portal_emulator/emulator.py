"""``PortalEmulator``: the facade tests and benchmarks use (start/stop, keys, clock, counters,
fault injection, request hook)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType

from .app import PortalApp, RequestHook
from .churn import Churn, RemoveFrom
from .faults import Fault, FaultKind
from .fleet import Fleet
from .keys import KeyRing, Keys
from .ratelimit import RateLimit
from .records import RequestRecord
from .server import PortalHTTPServer


class PortalEmulator:
    """A real HTTP server on ``host:port`` (port 0: ephemeral) serving ``fleet``.

    ``latency`` is slept per request in the handler thread (concurrent requests overlap).
    ``keep_records=False`` stops appending to ``requests`` (counters still run): long benchmarks.
    """

    def __init__(
        self,
        fleet: Fleet,
        latency: float = 0.0,
        rate_limit: RateLimit | None = None,
        max_limit: int = 100,
        port: int = 0,
        host: str = "127.0.0.1",
        keep_records: bool = True,
    ) -> None:
        self.fleet = fleet
        self.host = host
        self.port = port
        self.keyring = KeyRing(fleet.seed)
        self.app = PortalApp(
            fleet,
            self.keyring,
            latency=latency,
            rate_limit=rate_limit,
            max_limit=max_limit,
            keep_records=keep_records,
        )
        self._server: PortalHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Listen and serve in a background thread; returns the base URL (no trailing slash)."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        server = PortalHTTPServer((self.host, self.port), self.app)
        self.app.begin(time.monotonic())
        host, port = server.server_address[:2]
        self._url = f"http://{host}:{port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"portal-emulator-{port}",
        )
        self._thread.start()
        return self._url

    def stop(self) -> None:
        """Stop accepting, drop kept-alive connections, release the port. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> PortalEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("emulator not started")
        return self._url

    @property
    def keys(self) -> Keys:
        return self.keyring.keys

    # ----------------------------------------------------------------- observation
    @property
    def counts(self) -> Counter[str]:
        """Requests received per endpoint template ("other" for unknown paths), any status."""
        return self.app.log.counts

    @property
    def status_counts(self) -> Counter[tuple[str, int]]:
        return self.app.log.status_counts

    @property
    def requests(self) -> list[RequestRecord]:
        return self.app.log.requests

    @property
    def rate_limited_per_window(self) -> dict[int, int]:
        """429s answered per window index (window = int(seconds since start // window))."""
        return self.app.rate_limited_per_window

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions raised while answering (e.g. by an on_request hook)."""
        return self.app.errors

    def reset_counts(self) -> None:
        """Clears counts, status_counts, requests and rate_limited_per_window."""
        self.app.reset_counts()

    # ----------------------------------------------------------------- simulated world
    @property
    def now(self) -> datetime:
        return self.fleet.clock.now

    def advance(self, seconds: float) -> datetime:
        """Moves the simulated clock only (no pump reports); returns the new now."""
        with self.fleet.lock:
            return self.fleet.clock.advance(seconds)

    def report(self, pump_ids: Iterable[str], water: float | None = None) -> None:
        """The pumps report at ``now``: last_seen = last_heartbeat = now; total_water_delivered +=
        ``water`` (default: a deterministic 5.0-50.0); uptime += time since the previous report
        (nothing if the clock went backwards); total_sessions += 1; battery soc moves by +-1..3
        with voltage following; a new current_pressure; today's water/snapshot count grow."""
        self.fleet.report(pump_ids, self.now, water)

    # ----------------------------------------------------------------- test controls
    def inject(
        self,
        template: str,
        status: int = 500,
        code: str = "internal_error",
        times: int | None = 1,
        kind: FaultKind = "error",
        retry_after: int | float | None = None,
        request_id_header: bool = True,
        match: str | None = None,
        probability: float | None = None,
    ) -> None:
        """The next ``times`` requests for ``template`` (``"*"``: any; ``times=None``: until
        ``clear_faults``) whose target (path + query) contains ``match`` get a fault instead;
        with ``probability``, only that share of them (a flaky portal)."""
        fault = Fault(
            template, kind, status, code, times, retry_after, request_id_header, match, probability
        )
        with self.fleet.lock:
            self.app.faults.add(fault)

    def clear_faults(self) -> None:
        with self.fleet.lock:
            self.app.faults.clear()

    def churn_listing(
        self,
        template: str = "/v1/pumps",
        *,
        every: int = 1,
        inserts: int = 1,
        removals: int = 0,
        remove: RemoveFrom = "served",
        times: int | None = None,
    ) -> Churn:
        """From now on, right after every ``every``-th answered page of ``template``
        (``/v1/pumps`` or ``/v1/users/:userId/summary``), remove ``removals`` pumps (``remove``:
        from the page just served, the page after it, or the end of the listing) and insert
        ``inserts`` new ones at the front; ``times`` changes at most (None: until
        ``clear_churn``). Returns the ``Churn``: its ``events``, ``inserted`` and ``removed`` are
        the ground truth. See ``churn.py``."""
        churn = Churn(template, every, inserts, removals, remove, times)
        with self.fleet.lock:
            self.app.churn = churn
        return churn

    def clear_churn(self) -> None:
        with self.fleet.lock:
            self.app.churn = None

    def on_request(self, callback: RequestHook | None) -> None:
        """``callback(info)`` runs before each request is answered, without the lock held (so it
        may mutate the fleet); None removes it."""
        with self.fleet.lock:
            self.app.hook = callback
