"""Typed errors of the Pump Portal API: one class per row of the reference's error table.

Every error carries the HTTP status, the API's `error.code`, its message and the request id
(`X-Request-ID`, or `error.request_id` when the header is absent), so a failed run can name the
exact request to quote to the portal's support. None of them ever holds the API key: the client
scrubs it from any text that came back from the server before an error is built.
"""

from __future__ import annotations


class PortalError(Exception):
    """An answer of the portal that the sync cannot use as data."""

    #: What the operator should check; shown under the one-line failure message.
    hint: str = "See the request id in the portal's logs."

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.endpoint = endpoint

    def __str__(self) -> str:
        what = self.code or (f"HTTP {self.status}" if self.status else type(self).__name__)
        parts = [what]
        if self.status and self.code:
            parts.append(f"(HTTP {self.status})")
        if self.endpoint:
            parts.append(f"on GET {self.endpoint}")
        text = " ".join(parts) + f": {self.message}"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text


class AuthenticationError(PortalError):
    """401 `unauthorized` (missing or bad Bearer token) or `invalid_api_key` (unknown, revoked)."""

    hint = (
        "Check the API key in SOURCES__PUMP_PORTAL__API_KEY or .dlt/secrets.toml "
        "([sources.pump_portal] api_key): it is missing, mistyped or revoked."
    )


class InsufficientScope(PortalError):
    """403 `insufficient_scope`: the key lacks the scope for this endpoint (legacy keys)."""

    hint = "The key lacks a read scope for this endpoint; ask for a key with scope `read`."


class NoDelegatedUsers(PortalError):
    """403 `no_delegated_users`: the integration has no portal users bound to it."""

    hint = "Bind portal users to the integration to see their pumps."


class ItemForbidden(PortalError):
    """403 `forbidden`: no access to that pump, or the user is not (or no longer) delegated."""


class ItemNotFound(PortalError):
    """404 `not_found`: no metadata or summary for that pump."""


class InvalidRequest(PortalError):
    """400 `invalid_pagination` / `invalid_user_id`: a bug or a bad setting, never transient."""

    hint = (
        "The portal rejected a request parameter: check page_size under [sources.pump_portal], "
        "or report the request id as a bug."
    )


class RateLimited(PortalError):
    """429 `rate_limited` that kept coming after every wait the client was willing to make."""

    hint = "The portal kept rate limiting; lower `concurrency` or `requests_per_window`."


class PortalUnavailable(PortalError):
    """5xx (`internal_error`: auth lookup failed), connection errors or timeouts, after retries."""

    hint = (
        "The portal failed or was unreachable after every retry; check base_url and the "
        "portal's status, then run again (nothing was lost: state did not advance)."
    )


class PortalUnreachable(PortalUnavailable):
    """No HTTP answer at all after retries: unknown host, refused connection, timeout, TLS."""

    hint = (
        "Check base_url (SOURCES__PUMP_PORTAL__BASE_URL or [sources.pump_portal] base_url in "
        ".dlt/config.toml): scheme, host and port, and that this machine can reach it "
        "(DNS, firewall, proxy). Nothing was lost: state did not advance."
    )


class InvalidResponse(PortalError):
    """A 2xx whose body is not the JSON the reference describes, after retries."""

    hint = (
        "The portal answered with something that is not API JSON (a proxy page?); check base_url."
    )


class RedirectRefused(PortalError):
    """A redirect to another origin, answered as an error so the key never follows it."""

    hint = "Set base_url to the origin the portal really serves the API on (scheme, host, port)."


class Stopped(Exception):
    """The run was asked to stop (SIGTERM or SIGINT): no new request is started."""


# Maps (status, code) of the reference's error table to the class that represents it.
_BY_CODE: dict[str, type[PortalError]] = {
    "invalid_pagination": InvalidRequest,
    "invalid_user_id": InvalidRequest,
    "unauthorized": AuthenticationError,
    "invalid_api_key": AuthenticationError,
    "no_delegated_users": NoDelegatedUsers,
    "insufficient_scope": InsufficientScope,
    "forbidden": ItemForbidden,
    "not_found": ItemNotFound,
    "rate_limited": RateLimited,
    "internal_error": PortalUnavailable,
}

# An unknown or missing code is classified by its status alone.
_BY_STATUS: dict[int, type[PortalError]] = {
    301: RedirectRefused,
    302: RedirectRefused,
    303: RedirectRefused,
    307: RedirectRefused,
    308: RedirectRefused,
    400: InvalidRequest,
    401: AuthenticationError,
    403: ItemForbidden,
    404: ItemNotFound,
    429: RateLimited,
}


def error_class_for(status: int, code: str | None) -> type[PortalError]:
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status >= 500:
        return PortalUnavailable
    return _BY_STATUS.get(status, PortalError)


# A request that still failed after every retry: the portal's trouble, asked again next run.
FAILED_AFTER_RETRIES: tuple[type[PortalError], ...] = (
    PortalUnavailable,
    InvalidResponse,
    RateLimited,
)
# A 403 or 404 where the reference has none: the key cannot read that endpoint.
UNREADABLE: tuple[type[PortalError], ...] = (InsufficientScope, ItemForbidden, ItemNotFound)
