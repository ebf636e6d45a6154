"""SIGTERM and SIGINT: stop fetching, load nothing half-made, record the run, exit with one line.

systemd, Airflow timeouts and container stops send SIGTERM; a person at a terminal sends SIGINT.
The first one asks the run to stop where it can stop cleanly:

- extract: the client starts no new request and dlt's extract raises at its next item, so the
  run's incremental state is never committed and the next run fetches everything again;
- normalize and load: dlt intercepts the signal itself and stops between jobs; the load package
  stays pending and the next run finishes it before extracting;
- models: the build stops before its next table; the live models are swapped only at the end,
  so they stay as they were.

A second signal of the same kind ends the process at once, as without this handler.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from dlt.common.runtime import signals as dlt_signals

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequested:
    """Set by the first SIGTERM/SIGINT; read by the client, the runner and the model build."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def install(self) -> StopRequested:
        """Take over SIGTERM and SIGINT (only possible on the main thread)."""
        for signum in HANDLED:
            signal.signal(signum, self._receive)
        return self

    def _receive(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.note(signum)
        # dlt's extract loop checks its own flag between items: stop it there too.
        dlt_signals.set_received_signal(signum)
        dlt_signals.wake_all()

    def note(self, signum: int) -> None:
        """A signal arrived (here, or while dlt's own handler was installed during a load)."""
        self.signum = self.signum or signum
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal"

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as shells report a process a signal ended: 143, 130."""
        return 128 + (self.signum or signal.SIGTERM)

    @staticmethod
    def clear_dlt_flag() -> None:
        """Let the runner record the interrupted run through dlt without dlt stopping again."""
        dlt_signals.set_received_signal(0)
