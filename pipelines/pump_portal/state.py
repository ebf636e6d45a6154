"""Where the sync keeps what it knows between runs, and the move from the old layout.

Every resource keeps its own bookkeeping in `dlt.current.resource_state()`, so a run of any
subset (`with_resources`) touches only the state of the resources it loads, and
`dlt pipeline <name> drop <resource>` resets exactly the state of the tables it drops:

    resources.controllers.pumps[pump_id]           = [last_seen, row fingerprint, visible]
    resources.pump_metadata.fetched[pump_id]       = [fetched at (epoch s), last_seen then]
    resources.pump_summaries.fetched[pump_id]      = [fetched at (epoch s), last_seen then]
    resources.<detail>.pace                        = {runs: [last 8 run times], carry}
    resources.user_pump_links.links[user_id][pump_id] = [is_owner, valid_from]

Up to this layout the three maps lived in the source-level state shared by all resources
(`pumps`, `details[resource]`, `links`); `migrate_source_state` moves them on the first run.
"""

from __future__ import annotations

import logging
from typing import Any

from dlt.common.schema import Schema

from . import records

logger = logging.getLogger(__name__)

# Resource names the state belongs to (and the old source-level keys they came from).
CONTROLLERS = "controllers"
DETAIL_RESOURCES = ("pump_metadata", "pump_summaries")
USER_PUMP_LINKS = "user_pump_links"
# The tables the controllers listing resource writes, each with its own hints.
LISTING_TABLES = ("controllers", "controller_observations", "controller_visibility")

# Index of each field in resources.controllers.pumps[pump_id].
LAST_SEEN, FINGERPRINT, VISIBLE = 0, 1, 2
# Index of each field in resources.<detail>.fetched[pump_id].
FETCHED_AT, FETCHED_SEEN = 0, 1

_OLD_KEYS = ("pumps", "details", "links")


def migrate_source_state(source_state: dict[str, Any], schema: Schema | None = None) -> bool:
    """Move the old source-level maps into the resource states and delete the old keys.

    Idempotent (the old keys are gone after the first call) and cheap, so every resource that
    reads state calls it first: whichever subset runs first after an upgrade moves all of it,
    and dlt commits the moved state with that run's load (or rolls it back with a failed one).
    A resource state that already exists wins over the old map. True when anything moved.
    """
    if not any(key in source_state for key in _OLD_KEYS):
        return False
    resources: dict[str, dict[str, Any]] = source_state.setdefault("resources", {})
    pumps: dict[str, list[Any]] = source_state.pop("pumps", None) or {}
    if pumps:
        resources.setdefault(CONTROLLERS, {}).setdefault("pumps", pumps)
    details: dict[str, dict[str, Any]] = source_state.pop("details", None) or {}
    for resource, fetched in details.items():
        # A detail was fetched at the last_seen the listing state held: the old sync refetched
        # every pump whose last_seen moved in the same run the listing state recorded it.
        moved = {
            pump_id: [int(_epoch(at)), pumps.get(pump_id, [None])[LAST_SEEN]]
            for pump_id, at in fetched.items()
        }
        resources.setdefault(resource, {}).setdefault("fetched", moved)
    links = source_state.pop("links", None)
    if links:
        resources.setdefault(USER_PUMP_LINKS, {}).setdefault("links", links)
    if schema is not None:
        adopt_listing_tables(schema)
    logger.info(
        "moved the sync's state to per-resource state: %d pumps, details of %s, links of %d users",
        len(pumps),
        ", ".join(sorted(details)) or "no resource",
        len(links or {}),
    )
    return True


def adopt_listing_tables(schema: Schema) -> None:
    """Mark the listing's three tables as the `controllers` resource's in the schema.

    They were three resources before; a table keeps the resource it was created by until it
    next receives rows, and `dlt pipeline drop controllers` must drop all three with the state
    that produced them."""
    for name in LISTING_TABLES:
        table = schema.tables.get(name)
        if table is not None and table.get("resource") != CONTROLLERS:
            table["resource"] = CONTROLLERS


def _epoch(value: Any) -> float:
    """A stored fetch time: epoch seconds (or, from older state, an ISO string)."""
    if isinstance(value, int | float):
        return float(value)
    parsed = records.to_timestamp(value)
    return parsed.timestamp() if parsed is not None else 0.0
