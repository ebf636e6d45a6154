"""Command line: run the emulator in the foreground (for benchmarks and manual poking).

    python -m tests.portal_emulator --pumps 300 --users 12 --seed 7 --port 0 --latency-ms 0 \
        [--rate-limit 50/1] [--max-limit 100] [--ready-file PATH] \
        [--churn-inserts 1] [--churn-removals 0] [--churn-every 1] [--churn-remove served] \
        [--churn-times N] [--churn-listing pumps|users]

Prints the URL and every key, writes ``{"url", "keys", "pid"}`` to --ready-file atomically (temp
file + rename) once listening, and stops cleanly on SIGTERM/SIGINT (exit status 0). The ready file
is removed again on a clean stop, so a stale one never points at a dead server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from .churn import REMOVE_FROM
from .emulator import PortalEmulator
from .fleet import Fleet
from .ratelimit import RateLimit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.portal_emulator", description=__doc__)
    parser.add_argument("--pumps", type=int, default=300)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=RateLimit.parse, default=None, metavar="N/SECONDS")
    parser.add_argument("--max-limit", type=int, default=100)
    parser.add_argument("--no-records", action="store_true", help="keep counters only")
    parser.add_argument("--ready-file", type=Path, default=None)
    parser.add_argument(
        "--start",
        default=None,
        help="the simulated clock's start: ISO 8601, or 'now' (default 2025-03-20T10:00:00Z)",
    )
    churn = parser.add_argument_group(
        "listing churn",
        "change the fleet while listings are paged (churn.py); off unless "
        "--churn-inserts or --churn-removals is above 0",
    )
    churn.add_argument("--churn-inserts", type=int, default=0, help="new pumps at the front")
    churn.add_argument("--churn-removals", type=int, default=0, help="pumps removed")
    churn.add_argument("--churn-every", type=int, default=1, help="after every k-th page")
    churn.add_argument("--churn-remove", choices=REMOVE_FROM, default="served")
    churn.add_argument("--churn-times", type=int, default=None, help="changes at most")
    churn.add_argument("--churn-listing", choices=("pumps", "users"), default="pumps")
    return parser.parse_args(argv)


def write_atomically(path: Path, payload: dict[str, object]) -> None:
    """Readers polling for the file never see it half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle)
    os.replace(temp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = None
    if args.start == "now":
        start = datetime.now(UTC).replace(microsecond=0)
    elif args.start:
        start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    fleet = Fleet.generate(pumps=args.pumps, users=args.users, seed=args.seed, start=start)
    emulator = PortalEmulator(
        fleet,
        latency=args.latency_ms / 1000.0,
        rate_limit=args.rate_limit,
        max_limit=args.max_limit,
        port=args.port,
        host=args.host,
        keep_records=not args.no_records,
    )
    if args.churn_inserts > 0 or args.churn_removals > 0:
        emulator.churn_listing(
            "/v1/pumps" if args.churn_listing == "pumps" else "/v1/users/:userId/summary",
            every=args.churn_every,
            inserts=args.churn_inserts,
            removals=args.churn_removals,
            remove=args.churn_remove,
            times=args.churn_times,
        )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url = emulator.start()
    keys = emulator.keys.as_dict()
    print(f"url {url}", flush=True)
    for name, value in keys.items():
        print(f"key {name} {value}", flush=True)
    if args.ready_file is not None:
        write_atomically(args.ready_file, {"url": url, "keys": keys, "pid": os.getpid()})
    try:
        while not stop.wait(0.2):
            pass
    finally:
        emulator.stop()
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
