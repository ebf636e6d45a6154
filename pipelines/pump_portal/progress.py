"""Progress of a run's long phases, at most once a second.

The command line shows the `pipelines.progress` logger as a live line on a terminal and as log
lines at a steady pace otherwise; an embedding pipeline sees ordinary INFO records.
"""

from __future__ import annotations

import logging
import time

progress_logger = logging.getLogger("pipelines.progress")


class Progress:
    def __init__(self, interval_seconds: float = 1.0) -> None:
        self.interval_seconds = interval_seconds
        self._last = 0.0

    def __call__(self, message: str, *args: object, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.interval_seconds:
            self._last = now
            progress_logger.info(message, *args)
