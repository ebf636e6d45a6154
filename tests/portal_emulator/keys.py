"""API keys of the emulated portal, their scopes, and Bearer authentication.

Scope choice (the reference only says older keys may carry ``read:pumps`` or ``read:stats``
instead of ``read``): ``read`` covers everything; ``read:pumps`` covers the pump listing, pump
details and the per-user summary (which is a pump listing); ``read:stats`` covers /v1/stats and
/v1/delegated-users (aggregates only).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass

from .errors import ApiError
from .routes import (
    DELEGATED_USERS,
    PUMP_METADATA,
    PUMP_SUMMARY,
    PUMPS,
    STATS,
    USER_SUMMARY,
)

SCOPE_FOR_TEMPLATE = {
    PUMPS: "read:pumps",
    PUMP_METADATA: "read:pumps",
    PUMP_SUMMARY: "read:pumps",
    USER_SUMMARY: "read:pumps",
    STATS: "read:stats",
    DELEGATED_USERS: "read:stats",
}

KEY_SHAPE = re.compile(r"pcv_[A-Za-z0-9_-]+")
"""Choice: anything after ``pcv_`` made of [A-Za-z0-9_-] is "well-formed"; other tokens are 401
unauthorized, well-formed tokens that are not known (or revoked) are 401 invalid_api_key."""

_BEARER = re.compile(r"Bearer[ ]+(\S+)[ ]*", re.IGNORECASE)


@dataclass(frozen=True)
class ApiKey:
    name: str
    value: str
    scopes: tuple[str, ...]
    revoked: bool = False
    broken: bool = False  # the portal's key lookup fails for this key (500 internal_error)
    has_users: bool = True  # False: the integration has no delegated users

    def allows(self, template: str) -> bool:
        return "read" in self.scopes or SCOPE_FOR_TEMPLATE.get(template) in self.scopes


@dataclass(frozen=True)
class Keys:
    """The key values tests use, by role."""

    full: str
    pumps_only: str
    stats_only: str
    revoked: str
    no_users: str
    broken: str
    no_scope: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class KeyRing:
    """Deterministic keys (``pcv_`` + 32 hex digits from the seed) and their lookup."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"{seed}:keys")

        def new() -> str:
            return f"pcv_{rng.getrandbits(128):032x}"

        specs = [
            ApiKey("full", new(), ("read",)),
            ApiKey("pumps_only", new(), ("read:pumps",)),
            ApiKey("stats_only", new(), ("read:stats",)),
            ApiKey("revoked", new(), ("read",), revoked=True),
            ApiKey("no_users", new(), ("read",), has_users=False),
            ApiKey("broken", new(), ("read",), broken=True),
            ApiKey("no_scope", new(), ("write:settings",)),
        ]
        self._by_value = {key.value: key for key in specs}
        self.keys = Keys(**{key.name: key.value for key in specs})

    def identify(self, authorization: str | None) -> ApiKey | None:
        """The known key in the header, if any, without judging it (for request records)."""
        token = _token(authorization)
        return None if token is None else self._by_value.get(token)

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The usable key for this header, or the reference's 401/500 error."""
        token = _token(authorization)
        if token is None:
            raise ApiError(401, "unauthorized", "Missing or malformed Authorization: Bearer header")
        if not KEY_SHAPE.fullmatch(token):
            raise ApiError(401, "unauthorized", "Bearer token is not a pcv_ API key")
        key = self._by_value.get(token)
        if key is not None and key.broken:
            raise ApiError(500, "internal_error", "Auth lookup failed")
        if key is None:
            raise ApiError(401, "invalid_api_key", "Unknown API key")
        if key.revoked:
            raise ApiError(401, "invalid_api_key", "API key has been revoked")
        return key


def require_scope(key: ApiKey, template: str) -> None:
    if not key.allows(template):
        needed = SCOPE_FOR_TEMPLATE.get(template, "read")
        raise ApiError(403, "insufficient_scope", f"Key lacks scope read (or {needed})")


def _token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    match = _BEARER.fullmatch(authorization)
    return match.group(1) if match else None
