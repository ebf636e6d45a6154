"""The sync's working DuckDB file: which file it is, and waiting while another process holds it.

DuckDB allows one writer process or many readers, never both. So the sync writes its own working
file (`[destination.duckdb] credentials`) and publishes copies for readers (`reader_copies.py`).
Only a process holding the working file can block a run: then the run waits with a bounded,
logged retry and fails naming the holder.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import dlt
import duckdb
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

logger = logging.getLogger(__name__)

T = TypeVar("T")


def is_duckdb(pipeline: dlt.Pipeline) -> bool:
    destination = pipeline.destination
    return destination is not None and destination.destination_name == "duckdb"


def working_file(pipeline: dlt.Pipeline) -> Path | None:
    """The sync's working DuckDB file, or None for other destinations."""
    if not is_duckdb(pipeline):
        return None
    credentials = pipeline.destination_client().config.credentials
    if not isinstance(credentials, DuckDbCredentials) or credentials.database is None:
        raise ValueError(
            f"the duckdb destination's credentials name no database file "
            f"({type(credentials).__name__})"
        )
    return Path(credentials.database)


def wait_schedule(total_seconds: float) -> tuple[float, ...]:
    """Doubling waits (0.5, 1, 2, ...) that add up to `total_seconds`."""
    waits: list[float] = []
    step = 0.5
    while sum(waits) < total_seconds:
        waits.append(min(step, total_seconds - sum(waits)))
        step *= 2
    return tuple(waits)


class DestinationLocked(Exception):
    """The working DuckDB file stayed locked by another process through every wait."""

    hint = (
        "Another process holds the sync's working DuckDB file. Point BI tools and readers at the "
        "published copy ([sync] publish_to) instead, or close the holder; nothing is lost: the "
        "next run loads what this one fetched."
    )


def retry_while_locked(
    step: Callable[[], T],
    path: Path,
    waits: tuple[float, ...],
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `step` (a load, a model build, a publish: anything that opens the working file); while
    it fails because another process holds the file, wait and try again, `waits` long at most,
    then raise `DestinationLocked` naming the holder."""
    for attempt, wait in enumerate((*waits, None), start=1):
        try:
            return step()
        except Exception as error:
            message = lock_conflict(error)
            if message is None:
                raise
            holder = lock_holder(message)
            if wait is None:
                raise DestinationLocked(
                    f"{path} is locked by {holder}; {what} gave up after {attempt - 1} waits "
                    f"({sum(waits):.0f} s)"
                ) from error
            logger.warning(
                "%s is locked by %s: waiting %.1f s before %s tries again (%d/%d)",
                path,
                holder,
                wait,
                what,
                attempt,
                len(waits),
            )
            sleep(wait)
    raise AssertionError("unreachable")


def wait_for_write_lock(
    path: Path, waits: tuple[float, ...], sleep: Callable[[float], None] = time.sleep
) -> None:
    """Return once the file can be opened for writing; raise `DestinationLocked` after `waits`.

    Checked before extracting, so a holder that is already there costs no requests."""
    retry_while_locked(lambda: duckdb.connect(str(path)).close(), path, waits, "the run", sleep)


@contextmanager
def held_open(path: Path | None) -> Iterator[None]:
    """Keep the working file open in this process for a step that opens it many times.

    dlt opens the file for every load job and closes it after (29 times in a 2,000-pump load),
    and a DuckDB file opened anew reads its catalog and checkpoints on close: about 30 ms each.
    While one connection here holds the file, DuckDB hands every other `connect` in the process
    the same open database (about 1 ms). The file stays locked for the step only: a reader may
    open it between runs or while the run extracts, as before."""
    if path is None:
        yield
        return
    connection = duckdb.connect(str(path))
    try:
        yield
    finally:
        connection.close()


def lock_conflict(error: BaseException) -> str | None:
    """DuckDB's lock message, if another process holding the file is what failed `error`
    (also under dlt's step and job wrappers)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        text = str(current)
        if "Could not set lock on file" in text or "Conflicting lock is held" in text:
            return text
        linked = (current.__cause__, current.__context__, getattr(current, "exception", None))
        pending += [link for link in linked if isinstance(link, BaseException)]
    return None


def lock_holder(message: str) -> str:
    """DuckDB names the holder: 'Conflicting lock is held in /usr/bin/python3 (PID 1234)'."""
    found = re.search(r"lock is held in (.+?) \(PID (\d+)\)", message)
    return f"{found.group(1)} (pid {found.group(2)})" if found else "another process"
