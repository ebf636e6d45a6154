"""One sync cycle: finish what an earlier run left pending, extract and load the source, build the
models, and record the run. Knows dlt and the source's report; knows nothing of HTTP.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import dlt
import pendulum
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.exceptions import SignalReceivedException
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.destinations.impl.postgres.configuration import PostgresCredentials
from dlt.extract import DltResource
from dlt.pipeline.exceptions import PipelineStepFailed

from . import deployment
from .deployment import DATASET_NAME, PIPELINE_NAME
from .pump_portal import RunReport, pump_portal
from .pump_portal.errors import InsufficientScope, PortalError, Stopped
from .pump_portal.records import column_hints
from .run_journal import RunJournal
from .shutdown import StopRequested
from .warehouse import (
    DestinationLocked,
    held_open,
    is_duckdb,
    retry_while_locked,
    wait_for_write_lock,
    wait_schedule,
    working_file,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Where each run records itself, beside the data.
RECORD_TABLES = ("sync_runs", "skipped_items")

# Journal rows re-merged into sync_runs on every recorded run: enough to cover a long outage.
JOURNAL_BACKFILL = 50


# Declared so a first run with nulls (no error, no skips) still fixes the types.
SYNC_RUNS_COLUMNS = column_hints(
    {
        "run_at": "timestamp",
        "started_at": "timestamp",
        "finished_at": "timestamp",
        "duration_s": "double",
        "rate_limit_wait_s": "double",
        "failed_step": "text",
        "error": "text",
        "unexpected_api_versions": "text",
        "listing_complete": "bool",
        "skipped_by_code": "json",
        "requests_by_endpoint": "json",
    }
)
SKIPPED_ITEMS_COLUMNS = column_hints(
    {
        "run_at": "timestamp",
        "item_id": "text",
        "http_status": "bigint",
        "code": "text",
        "request_id": "text",
        "needs_action": "bool",
    }
)


@dataclass
class SyncResult:
    report: RunReport
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    outcome: str = "running"  # success | partial | failed | interrupted
    error: BaseException | None = None
    failed_step: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    models_built: Sequence[str] = ()
    # The run's `sync_runs` row went in with its data; what changed after the load is updated.
    recorded_with_load: bool = False

    @property
    def seconds(self) -> float:
        end = self.finished_at or pendulum.now("UTC")
        return (end - self.started_at).total_seconds()


def make_pipeline(
    *,
    destination: Any = None,
    dataset_name: str | None = None,
    pipelines_dir: str | None = None,
    progress: Any = None,
) -> dlt.Pipeline:
    """The `pump_portal` pipeline of this deployment.

    Destination and dataset come from configuration by default (`[pipelines.pump_portal]
    destination_type` / `dataset_name`: DuckDB and `pump_portal`), the pipelines folder from
    `[pipelines.pump_portal] pipelines_dir` (`.dlt/pipelines` in the folder the job runs in).
    """
    kwargs: dict[str, Any] = {
        "pipeline_name": PIPELINE_NAME,
        "pipelines_dir": pipelines_dir or deployment.pipelines_dir(),
        "destination": configured_destination(destination),
        "dataset_name": dataset_name
        or deployment.setting(f"pipelines.{PIPELINE_NAME}.dataset_name", str, DATASET_NAME),
    }
    if progress:
        kwargs["progress"] = progress
    pipeline: dlt.Pipeline = dlt.pipeline(**kwargs)
    return pipeline


def configured_destination(destination: Any = None) -> Any:
    """The destination to load into: `destination` (a name or a dlt destination), else the
    configured `destination_type`, with this project's defaults for DuckDB and Postgres."""
    if destination is None:
        destination = deployment.setting(
            f"pipelines.{PIPELINE_NAME}.destination_type", str, "duckdb"
        )
    if destination == "duckdb":
        # The working file is dlt's `[destination.duckdb] credentials`, which dlt only accepts
        # from the environment or secrets.toml; the default is set here, not in config.toml.
        path = deployment.secret_setting("destination.duckdb.credentials")
        # Every connection dlt opens on the file (the load, `pipeline.sql_client()` for the
        # models) gets the [sync] memory limit and threads: set once per database, globally.
        working = DuckDbCredentials(
            path or deployment.DEFAULT_WORKING_FILE,
            global_config=deployment.SyncSettings.from_config().duckdb_config(),
        )
        # `run(loader_file_format=...)` reaches only the tables named after a resource; the
        # tables the listing routes its rows to (controllers, controller_observations,
        # controller_visibility) took DuckDB's preferred INSERT statements: 1.6 GB at 20,000 pumps.
        return dlt.destinations.duckdb(
            credentials=working, preferred_loader_file_format=DUCKDB_FILE_FORMAT
        )
    if destination == "postgres":
        url = deployment.secret_setting("destination.postgres.credentials")
        if isinstance(url, str) and "://" in url:
            credentials = PostgresCredentials()
            credentials.parse_native_representation(url)
            if credentials.password is None:
                # A URL without a password is valid libpq (trust or peer auth, PGPASSWORD,
                # ~/.pgpass); dlt would call the password missing.
                credentials.password = ""
            return dlt.destinations.postgres(credentials=credentials)
    return destination


