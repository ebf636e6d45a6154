"""The command line: `pump-portal run | models | status` (also `python -m pipelines.cli ...`).

Reads configuration the dlt way (environment, then .dlt/secrets.toml and .dlt/config.toml),
runs one cycle, prints a short summary, and maps the outcome to an exit code a scheduler can act on.
A failure ends with one human line (what happened, what to check, the request id) instead of a
traceback; `--log-level DEBUG` shows the details.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import dlt
from dlt.common.configuration.exceptions import ConfigFieldMissingException

from .models import build_models
from .pump_portal.errors import (
    AuthenticationError,
    InsufficientScope,
    InvalidRequest,
    ItemForbidden,
    PortalError,
    RedirectRefused,
)
from .run_lock import RunInProgress, RunLock
from .runner import SyncResult, describe, make_pipeline, run_sync
from .warehouse import (
    DEFAULT_LOCK_WAIT_SECONDS,
    DestinationLocked,
    publish,
    published_file,
    wait_for_write_lock,
    wait_schedule,
    working_file,
)

logger = logging.getLogger("pipelines")

EXIT_OK = 0
EXIT_FAILED = 1  # unexpected error (a bug): the traceback is in the log
EXIT_CONFIG = 2  # missing key, bad URL, bad setting
EXIT_AUTH = 3  # 401, or 403 on everything
EXIT_API_UNAVAILABLE = 4  # 5xx, connection errors or non-JSON after retries
EXIT_DESTINATION = 5  # the warehouse could not be written
EXIT_LOCKED = 6  # another run of this pipeline is in progress
EXIT_BAD_REQUEST = 7  # 400 from the portal: a bug or a bad setting
EXIT_PARTIAL = 10  # loaded, but some items or resources were skipped (see skipped_items)
EXIT_STALE = 11  # `status`: the data is older than the threshold, or the last run failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pump-portal", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="sync the portal into the destination")
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="drop the source's tables and state and load everything again",
    )
    run.add_argument("--destination", help="override [pipelines.pump_portal] destination_type")
    run.add_argument("--no-models", action="store_true", help="skip building sql/ models")
    commands.add_parser("models", help="build the sql/ models on the destination")
    status = commands.add_parser("status", help="last runs and freshness; exit 11 when stale")
    status.add_argument(
        "--max-age-minutes",
        type=float,
        default=None,
        help="stale threshold (default [sync] max_staleness_minutes or 60)",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_progress(sys.stderr)
    if args.command == "run":
        return command_run(args)
    if args.command == "status":
        from .status import command_status

        return command_status(args)
    return command_models(args)


def command_run(args: argparse.Namespace) -> int:
    try:
        pipeline = make_pipeline(destination=args.destination)
    except Exception as error:  # noqa: BLE001
        return fail(
            EXIT_CONFIG,
            f"configuration error: {describe(error)}",
            "check [pipelines.pump_portal] in .dlt/config.toml",
        )
    lock = RunLock(Path(pipeline.working_dir) / "run.lock")
    try:
        lock.acquire()
    except RunInProgress as busy:
        return fail(EXIT_LOCKED, str(busy), f"lock file {busy.path}; it frees when that run exits")
    try:
        working = working_file(pipeline)
        if working is not None:
            try:
                budget = dlt.config.get("sync.lock_wait_seconds", float)
                wait_for_write_lock(working, wait_schedule(budget or DEFAULT_LOCK_WAIT_SECONDS))
            except DestinationLocked as locked:
                return fail(EXIT_DESTINATION, f"destination locked: {locked}", locked.hint)
        build = None if args.no_models else build_models
        result = run_sync(pipeline, full_refresh=args.full_refresh, build_models=build)
        published = published_file()
        if working is not None and published is not None and result.error is None:
            publish(working, published)
        else:
            published = None
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")  # end the live progress line
        print_summary(result, pipeline, published)
        return exit_for(result)
    finally:
        lock.release()


def command_models(args: argparse.Namespace) -> int:
    pipeline = make_pipeline()
    try:
        built = build_models(pipeline)
        working = working_file(pipeline)
        target = dlt.config.get("sync.publish_to", str)
        if working is not None and target:
            publish(working, Path(target))
    except Exception as error:  # noqa: BLE001
        return fail(EXIT_DESTINATION, f"models failed: {describe(error)}", "see the log above")
    print(f"built {len(built)} models: {', '.join(built)}")
    return EXIT_OK


class LiveLine(logging.Handler):
    """On a terminal: one progress line redrawn in place."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
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


