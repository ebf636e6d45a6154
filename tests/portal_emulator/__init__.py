"""An in-process emulator of the Pump Portal Integration API v1, for tests and benchmarks.

An independent reading of ``/work/shared/api/portal-api-v1.md`` (it never imports ``pipelines``).
Choices where the reference is silent are documented where they take effect; README.md lists them.
"""

from .churn import Churn, ChurnEvent
from .clock import DEFAULT_START, SimClock, iso_ms
from .emulator import PortalEmulator
from .fleet import Fleet
from .keys import Keys
from .model import Alarm, Pump, User
from .ratelimit import RateLimit
from .records import RequestInfo, RequestRecord
from .render import ACTIVE_WINDOW

__all__ = [
    "ACTIVE_WINDOW",
    "DEFAULT_START",
    "Alarm",
    "Churn",
    "ChurnEvent",
    "Fleet",
    "Keys",
    "PortalEmulator",
    "Pump",
    "RateLimit",
    "RequestInfo",
    "RequestRecord",
    "SimClock",
    "User",
    "iso_ms",
]