def run_sync(
    pipeline: dlt.Pipeline,
    *,
    full_refresh: bool = False,
    run_at: dt.datetime | None = None,
    build_models: Callable[[dlt.Pipeline], Sequence[str]] | None = None,
    stop: StopRequested | None = None,
    lock_waits: tuple[float, ...] | None = None,
    select: Sequence[str] = (),
    **source_options: Any,
) -> SyncResult:
    """Run one cycle and return what happened; never raises for an API or destination failure.

    `stop` (installed by the command line for SIGTERM/SIGINT) ends the cycle where it can stop
    cleanly; `lock_waits` bound every wait for a DuckDB working file another process holds
    (default: `[sync] lock_wait_seconds`); `select` names the resources to load (default: all).
    Every ending is recorded (`record_run`)."""
    started = pendulum.now("UTC")
    report = RunReport(run_at=pendulum.instance(run_at) if run_at else started)
    result = SyncResult(report=report, started_at=started)
    stop = stop or StopRequested()
    if lock_waits is None:
        lock_waits = wait_schedule(deployment.SyncSettings.from_config().lock_wait_seconds)
    working: Path | None = None
    step = "start"  # the step in progress, for a failure outside dlt's own steps

    def while_locked(call: Callable[[], T], what: str) -> T:
        if working is None:
            return call()
        return retry_while_locked(call, working, lock_waits, what, sleep=_sleep_until(stop))

    try:
        working = working_file(pipeline)
        if working is not None:
            # Before extracting: a holder that is already there costs no requests.
            wait_for_write_lock(working, lock_waits, sleep=_sleep_until(stop))
        if pipeline.has_pending_data:
            # dlt would otherwise load only the pending package and drop this cycle's data.
            step = "pending"
            logger.warning("an earlier run left a load pending: loading it first")
            while_locked(pipeline.run, "loading the pending package")
        if full_refresh and build_models is not None:
            # dlt drops raw tables without CASCADE; on Postgres the staging views would block it.
            from .models import drop_models

            drop_models(pipeline)
        step = "extract"
        source = pump_portal(report=report, run_at=report.run_at, stop=stop.event, **source_options)
        if select:
            source = source.with_resources(*select)
        # With a selection, a full refresh drops only the selected resources' tables and state.
        refresh = ("drop_resources" if select else "drop_sources") if full_refresh else None
        data: list[Any] = [source]
        if refresh is None:
            # The run's own rows travel in its load package: one load, one `_dlt_loads` row and
            # one trace per sync. dlt applies a refresh to every source of a run (the record's
            # would drop the data's tables), so a full refresh records its run in a load of its own.
            data += run_records(pipeline, result)
        info = while_locked(
            _loader(
                pipeline,
                data,
                working,
                # One schema for both: a schema of dlt's defaults would turn on the type
                # detection the source switches off.
                schema=source.schema,
                refresh=refresh,
                loader_file_format=loader_file_format(pipeline),
            ),
            "the load",
        )
        result.recorded_with_load = refresh is None
        result.rows = _rows_loaded(pipeline)
        logger.debug("load info: %s", info)
        if build_models is not None:
            step = "models"
            _raise_if_stopped(stop)
            models = build_models
            result.models_built = while_locked(lambda: models(pipeline), "the model build")
        step = "finish"
        if report.nothing_readable():
            raise _nothing_readable(report)
        result.outcome = expected_outcome(report)
        if report.without_data:
            logger.info(
                "%d pumps have no metadata/summary yet (404 not_found); recorded in skipped_items",
                report.pumps_without_data(),
            )
    except Exception as error:  # noqa: BLE001 - the caller turns it into one line and an exit code
        result.error = root_cause(error)
        result.failed_step = _failed_step(error) or step
        signalled = _signal_of(error)
        if signalled is not None:
            stop.note(signalled)
        result.outcome = "interrupted" if stop.is_set() else "failed"
    result.finished_at = pendulum.now("UTC")
    if stop.is_set():
        # dlt's extract would stop again at once; recording must go through.
        stop.clear_dlt_flag()
    record_run(pipeline, result)
    return result


