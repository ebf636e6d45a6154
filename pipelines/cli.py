"""The command line: `pump-portal run | models | status` (also `python -m pipelines.cli ...`).

Reads configuration the dlt way (environment, then .dlt/secrets.toml and .dlt/config.toml),
runs one cycle, prints a short summary, and maps the outcome to an exit code a scheduler can act on.
A failure ends with one human line (what happened, what to check, the request id) instead of a
traceback; `--log-level DEBUG` shows the details.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NoReturn

import dlt
import duckdb
from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigurationException,
    ConfigValueCannotBeCoercedException,
)

from .console import end_live_line, fail, install_progress, say
from .deployment import ConfigError, SyncSettings
from .fleet_report import DEFAULT_DAYS, ReportUnavailable, write_report
from .models import BuiltModel, ModelSettings, build_models, models_schema
from .pump_portal import RESOURCES
from .pump_portal.errors import (
    AuthenticationError,
    InsufficientScope,
    InvalidRequest,
    ItemForbidden,
    PortalError,
    PortalUnavailable,
    RedirectRefused,
)
from .reader_copies import PublishFailed, PublishReport, publish_copy, skipped_for_readers
from .run_lock import RunInProgress, RunLock
from .runner import SyncResult, describe, make_pipeline, note_run, run_sync
from .shutdown import StopRequested
from .warehouse import DestinationLocked, retry_while_locked, wait_schedule, working_file

logger = logging.getLogger("pipelines")

EXIT_OK = 0
EXIT_FAILED = 1  # unexpected error (a bug): the traceback is in the log
EXIT_CONFIG = 2  # missing key, bad URL, bad setting, bad command line
EXIT_AUTH = 3  # 401, or 403 on everything
EXIT_API_UNAVAILABLE = 4  # 5xx, connection errors or non-JSON after retries
EXIT_DESTINATION = 5  # the warehouse (or the deployment's local files) could not be written
EXIT_LOCKED = 6  # another run of this pipeline is in progress
EXIT_BAD_REQUEST = 7  # 400 from the portal: a bug or a bad setting
EXIT_PARTIAL = 10  # loaded, but some items or resources need a look (see skipped_items)
EXIT_STALE = 11  # `status`: the data is older than the threshold, or the last run failed

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CommandLine(argparse.ArgumentParser):
    """argparse that reports a mistake as the job reports every failure: one line and a hint."""

    def error(self, message: str) -> NoReturn:
        fail(EXIT_CONFIG, message, f"see `{self.prog} --help`")
        raise SystemExit(EXIT_CONFIG)


def build_parser() -> CommandLine:
    # --log-level works before and after the command (`pump-portal status --log-level DEBUG`):
    # the subcommands' copy leaves the value alone unless it is given there. It is a CommandLine
    # like them: typeshed types add_parser's `parents` with the subparsers' parser_class.
    common = CommandLine(add_help=False)
    common.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="DEBUG, INFO, WARNING or ERROR (default INFO)",
    )
    parser = CommandLine(prog="pump-portal", description=__doc__.splitlines()[0], parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandLine)
    run = commands.add_parser("run", parents=[common], help="sync the portal into the destination")
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="drop the source's tables and state and load everything again",
    )
    run.add_argument("--destination", help="override [pipelines.pump_portal] destination_type")
    run.add_argument("--no-models", action="store_true", help="skip building sql/ models")
    run.add_argument(
        "--select",
        type=resource_names,
        default=(),
        metavar="A,B",
        help=f"load only these resources ({', '.join(RESOURCES)})",
    )
    models = commands.add_parser(
        "models", parents=[common], help="build the sql/ models on the destination"
    )
    models.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild every model from all history instead of only what changed",
    )
    commands.add_parser(
        "check",
        parents=[common],
        help="in seconds: does the portal answer, is the key valid, what can it read, "
        "is the destination reachable",
    )
    status = commands.add_parser(
        "status", parents=[common], help="last runs and freshness; exit 11 when stale"
    )
    status.add_argument(
        "--max-age-minutes",
        type=float,
        default=None,
        help="stale threshold (default [sync] max_staleness_minutes or 60)",
    )
    report = commands.add_parser(
        "report",
        parents=[common],
        help="write one HTML page of the fleet and the job's health (opens without network)",
    )
    report.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write the page (default: beside the DuckDB file, else "
        "var/<dataset>_report.html)",
    )
    report.add_argument(
        "--days",
        type=positive_days,
        default=DEFAULT_DAYS,
        help=f"the days shown, up to the latest day of the marts (default {DEFAULT_DAYS})",
    )
    return parser


def positive_days(value: str) -> int:
    """`--days 30`: a whole number of days, at least one."""
    try:
        days = int(value)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days (1 or more)")
    return days


def resource_names(value: str) -> tuple[str, ...]:
    """`--select controllers,pump_metadata`: known resource names, comma-separated."""
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in RESOURCES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown resource {', '.join(unknown) or '(none)'}; choose from {', '.join(RESOURCES)}"
        )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_progress(sys.stderr)
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "status":
            from .status import command_status

            return command_status(args)
        if args.command == "check":
            return command_check(args)
        if args.command == "report":
            return command_report(args)
        return command_models(args)
    except (ConfigError, ConfigurationException) as error:
        return fail(EXIT_CONFIG, f"configuration error: {config_problem(error)}", CONFIG_HINT)


# What an interruption at each step leaves behind.
INTERRUPTED = {
    "start": "nothing was fetched",
    "pending": "the earlier run's pending load stays pending; the next run loads it",
    "extract": "nothing of this run was loaded; the next run fetches it again",
    "normalize": "nothing of this run was loaded; the next run fetches it again",
    "load": "the load package stays pending; the next run finishes it before fetching",
    "models": "the data is loaded; the models stay as they were until the next run builds them",
    "finish": "the data and models are loaded",
}

CONFIG_HINT = (
    "settings come from the environment, .dlt/secrets.toml and .dlt/config.toml; "
    "see Configuration in the README"
)


def command_run(args: argparse.Namespace) -> int:
    sync_settings = SyncSettings.from_config()
    if not args.no_models:
        ModelSettings.from_config()  # a bad [models] setting fails now, before any extract
    pipeline = make_pipeline(destination=args.destination)
    stop = StopRequested().install()
    lock = RunLock(Path(pipeline.working_dir) / "run.lock")
    try:
        lock.acquire()
    except RunInProgress as busy:
        return fail(EXIT_LOCKED, str(busy), f"lock file {busy.path}; it frees when that run exits")
    except OSError as error:
        return fail(
            EXIT_DESTINATION,
            f"cannot write the pipelines folder {pipeline.pipelines_dir}: {os_reason(error)}",
            "the job keeps its state there ([pipelines.pump_portal] pipelines_dir); "
            "run it from a writable folder or point that setting at one",
        )
    try:
        waits = wait_schedule(sync_settings.lock_wait_seconds)
        build = (
            None
            if args.no_models
            else partial(build_models, should_stop=stop.is_set, full_refresh=args.full_refresh)
        )
        result = run_sync(
            pipeline,
            full_refresh=args.full_refresh,
            select=args.select,
            build_models=build,
            stop=stop,
            lock_waits=waits,
        )
        published = None
        if result.error is None and sync_settings.publish_to and not stop.is_set():
            target = Path(sync_settings.publish_to)
            published = publish_for_readers(pipeline, result, target, waits)
        end_live_line()
        print_summary(result, pipeline, published)
        return exit_for(result, stop)
    finally:
        lock.release()


def publish_for_readers(
    pipeline: dlt.Pipeline, result: SyncResult, target: Path, waits: tuple[float, ...]
) -> PublishReport | None:
    """The reader copy of a DuckDB run; a failure to write it fails the run (data stays loaded)."""
    working = working_file(pipeline)
    if working is None:
        return None
    try:
        return retry_while_locked(
            lambda: publish_for(pipeline, working, target), working, waits, "publishing"
        )
    except (DestinationLocked, PublishFailed, duckdb.Error, OSError) as error:
        failure = PublishFailed(f"{target}: {os_reason(error)}")
        result.outcome, result.failed_step, result.error = "failed", "publish", failure
        note_run(pipeline, result)  # the journal, where `status` reads the last run
        return None


def publish_for(pipeline: dlt.Pipeline, working: Path, target: Path) -> PublishReport:
    """Publish the working file for readers, without the models' helper tables and dlt's
    staging scratch, which readers do not need and which would grow the copy with every reading."""
    skip = skipped_for_readers(pipeline.dataset_name, models_schema(pipeline))
    return publish_copy(working, target, skip=skip)


def command_models(args: argparse.Namespace) -> int:
    sync_settings = SyncSettings.from_config()
    ModelSettings.from_config()
    pipeline = make_pipeline()
    try:
        built = build_models(pipeline, full_refresh=args.full_refresh)
        working = working_file(pipeline)
        if working is not None and sync_settings.publish_to:
            publish_for(pipeline, working, Path(sync_settings.publish_to))
    except (ConfigError, ConfigurationException):
        raise
    except Exception as error:  # noqa: BLE001
        logger.debug("models failed", exc_info=error)
        return fail(
            EXIT_DESTINATION,
            f"models failed: {describe(error)}",
            out_of_memory_hint(error)
            or "check the destination (credentials, a process holding the DuckDB file); "
            "--log-level DEBUG shows the traceback",
        )
    say(f"built {len(built)} models: {describe_build(built)}")
    return EXIT_OK


def command_report(args: argparse.Namespace) -> int:
    """`pump-portal report`: the page is written by pipelines/fleet_report.py; here only the
    configuration, the path printed and the exit code (5 when the warehouse cannot be read or
    the page cannot be written)."""
    sync_settings = SyncSettings.from_config()
    model_settings = ModelSettings.from_config()
    pipeline = make_pipeline()
    try:
        path = write_report(
            pipeline, sync_settings, model_settings, output=args.output, days=args.days
        )
    except ReportUnavailable as error:
        return fail(EXIT_DESTINATION, f"no report: {error}", error.hint)
    except OSError as error:
        target = error.filename or args.output or "the report"
        return fail(
            EXIT_DESTINATION,
            f"cannot write {target}: {os_reason(error)}",
            "choose a writable path with --output",
        )
    except (ConfigError, ConfigurationException):
        raise
    except Exception as error:  # noqa: BLE001
        logger.debug("report failed", exc_info=error)
        return fail(
            EXIT_DESTINATION,
            f"cannot read the warehouse: {describe(error)}",
            "check the destination (credentials, that a sync has run); "
            "--log-level DEBUG shows the traceback",
        )
    say(f"report written to {path}")
    return EXIT_OK


def command_check(args: argparse.Namespace) -> int:
    """`pump-portal check`: one request per endpoint and one query on the destination; exit
    codes as `run` (3 key rejected or nothing readable, 4 portal unreachable, 5 destination)."""
    from .check import CheckReport, check_destination, check_portal, portal_client

    report = CheckReport()
    client = portal_client()
    try:
        check_portal(client, report)
    except (AuthenticationError, PortalUnavailable) as error:
        report.portal_error = error
    finally:
        client.close()
    check_destination(make_pipeline(), report)
    lines = [f"portal {report.origin}"]
    if isinstance(report.portal_error, PortalUnavailable):
        lines.append(f"  does not answer: {report.portal_error}")
    elif isinstance(report.portal_error, AuthenticationError):
        lines.append(f"  answers; the key is rejected: {report.portal_error}")
    else:
        lines.append(
            "  answers; the key is valid" if report.readable else "  answers; the key reads nothing"
        )
        width = max(len(probe.endpoint) for probe in report.probes)
        for probe in report.probes:
            detail = f" ({probe.detail})" if probe.detail else ""
            lines.append(f"  GET {probe.endpoint:<{width}}  {probe.outcome}{detail}")
    where = report.destination
    if report.destination_error is None:
        lines.append(f"destination {where}: reachable")
    else:
        lines.append(f"destination {where}: not reachable: {describe(report.destination_error)}")
    say("\n".join(lines))
    if isinstance(report.portal_error, AuthenticationError):
        return fail(
            EXIT_AUTH, f"the API key is rejected: {report.portal_error}", report.portal_error.hint
        )
    if isinstance(report.portal_error, PortalUnavailable):
        return fail(
            EXIT_API_UNAVAILABLE,
            f"the portal does not answer: {report.portal_error}",
            report.portal_error.hint,
        )
    if not report.readable:
        return fail(EXIT_AUTH, "the API key can read no endpoint", InsufficientScope.hint)
    if report.destination_error is not None:
        return fail(
            EXIT_DESTINATION,
            f"destination {where} not reachable: {describe(report.destination_error)}",
            "check the destination's credentials, that the server runs, and that no other "
            "process holds a DuckDB working file",
        )
    return EXIT_OK


def describe_build(built: Sequence[str]) -> str:
    """'4 incremental (1,210 rows changed), 2 full (first build), 10 views': what the build did,
    so a slow run that rebuilt everything says why."""
    groups: dict[str, list[BuiltModel]] = {}
    for model in built:
        if isinstance(model, BuiltModel):
            groups.setdefault(model.how, []).append(model)
    parts = []
    incremental = groups.pop("incremental", [])
    if incremental:
        changed = sum(model.rows_changed or 0 for model in incremental)
        parts.append(f"{len(incremental)} incremental ({changed:,} rows changed)")
    full = groups.pop("full", [])
    if full:
        # The root causes: the rest follow from them ("int_x is rebuilt whole") or always hold.
        reasons = sorted(
            {
                model.reason
                for model in full
                if model.reason != "materialized: table"
                and not model.reason.endswith("is rebuilt whole")
            }
        )
        parts.append(f"{len(full)} full" + (f" ({'; '.join(reasons)})" if reasons else ""))
    views = groups.pop("view", [])
    if views:
        parts.append(f"{len(views)} views")
    parts += [f"{len(models)} {how}" for how, models in groups.items()]
    return ", ".join(parts) or ", ".join(built)


def config_problem(error: BaseException) -> str:
    """What is wrong with a setting, naming it and the variable that holds the bad value."""
    if isinstance(error, ConfigValueCannotBeCoercedException):
        kind = getattr(error.hint, "__name__", str(error.hint))
        where = env_holding(error.field_name, error.field_value)
        return f"{error.field_name} = {error.field_value!r} is not a valid {kind} (set in {where})"
    if isinstance(error, ConfigFieldMissingException):
        return f"missing {', '.join(error.fields)} ({error.spec_name})"
    return describe(error).split(": ", 1)[-1] if not isinstance(error, ConfigError) else str(error)


def env_holding(field: str, value: object) -> str:
    """The environment variable that set `field` to `value`, else the config files."""
    suffix = "__" + field.upper()
    for name, current in sorted(os.environ.items()):
        if name.endswith(suffix) and current == str(value):
            return name
    return ".dlt/config.toml or .dlt/secrets.toml"


def os_reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def out_of_memory_hint(error: BaseException) -> str | None:
    """A full model build reads all history at once: past a few months it needs more than the
    memory limit that bounds a scheduled cycle."""
    if "Out of Memory Error" not in str(error):
        return None
    return (
        "the sync's data is loaded; a first or full model build reads all history at once and "
        "needs more memory than [sync] duckdb_memory_limit allows: run it once with more, e.g. "
        "SYNC__DUCKDB_MEMORY_LIMIT=4GB pump-portal models (later builds are incremental)"
    )


def exit_for(result: SyncResult, stop: StopRequested | None = None) -> int:
    error = result.error
    if result.outcome == "interrupted" and stop is not None:
        step = result.failed_step or "extract"
        left = INTERRUPTED.get(step, INTERRUPTED["extract"])
        return fail(
            stop.exit_code,
            f"interrupted by {stop.name} during {step}: {left}",
            "the run is recorded as interrupted; the next run completes it",
        )
    if error is None:
        return EXIT_PARTIAL if result.outcome == "partial" else EXIT_OK
    if isinstance(error, DestinationLocked):
        return fail(EXIT_DESTINATION, f"destination locked: {error}", error.hint)
    if result.failed_step == "publish":
        return fail(
            EXIT_DESTINATION,
            f"could not publish the reader copy {error}",
            "the run's data is loaded in the working file; make [sync] publish_to "
            "(SYNC__PUBLISH_TO) a writable path, and the next run publishes it",
        )
    if result.failed_step == "start" and isinstance(error, duckdb.Error | OSError):
        return fail(
            EXIT_DESTINATION,
            f"cannot open the working DuckDB file: {os_reason(error)}",  # names the file
            "run from a writable folder, or move the file with DESTINATION__DUCKDB__CREDENTIALS "
            "(or [destination.duckdb] credentials in .dlt/secrets.toml); nothing was extracted",
        )
    if isinstance(error, ConfigFieldMissingException):
        return fail(
            EXIT_CONFIG, f"configuration missing: {config_problem(error)}", missing_hint(error)
        )
    if isinstance(error, ConfigError | ConfigurationException):
        return fail(EXIT_CONFIG, f"configuration error: {config_problem(error)}", CONFIG_HINT)
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
    if result.failed_step == "models":
        return fail(
            EXIT_DESTINATION,
            f"models failed: {describe(error)}",
            out_of_memory_hint(error)
            or "the sync's data is loaded; check the destination (a process holding it, space, "
            "permissions) and run `pump-portal models`; --log-level DEBUG shows the traceback",
        )
    if result.failed_step in ("load", "sync"):
        return fail(
            EXIT_DESTINATION,
            f"destination error: {describe(error)}",
            "check the destination's credentials and that no other process holds it; "
            "the data is kept and loads on the next run",
        )
    logger.error("unexpected failure", exc_info=error)
    return fail(EXIT_FAILED, f"sync failed: {describe(error)}", "see the traceback above")


def missing_hint(error: ConfigFieldMissingException) -> str:
    """Where to set what is missing: the destination's credentials or the portal's key/URL."""
    if "Credentials" in error.spec_name or "ClientConfiguration" in error.spec_name:
        return (
            "set DESTINATION__POSTGRES__CREDENTIALS (or [destination.postgres] credentials in "
            ".dlt/secrets.toml), e.g. postgresql://loader@127.0.0.1:5432/warehouse; "
            "see Configuration in the README"
        )
    return (
        "set SOURCES__PUMP_PORTAL__API_KEY / SOURCES__PUMP_PORTAL__BASE_URL or "
        ".dlt/secrets.toml and .dlt/config.toml ([sources.pump_portal])"
    )


def print_summary(
    result: SyncResult, pipeline: dlt.Pipeline, published: PublishReport | None = None
) -> None:
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
    if report.without_data:
        lines.append(
            f"  {report.pumps_without_data()} pumps have no metadata/summary yet (404 not_found: "
            "never reported); normal, see skipped_items where not needs_action"
        )
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    if result.models_built:
        lines.append(f"  models: {describe_build(result.models_built)}")
    if published is not None:
        lines.append(f"  published for readers: {published}")
    say("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
