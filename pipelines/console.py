"""What the job says on the terminal: results on stdout, failures as one line and a hint on
stderr, and progress as a live line on a terminal or a steady log line under cron."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO


def fail(code: int, message: str, hint: str) -> int:
    print(f"ERROR: {message}\n  -> {hint}", file=sys.stderr)
    return code


def say(text: str) -> None:
    """Print to stdout; a reader that stopped reading (`| head`) is not the job's failure."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Later writes (and the interpreter's final flush) would raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def end_live_line() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")


class LiveLine(logging.Handler):
    """On a terminal: one progress line redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write("\r\x1b[K" + record.getMessage())
        self.stream.flush()


class SteadyPace(logging.Filter):
    """Without a terminal (cron, CI): at most one progress line every `seconds`."""

    def __init__(self, seconds: float = 10.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def install_progress(stream: TextIO) -> None:
    progress = logging.getLogger("pipelines.progress")
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        return
    if stream.isatty():
        progress.propagate = False
        progress.addHandler(LiveLine(stream))
    else:
        progress.addFilter(SteadyPace())