def _loader(
    pipeline: dlt.Pipeline, data: list[Any], working: Path | None, **options: Any
) -> Callable[[], Any]:
    """Extract and normalize `data` once, then load with the working file held open
    (`held_open`); a retry after a locked load loads the package already normalized.

    The steps `pipeline.run` takes, one by one (dlt joins them into one trace), so the file is
    held for the load only: the restore of state from the destination `run` does first comes
    first here too."""
    pending: list[Any] = [data]

    def load() -> Any:
        if pending:
            if pipeline.config.restore_from_destination:
                pipeline.sync_destination()
            pipeline.extract(pending[0], **options)
            pending.clear()
        if pipeline.list_extracted_load_packages():
            pipeline.normalize()
        with held_open(working):
            return pipeline.load()

    return load


def _failed_step(error: BaseException) -> str | None:
    """The dlt step that failed, also under a `DestinationLocked` that gave up on it."""
    current: BaseException | None = error
    for _ in range(5):
        if isinstance(current, PipelineStepFailed):
            return current.step
        current = current.__cause__ if current is not None else None
    return None


def _sleep_until(stop: StopRequested) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if stop.event.wait(seconds):
            _raise_if_stopped(stop)

    return sleep


def _raise_if_stopped(stop: StopRequested) -> None:
    if stop.is_set():
        raise Stopped(f"stopped by {stop.name}")


def _signal_of(error: BaseException) -> int | None:
    """The signal dlt stopped a step for (it intercepts SIGTERM/SIGINT while it loads)."""
    current: BaseException | None = error
    for _ in range(10):
        if current is None:
            return None
        if isinstance(current, SignalReceivedException):
            return int(current.signal_code)
        nested = getattr(current, "exception", None)
        current = nested if isinstance(nested, BaseException) else current.__cause__
    return None


# DuckDB loads from parquet: INSERT statements held a 20,000-pump load in 5 GB of memory and spent
# 47 s loading it; parquet takes under 500 MB and 2 s. jsonl is as fast but DuckDB re-infers its
# types, rewriting timestamp-looking text (bench/RESULTS.md).
DUCKDB_FILE_FORMAT = "parquet"


def loader_file_format(pipeline: dlt.Pipeline) -> str | None:
    """parquet for DuckDB (DUCKDB_FILE_FORMAT); other destinations keep dlt's choice."""
    return DUCKDB_FILE_FORMAT if is_duckdb(pipeline) else None


def expected_outcome(report: RunReport) -> str:
    """The run's outcome once its load and models succeed."""
    if report.nothing_readable():
        return "failed"
    return "partial" if report.skipped else "success"


def _nothing_readable(report: RunReport) -> InsufficientScope:
    return InsufficientScope(
        "the API key can read none of /v1/pumps, /v1/stats and /v1/delegated-users",
        status=403,
        code="insufficient_scope",
        request_id=report.skipped[-1].request_id,
    )


def run_records(
    pipeline: dlt.Pipeline, result: SyncResult, *, ended: bool = False
) -> list[DltResource]:
    """`sync_runs` and `skipped_items` for this run, as resources dlt extracts after the source.

    dlt extracts the sources of one run in order, so by the time these generators run the
    source's extraction is over and the report is complete. Unless the run has `ended`, the row
    says what it will be once loaded (outcome, extraction's end) and `record_run` updates it
    with how it ended. Rows of earlier runs the warehouse missed (a lock, a signal, a failed
    load) come from the journal and go in with it."""
    journal = RunJournal.beside(pipeline.pipelines_dir, pipeline.pipeline_name)

    def sync_runs() -> Iterator[list[dict[str, Any]]]:
        runs = {earlier["run_id"]: earlier for earlier in journal.runs()[-JOURNAL_BACKFILL:]}
        expected = result
        if not ended:
            expected = replace(
                result, outcome=expected_outcome(result.report), finished_at=pendulum.now("UTC")
            )
        row = _run_row(expected)
        runs[row["run_id"]] = row
        yield list(runs.values())

    def skipped_items() -> Iterator[list[dict[str, Any]]]:
        yield _skipped_rows(result)

    return [
        dlt.resource(
            sync_runs,
            name="sync_runs",
            write_disposition="merge",
            primary_key="run_id",
            columns=SYNC_RUNS_COLUMNS,
        ),
        dlt.resource(
            skipped_items,
            name="skipped_items",
            write_disposition="merge",
            primary_key="skip_id",
            columns=SKIPPED_ITEMS_COLUMNS,
        ),
    ]


