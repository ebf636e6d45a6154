"""GET /v1/stats, with the fallback a `read:pumps`-only key needs: the same `statistics`
object, as GET /v1/pumps carries it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from . import records
from .client import PortalClient
from .controllers import PumpListing
from .errors import FAILED_AFTER_RETRIES, UNREADABLE, InsufficientScope
from .report import RunReport

logger = logging.getLogger(__name__)


def fleet_snapshot(
    client: PortalClient,
    report: RunReport,
    pump_listing: Callable[[], PumpListing],
    run_at: dt.datetime,
) -> dict[str, Any] | None:
    """The run's `fleet_snapshots` row; `pump_listing()` is asked only for the fallback."""
    try:
        statistics = client.statistics().get("statistics")
        endpoint = "/v1/stats"
    except (*UNREADABLE, *FAILED_AFTER_RETRIES) as error:
        # 403 without the reference's code, or 404 (a portal without /v1/stats): the listing
        # carries the same object, so the snapshot is taken from there.
        listing = pump_listing()
        if not listing.readable or listing.statistics is None:
            report.skip_resource(
                "fleet_snapshots", error, "the API key can read neither /v1/stats nor /v1/pumps"
            )
            return None
        if isinstance(error, InsufficientScope):
            logger.info("no read:stats scope: fleet statistics taken from GET /v1/pumps")
        else:
            report.warn(
                f"GET /v1/stats answered {error}; fleet statistics taken from GET /v1/pumps"
            )
        statistics, endpoint = listing.statistics, "/v1/pumps"
    if not isinstance(statistics, dict):
        report.warn("GET /v1/stats answered without a statistics object")
        return None
    row = records.coerce(statistics, records.STATISTICS_FIELDS)
    return {"snapshot_at": run_at, "source_endpoint": endpoint, **row}
