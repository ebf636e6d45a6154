"""One run at a time per pipeline: an advisory file lock in the pipeline's working folder.

`flock` locks belong to the open file: the kernel drops them when the holder exits, however it
exits (SIGKILL included), so a killed run never leaves a lock that blocks the next one. The file
keeps the holder's pid and start time only to name it in the message.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

import pendulum


class RunInProgress(Exception):
    def __init__(self, path: Path, holder: dict[str, object]) -> None:
        self.path = path
        self.holder = holder
        pid = holder.get("pid", "?")
        since = holder.get("started_at", "an unknown time")
        super().__init__(f"another run of this pipeline is in progress (pid {pid}, since {since})")


class RunLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunInProgress(self.path, holder) from None
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "started_at": pendulum.now("UTC").isoformat()}
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}
