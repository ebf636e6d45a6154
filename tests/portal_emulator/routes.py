"""Path matching: request path -> endpoint template (the key of ``emu.counts``) and parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

PUMPS = "/v1/pumps"
STATS = "/v1/stats"
DELEGATED_USERS = "/v1/delegated-users"
USER_SUMMARY = "/v1/users/:userId/summary"
PUMP_METADATA = "/v1/pumps/:pumpId/metadata"
PUMP_SUMMARY = "/v1/pumps/:pumpId/summary"
OTHER = "other"
TEMPLATES = (PUMPS, STATS, DELEGATED_USERS, USER_SUMMARY, PUMP_METADATA, PUMP_SUMMARY)


@dataclass(frozen=True)
class Route:
    template: str
    params: dict[str, str] = field(default_factory=dict)


def match(path: str) -> Route | None:
    """The route for a raw (still percent-encoded) path, or None for unknown paths.

    Segments are split before percent-decoding, so a pump id containing an encoded "/" stays one
    id. Choice: one trailing slash is tolerated ("/v1/pumps/" == "/v1/pumps"), like Express's
    default non-strict routing; empty ids ("/v1/pumps//metadata") match nothing.
    """
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "v1":
        return None
    rest = parts[2:]
    if len(rest) == 1:
        for template in (PUMPS, STATS, DELEGATED_USERS):
            if rest[0] == template[4:]:
                return Route(template)
        return None
    if len(rest) == 3 and rest[1]:
        ident = unquote(rest[1])
        if rest[0] == "pumps" and rest[2] == "metadata":
            return Route(PUMP_METADATA, {"pumpId": ident})
        if rest[0] == "pumps" and rest[2] == "summary":
            return Route(PUMP_SUMMARY, {"pumpId": ident})
        if rest[0] == "users" and rest[2] == "summary":
            return Route(USER_SUMMARY, {"userId": ident})
    return None