def record_run(pipeline: dlt.Pipeline, result: SyncResult) -> None:
    """Record the run: in the deployment's run journal always, and in the warehouse's
    `sync_runs` / `skipped_items`: its row went in with the data (update how it ended), or, when
    the run loaded nothing, in a load of its own (with the journal's rows the warehouse missed).

    The warehouse is skipped while a load is pending: a new run() would load only that package.
    """
    note_run(pipeline, result)
    if pipeline.has_pending_data or pipeline.destination is None:
        logger.warning("run not recorded in sync_runs yet: the destination has a pending load")
        return
    try:
        if result.recorded_with_load:
            _update_run_row(pipeline, result)
        else:
            # The first run's failure has no schema yet: dlt then makes one of its own.
            schema = pipeline.default_schema if pipeline.default_schema_name else None
            pipeline.run(run_records(pipeline, result, ended=True), schema=schema)  # type: ignore[arg-type]  # dlt's default is None
    except Exception as error:  # noqa: BLE001 - recording must not hide the run's own outcome
        logger.warning("could not record the run in sync_runs: %s", describe(root_cause(error)))


# What is known only after the load: the rest of the row was complete when extraction ended.
_ENDING = ("finished_at", "duration_s", "outcome", "failed_step", "error")


def _update_run_row(pipeline: dlt.Pipeline, result: SyncResult) -> None:
    row = _run_row(result)
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name("sync_runs")
        assignments = ", ".join(f"{column} = %s" for column in _ENDING)
        client.execute_sql(
            f"update {table} set {assignments} where run_id = %s",
            *(row[column] for column in _ENDING),
            row["run_id"],
        )


def note_run(pipeline: dlt.Pipeline, result: SyncResult) -> RunJournal:
    """Write the run's row to the deployment's run journal (a later line for the same run, as
    after a failed publish, replaces the earlier one)."""
    journal = RunJournal.beside(pipeline.pipelines_dir, pipeline.pipeline_name)
    try:
        journal.append(_run_row(result))
    except OSError as error:
        logger.warning("could not write the run journal %s: %s", journal.path, error)
    return journal


def _run_row(result: SyncResult) -> dict[str, Any]:
    """The run's `sync_runs` row."""
    report = result.report
    stats = report.client_stats
    return {
        "run_id": _run_id(result),
        "run_at": report.run_at,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "duration_s": round(result.seconds, 3),
        "outcome": result.outcome,
        "failed_step": result.failed_step,
        "error": describe(result.error) if result.error else None,
        "pumps_listed": report.pumps_listed,
        "listing_complete": report.listing_complete,
        "pumps_changed": report.pumps_changed,
        "controllers_updated": report.controllers_updated,
        "pumps_vanished": report.pumps_vanished,
        "detail_calls": report.detail_calls,
        "users_listed": report.users_listed,
        "items_skipped": len(report.skipped),
        "pumps_without_data": report.pumps_without_data(),
        "skipped_by_code": report.skipped_by_code() or None,
        "requests": stats.total_requests if stats else 0,
        "requests_by_endpoint": dict(stats.requests) if stats else None,
        "rate_limited_429s": stats.rate_limited if stats else 0,
        "rate_limit_wait_s": round(stats.rate_limit_wait_seconds, 3) if stats else 0.0,
        "retries": stats.retries if stats else 0,
        "unexpected_api_versions": ",".join(sorted(stats.unexpected_api_versions))
        if stats and stats.unexpected_api_versions
        else None,
    }


def _skipped_rows(result: SyncResult) -> list[dict[str, Any]]:
    """The run's `skipped_items` rows."""
    run_id, report = _run_id(result), result.report
    return [
        {"skip_id": f"{run_id}/{n}", **item.as_row(run_id, report.run_at)}
        for n, item in enumerate(report.skipped + report.without_data)
    ]


def _run_id(result: SyncResult) -> str:
    # The real start time: unique per run even when tests stamp two runs with one simulated time.
    return result.started_at.isoformat()


def _rows_loaded(pipeline: dlt.Pipeline) -> dict[str, int]:
    trace = pipeline.last_trace
    if trace is None or trace.last_normalize_info is None:
        return {}
    counts = trace.last_normalize_info.row_counts
    return {
        table: n
        for table, n in sorted(counts.items())
        if not table.startswith("_dlt") and table not in RECORD_TABLES
    }


def root_cause(error: BaseException) -> BaseException:
    """The error a person can act on, under dlt's step and extraction wrappers."""
    seen: set[int] = set()
    current: BaseException | None = error
    best: BaseException = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PortalError | ConfigurationException | DestinationLocked):
            return current
        best = current
        nested = getattr(current, "exception", None)
        current = (
            nested
            if isinstance(nested, BaseException)
            else (current.__cause__ or current.__context__)
        )
    return best


def describe(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