def install_progress(stream) -> None:  # type: ignore[no-untyped-def]
    progress = logging.getLogger("pipelines.progress")
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        return
    if stream.isatty():
        progress.propagate = False
        progress.addHandler(LiveLine(stream))
    else:
        progress.addFilter(SteadyPace())


def exit_for(result: SyncResult) -> int:
    error = result.error
    if error is None:
        return EXIT_PARTIAL if result.outcome == "partial" else EXIT_OK
    if isinstance(error, ConfigFieldMissingException):
        return fail(
            EXIT_CONFIG,
            f"configuration missing: {', '.join(error.fields)}",
            "set SOURCES__PUMP_PORTAL__API_KEY / SOURCES__PUMP_PORTAL__BASE_URL or "
            ".dlt/secrets.toml and .dlt/config.toml ([sources.pump_portal])",
        )
    if isinstance(error, PortalError):
        code = EXIT_API_UNAVAILABLE
        if isinstance(error, AuthenticationError | InsufficientScope | ItemForbidden):
            # a bare 403 on a top-level endpoint: the key may not read the portal at all
            code = EXIT_AUTH
        elif isinstance(error, InvalidRequest):
            code = EXIT_BAD_REQUEST
        elif isinstance(error, RedirectRefused):
            code = EXIT_CONFIG
        return fail(code, f"sync failed: {error}", error.hint)
    if isinstance(error, ValueError) and result.failed_step in (None, "extract"):
        return fail(
            EXIT_CONFIG,
            f"configuration error: {describe(error)}",
            "check [sources.pump_portal] in .dlt/config.toml",
        )
    if result.failed_step in ("load", "sync"):
        return fail(
            EXIT_DESTINATION,
            f"destination error: {describe(error)}",
            "check the destination's credentials and that no other process holds it; "
            "the data is kept and loads on the next run",
        )
    logger.error("unexpected failure", exc_info=error)
    return fail(EXIT_FAILED, f"sync failed: {describe(error)}", "see the log above")


def fail(code: int, message: str, hint: str) -> int:
    print(f"ERROR: {message}\n  -> {hint}", file=sys.stderr)
    return code


def print_summary(result: SyncResult, pipeline, published: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    report = result.report
    stats = report.client_stats
    lines = [
        f"pump_portal sync {result.outcome} in {result.seconds:.1f} s "
        f"-> {pipeline.destination.destination_name if pipeline.destination else '?'} "
        f"dataset {pipeline.dataset_name}",
        f"  pumps listed {report.pumps_listed}, changed {report.pumps_changed}, "
        f"vanished {report.pumps_vanished}, detail calls {report.detail_calls}, "
        f"users {report.users_listed}",
    ]
    if stats is not None:
        lines.append(
            f"  requests {stats.total_requests}, 429s waited {stats.rate_limited} "
            f"({stats.rate_limit_wait_seconds:.1f} s), retries {stats.retries}"
        )
    if result.rows:
        lines.append("  rows: " + ", ".join(f"{t} {n}" for t, n in result.rows.items()))
    if report.skipped:
        by_code = ", ".join(f"{c} {n}" for c, n in report.skipped_by_code().items())
        lines.append(f"  skipped {len(report.skipped)} ({by_code}); see table skipped_items")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    if result.models_built:
        lines.append(f"  models built: {', '.join(result.models_built)}")
    if published is not None:
        lines.append(f"  published for readers: {published}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
