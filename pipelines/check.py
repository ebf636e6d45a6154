"""`pump-portal check`: in seconds, does this deployment's configuration work?

One request per endpoint (the first page of each listing, one pump's details, one user's
summary), a short retry budget, and one query on the destination. It reads and writes nothing
else: no state, no load. Like Airbyte's `check` or Fivetran's setup tests, it answers the
questions a new key or URL raises: does the portal answer, is the key valid, which endpoints
can its scopes read, can the job reach the warehouse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dlt
from dlt.common.configuration.exceptions import ConfigurationException

from . import deployment
from .pump_portal import settings
from .pump_portal.client import PortalClient
from .pump_portal.errors import (
    AuthenticationError,
    InsufficientScope,
    ItemForbidden,
    ItemNotFound,
    NoDelegatedUsers,
    PortalError,
    PortalUnavailable,
)
from .pump_portal.pagination import item_id, listing_items

SOURCE = "sources.pump_portal"


@dataclass
class Probe:
    endpoint: str
    outcome: str  # "ok" | "forbidden" | "not found" | "skipped" | "failed"
    detail: str = ""


@dataclass
class CheckReport:
    origin: str = ""
    probes: list[Probe] = field(default_factory=list)
    destination: str = ""
    destination_error: BaseException | None = None
    portal_error: PortalError | None = None  # what ended the portal checks early

    @property
    def readable(self) -> list[str]:
        return [probe.endpoint for probe in self.probes if probe.outcome == "ok"]


def portal_client() -> PortalClient:
    """The client the job would build, with a retry budget of seconds, not a minute."""
    base_url = deployment.setting(f"{SOURCE}.base_url", str, "")
    # Asked for without a type, dlt returns the value as stored (any TOML type): sent as text.
    api_key: object = dlt.secrets.get(f"{SOURCE}.api_key") or ""
    if not base_url:
        raise deployment.ConfigError(
            "sources.pump_portal.base_url is not set (SOURCES__PUMP_PORTAL__BASE_URL)"
        )
    if not api_key:
        raise deployment.ConfigError(
            "sources.pump_portal.api_key is not set (SOURCES__PUMP_PORTAL__API_KEY or "
            ".dlt/secrets.toml)"
        )
    try:
        return PortalClient(
            base_url,
            str(api_key),
            page_size=1,
            max_retries=1,
            backoff_seconds=0.5,
            retry_seconds=5,
            allow_insecure_http=deployment.setting(f"{SOURCE}.allow_insecure_http", bool, False),
        )
    except ValueError as error:
        raise deployment.ConfigError(f"sources.pump_portal.base_url: {error}") from None


def check_portal(client: PortalClient, report: CheckReport) -> None:
    """Probe each endpoint once; a 401 or an unreachable portal ends the checks at once."""
    report.origin = client.origin

    def probe(endpoint: str, call: Callable[[], Any]) -> Any:
        try:
            body = call()
        except (AuthenticationError, PortalUnavailable):
            raise
        except NoDelegatedUsers as error:
            report.probes.append(Probe(endpoint, "ok", error.code or "no_delegated_users"))
        except InsufficientScope as error:
            report.probes.append(Probe(endpoint, "forbidden", error.code or "insufficient_scope"))
        except ItemForbidden as error:
            report.probes.append(Probe(endpoint, "forbidden", error.code or "forbidden"))
        except ItemNotFound as error:
            report.probes.append(Probe(endpoint, "not found", error.code or "not_found"))
        except PortalError as error:
            report.probes.append(Probe(endpoint, "failed", str(error)))
        else:
            report.probes.append(Probe(endpoint, "ok"))
            return body
        return None

    listing = probe(
        "/v1/pumps", lambda: client.get(settings.ENDPOINT_PUMPS, {"page": 1, "limit": 1})
    )
    probe("/v1/stats", client.statistics)
    users = probe("/v1/delegated-users", client.delegated_users)
    pumps = listing_items(listing, "/v1/pumps")[0] if isinstance(listing, dict) else []
    # A pump that has reported has details; one that never did answers 404 by design.
    reported = [pump for pump in pumps if pump.get("last_seen")] or pumps
    pump_id = next((item_id(pump) for pump in reported if item_id(pump)), None)
    for endpoint, call in (
        ("/v1/pumps/:pumpId/metadata", client.pump_metadata),
        ("/v1/pumps/:pumpId/summary", client.pump_summary),
    ):
        if pump_id is None:
            report.probes.append(Probe(endpoint, "skipped", "no pump listed to ask about"))
        else:
            probe(endpoint, partial(call, pump_id))
    user_id = _first_user(users)
    if user_id is None:
        report.probes.append(
            Probe("/v1/users/:userId/summary", "skipped", "no delegated user to ask about")
        )
    else:
        path = settings.ENDPOINT_USER_SUMMARY.format(user_id=user_id)
        probe("/v1/users/:userId/summary", lambda: client.get(path, {"page": 1, "limit": 1}))


def check_destination(pipeline: dlt.Pipeline, report: CheckReport) -> None:
    """One query on the warehouse (a DuckDB working file is created if missing, as a run would)."""
    destination = pipeline.destination
    report.destination = destination.destination_name if destination else "?"
    try:
        with pipeline.sql_client() as client:
            client.execute_sql("select 1")
    except ConfigurationException:
        raise  # missing credentials: a configuration error, exit 2 as for `run`
    except Exception as error:  # noqa: BLE001 - reported, with the exit code a run would give
        report.destination_error = error


def _first_user(body: Any) -> Any:
    """The first delegated user's id, if the answer lists one."""
    listed = body.get("delegated_users") if isinstance(body, dict) else None
    if not isinstance(listed, list):
        return None
    return next(
        (user["user_id"] for user in listed if isinstance(user, dict) and user.get("user_id")),
        None,
    )
