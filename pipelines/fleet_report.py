"""`pump-portal report`: one HTML page of the fleet and of the job's health, for the person who
runs the job and has no BI tool.

The page is self-contained: plotly.js is inlined once, the charts' data and the styles are in the
page, so it opens from a file, a mail attachment or a laptop without network. Its figures come
from the marts (`sql/marts/`) and the runner's own tables (`sync_runs`, `skipped_items`), read
from the destination the pipeline is configured for, the way `status` reads it (on DuckDB the
published copy, read-only, so a report never blocks a sync); the freshness verdict is `status`'s.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import math
import os
import tempfile
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import dlt
import plotly.graph_objects as go
import plotly.offline

from .deployment import SyncSettings
from .models import ModelSettings, models_schema
from .status import Freshness, Warehouse, format_time, open_warehouse, read_freshness

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 90  # a season of irrigation: long enough for trends, short enough to read per day
LAST_RUNS_SHOWN = 10
SKIPPED_SHOWN = 200  # a fleet with thousands of never-reported pumps lists thousands of 404s a run
FREQUENT_ALARMS_SHOWN = 10
REPORT_NAME = "{dataset}_report.html"
# Without a DuckDB file to sit beside (PostgreSQL): a folder of the deployment.
OTHER_DESTINATIONS_DIR = Path("var")

MARTS_NEEDED = ("fleet_history", "controller_daily", "user_history", "alarms")

ONLINE_COLOR, OFFLINE_COLOR, WATER_COLOR, ALARM_COLOR = "#2e7d32", "#9e9e9e", "#1565c0", "#c62828"


def marts_schema(pipeline: dlt.Pipeline) -> str:
    """Where the marts are: the one place the report learns it, so moving the marts into a schema
    of their own changes only this function."""
    return models_schema(pipeline)


class ReportUnavailable(Exception):
    """The warehouse has nothing to report on yet."""

    hint = "run `pump-portal run` (or `pump-portal models`) first; it builds the marts"


# --- what the page shows ------------------------------------------------------------------------


class DayWater(NamedTuple):
    day_date: dt.date
    water_delivered: float


class DayOnline(NamedTuple):
    day_date: dt.date
    online_pumps: int
    offline_pumps: int


class UserWater(NamedTuple):
    user_id: int
    user_name: str | None
    water_delivered: float


class AlarmFrequency(NamedTuple):
    alarm_code: str | None
    alarm_level: str | None
    alarm_count: int
    pump_count: int
    active_count: int


class SkippedItemRow(NamedTuple):
    run_id: str
    resource: str | None
    item_kind: str | None
    item_id: str | None
    http_status: int | None
    code: str | None
    request_id: str | None
    message: str | None
    needs_action: bool | None


@dataclass(frozen=True)
class FleetReport:
    generated_at: dt.datetime
    source: str  # where the figures were read, for the page's header
    timezone: str  # the models' calendar days are days in this zone
    first_day: dt.date | None  # None: the marts have no day yet
    last_day: dt.date | None
    water_per_day: list[DayWater]
    pumps_online: list[DayOnline]  # days with a sync only: the others have no online state
    water_per_user: list[UserWater]
    frequent_alarms: list[AlarmFrequency]
    alarms_since: dt.datetime | None  # None: every alarm seen (the days shown are all there are)
    freshness: Freshness
    skipped_items: list[SkippedItemRow]
    skipped_total: int  # in the runs shown; more than `skipped_items` past SKIPPED_SHOWN


# --- reading the warehouse ----------------------------------------------------------------------

# Plain SQL that DuckDB and PostgreSQL both read (no dialect translation needed).
DAYS_BUILT = "select min(day_date), max(day_date) from {marts}.fleet_history"
WATER_PER_DAY = """
select day_date, water_delivered
from {marts}.fleet_history
where day_date between {first_day} and {last_day}
order by day_date
"""
# The models' own online state (seen within the threshold before the sync), at each day's last
# sync; a vanished pump is neither.
PUMPS_ONLINE = """
select
    day_date,
    sum(case when is_online then 1 else 0 end) as online_pumps,
    sum(case when is_listed and not is_online then 1 else 0 end) as offline_pumps
from {marts}.controller_daily
where last_sync_at is not null and day_date between {first_day} and {last_day}
group by day_date
order by day_date
"""
WATER_PER_USER = """
select user_id, max(user_name) as user_name, sum(water_delivered) as water_delivered
from {marts}.user_history
where day_date between {first_day} and {last_day}
group by user_id
order by water_delivered desc, user_id
"""
FREQUENT_ALARMS = """
select
    alarm_code,
    alarm_level,
    count(*) as alarm_count,
    count(distinct pump_id) as pump_count,
    sum(case when is_active then 1 else 0 end) as active_count
from {marts}.alarms
where {raised_since}
group by alarm_code, alarm_level
order by alarm_count desc, alarm_code, alarm_level
limit {limit}
"""
SKIPPED_ITEMS = """
select run_id, resource, item_kind, item_id, http_status, code, request_id, message, needs_action
from {dataset}.skipped_items
where run_id in ({run_ids})
"""
TABLES = """
select table_name
from information_schema.tables
where table_schema = {schema}
"""


def read_report(
    pipeline: dlt.Pipeline,
    warehouse: Warehouse,
    sync_settings: SyncSettings,
    model_settings: ModelSettings,
    days: int = DEFAULT_DAYS,
) -> FleetReport:
    """The figures of the `days` days up to the marts' latest day, and the job's health."""
    marts = marts_schema(pipeline)
    missing = set(MARTS_NEEDED) - _tables(warehouse, marts)
    if missing:
        raise ReportUnavailable(
            f"the warehouse has no marts {', '.join(sorted(missing))} in schema {marts} yet"
        )
    freshness = read_freshness(pipeline, warehouse, sync_settings.max_staleness_minutes)
    skipped, skipped_total = _skipped_items(pipeline, warehouse, freshness)
    source = (
        str(warehouse.duckdb_file)
        if warehouse.duckdb_file is not None
        else f"{_destination_name(pipeline)} dataset {pipeline.dataset_name}"
    )
    first_built, last_built = warehouse.rows(DAYS_BUILT.format(marts=marts))[0]
    if last_built is None:
        return FleetReport(
            _now(), source, model_settings.timezone, None, None, [], [], [], [], None,
            freshness, skipped, skipped_total,
        )  # fmt: skip
    last_day = _day(last_built)
    first_day = max(_day(first_built), last_day - dt.timedelta(days=days - 1))
    window = {"marts": marts, "first_day": _date(first_day), "last_day": _date(last_day)}
    # An alarm counts from the start of the window's first day in the models' time zone; when
    # the window is the whole history, alarms raised before the first sync count too.
    alarms_since = (
        dt.datetime.combine(first_day, dt.time(), tzinfo=zoneinfo.ZoneInfo(model_settings.timezone))
        if first_day > _day(first_built)
        else None
    )
    raised_since = "true"
    if alarms_since is not None:
        raised_since = f"coalesce(raised_at, first_reported_at) >= {_instant(alarms_since)}"
    alarms_sql = FREQUENT_ALARMS.format(
        marts=marts, raised_since=raised_since, limit=FREQUENT_ALARMS_SHOWN
    )
    return FleetReport(
        generated_at=_now(),
        source=source,
        timezone=model_settings.timezone,
        first_day=first_day,
        last_day=last_day,
        water_per_day=[
            DayWater(_day(day), float(water))
            for day, water in warehouse.rows(WATER_PER_DAY.format(**window))
        ],
        pumps_online=[
            DayOnline(_day(day), int(online), int(offline))
            for day, online, offline in warehouse.rows(PUMPS_ONLINE.format(**window))
        ],
        water_per_user=[
            UserWater(int(user_id), name, float(water or 0.0))
            for user_id, name, water in warehouse.rows(WATER_PER_USER.format(**window))
        ],
        frequent_alarms=[
            AlarmFrequency(code, level, int(count), int(pumps), int(active))
            for code, level, count, pumps, active in warehouse.rows(alarms_sql)
        ],
        alarms_since=alarms_since,
        freshness=freshness,
        skipped_items=skipped,
        skipped_total=skipped_total,
    )


def _skipped_items(
    pipeline: dlt.Pipeline, warehouse: Warehouse, freshness: Freshness
) -> tuple[list[SkippedItemRow], int]:
    """The skipped items of the runs shown, run by run (newest first), those that need action
    first; at most SKIPPED_SHOWN of them, and how many there are."""
    order = {run["run_id"]: n for n, run in enumerate(freshness.runs[:LAST_RUNS_SHOWN])}
    # dlt creates the table with the first skipped item: a clean deployment has none.
    if not order or "skipped_items" not in _tables(warehouse, pipeline.dataset_name):
        return [], 0
    sql = SKIPPED_ITEMS.format(
        dataset=pipeline.dataset_name, run_ids=", ".join(_text(run_id) for run_id in order)
    )
    items = [SkippedItemRow(*row) for row in warehouse.rows(sql)]
    items.sort(
        key=lambda item: (
            order[item.run_id],
            not item.needs_action,
            item.resource or "",
            item.item_kind or "",
            item.item_id or "",
        )
    )
    return items[:SKIPPED_SHOWN], len(items)


def _tables(warehouse: Warehouse, schema: str) -> set[str]:
    return {name for (name,) in warehouse.rows(TABLES.format(schema=_text(schema)))}


def _destination_name(pipeline: dlt.Pipeline) -> str:
    return pipeline.destination.destination_name if pipeline.destination else "?"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _date(day: dt.date) -> str:
    return f"date '{day.isoformat()}'"


def _instant(moment: dt.datetime) -> str:
    return f"timestamp with time zone '{moment.isoformat(sep=' ')}'"


def _day(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


# --- writing the page ---------------------------------------------------------------------------


def write_report(
    pipeline: dlt.Pipeline,
    sync_settings: SyncSettings,
    model_settings: ModelSettings,
    output: Path | None = None,
    days: int = DEFAULT_DAYS,
) -> Path:
    """Read the warehouse, write the page (to `output`, else beside the DuckDB file read, else
    under var/), and return its path."""
    with open_warehouse(pipeline, sync_settings) as warehouse:
        report = read_report(pipeline, warehouse, sync_settings, model_settings, days)
        target = output or default_output(pipeline, warehouse)
    _write_atomically(target, render_page(report))
    return target


def default_output(pipeline: dlt.Pipeline, warehouse: Warehouse) -> Path:
    name = REPORT_NAME.format(dataset=pipeline.dataset_name)
    if warehouse.duckdb_file is not None:
        return warehouse.duckdb_file.parent / name
    return OTHER_DESTINATIONS_DIR / name


def _write_atomically(target: Path, page: str) -> None:
    """A browser or a web server showing the page never reads half of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(page)
        os.chmod(scratch, 0o644)  # mkstemp's 0600 would hide the page from a web server
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def render_page(report: FleetReport) -> str:
    """The whole page: plotly.js once in the head, each chart's figure and its numbers."""
    window = (
        f"{report.first_day} to {report.last_day} (days in {report.timezone})"
        if report.first_day is not None
        else "no day built yet"
    )
    sections = [
        _freshness_section(report.freshness),
        _water_per_day_section(report),
        _pumps_online_section(report),
        _water_per_user_section(report),
        _alarms_section(report),
        _runs_section(report),
    ]
    return PAGE.format(
        title=_e(f"Pump fleet report, {report.last_day or 'no data yet'}"),
        plotly_js=plotly.offline.get_plotlyjs(),
        style=STYLE,
        generated=_e(format_time(report.generated_at)),
        source=_e(report.source),
        window=_e(window),
        sections="\n".join(sections),
    )


def _freshness_section(freshness: Freshness) -> str:
    # the words `pump-portal status` ends with
    if freshness.problems:
        state, verdict = "stale", "STALE: " + "; ".join(freshness.problems)
    else:
        state, verdict = "fresh", f"fresh (threshold {freshness.threshold_minutes:g} minutes)"
    paragraph = f'<p class="verdict {state}" id="freshness-verdict">{_e(verdict)}</p>'
    facts = _definitions(
        "freshness-facts",
        [
            ("latest last_seen", format_time(freshness.latest_seen)),
            ("latest fleet snapshot", format_time(freshness.latest_snapshot)),
            ("last successful run end", format_time(freshness.last_good)),
        ],
    )
    return _section("freshness", "Data freshness", paragraph + facts)


def _water_per_day_section(report: FleetReport) -> str:
    rows = report.water_per_day
    total = math.fsum(day.water_delivered for day in rows)
    body = (
        f'<p class="headline">Total in these days: <span id="water-total">{_water(total)}</span>'
        " (the API's unit)</p>"
    )
    if rows:
        figure = go.Figure(
            go.Bar(
                x=[day.day_date.isoformat() for day in rows],
                y=[day.water_delivered for day in rows],
                marker_color=WATER_COLOR,
                hovertemplate="%{x|%Y-%m-%d}: %{y:,.1f}<extra></extra>",
                name="water delivered",
            ),
            layout={
                "xaxis": _days_axis(len(rows)),
                "yaxis": {"title": {"text": "water delivered"}},
            },
        )
        body += _chart("chart-water-per-day", figure)
    body += _numbers(
        "water-per-day-numbers",
        ("day", "water delivered"),
        [(day.day_date.isoformat(), _water(day.water_delivered)) for day in rows],
        "no day in the window",
    )
    return _section("water-per-day", "Water delivered per day, whole fleet", body)


def _pumps_online_section(report: FleetReport) -> str:
    rows = report.pumps_online
    body = ""
    if rows:
        latest = rows[-1]
        body += (
            f'<p class="headline" id="pumps-online-latest">At the last sync of {latest.day_date}:'
            f" {latest.online_pumps:,} online, {latest.offline_pumps:,} offline</p>"
        )
        days = [day.day_date.isoformat() for day in rows]
        figure = go.Figure(
            [
                go.Bar(
                    x=days,
                    y=[day.online_pumps for day in rows],
                    name="online",
                    marker_color=ONLINE_COLOR,
                ),
                go.Bar(
                    x=days,
                    y=[day.offline_pumps for day in rows],
                    name="offline",
                    marker_color=OFFLINE_COLOR,
                ),
            ],
            layout={
                "barmode": "stack",
                "xaxis": _days_axis(len(rows)),
                "yaxis": {
                    "title": {"text": "pumps"},
                    **_count_axis(max(day.online_pumps + day.offline_pumps for day in rows)),
                },
                # online first, as in the table (plotly lists stacked traces bottom-up)
                "legend": {"orientation": "h", "traceorder": "normal"},
            },
        )
        body += _chart("chart-pumps-online", figure)
    body += _numbers(
        "pumps-online-numbers",
        ("day", "online", "offline"),
        [
            (day.day_date.isoformat(), _count(day.online_pumps), _count(day.offline_pumps))
            for day in rows
        ],
        "no sync in the window",
    )
    explanation = (
        '<p class="note">At each day\'s last sync: online means listed and seen within the '
        "online threshold before the sync; days without a sync have no bar.</p>"
    )
    return _section("pumps-online", "Pumps online and offline", explanation + body)


def _water_per_user_section(report: FleetReport) -> str:
    rows = report.water_per_user
    body = ""
    if rows:
        figure = _ranked_bars(
            [user.water_delivered for user in rows],
            [_user_label(user) for user in rows],
            color=WATER_COLOR,
            number="%{x:,.1f}",
            hover="%{y}: %{x:,.1f}<extra></extra>",
            x_axis={"title": {"text": "water delivered"}},
        )
        body += _chart("chart-water-per-user", figure)
    body += _numbers(
        "water-per-user-numbers",
        ("user", "user id", "water delivered"),
        [(user.user_name or "", str(user.user_id), _water(user.water_delivered)) for user in rows],
        "no delegated user in the window",
    )
    note = (
        '<p class="note">A pump shared by two users counts for both, as in the portal\'s '
        "per-user statistics.</p>"
    )
    return _section("water-per-user", "Water delivered per delegated user", note + body)


def _alarms_section(report: FleetReport) -> str:
    rows = report.frequent_alarms
    body = ""
    if rows:
        figure = _ranked_bars(
            [alarm.alarm_count for alarm in rows],
            [_alarm_label(alarm) for alarm in rows],
            color=ALARM_COLOR,
            number="%{x:,}",
            hover="%{y}: %{x:,} alarms<extra></extra>",
            x_axis={
                "title": {"text": "alarms raised"},
                **_count_axis(max(alarm.alarm_count for alarm in rows)),
            },
        )
        body += _chart("chart-frequent-alarms", figure)
    body += _numbers(
        "frequent-alarms-numbers",
        ("code", "level", "alarms", "pumps", "active now"),
        [
            (
                alarm.alarm_code or "",
                alarm.alarm_level or "",
                _count(alarm.alarm_count),
                _count(alarm.pump_count),
                _count(alarm.active_count),
            )
            for alarm in rows
        ],
        "no alarm raised in the window",
    )
    since = (
        "every alarm the summaries listed"
        if report.alarms_since is None
        else f"alarms raised since {report.alarms_since.isoformat(sep=' ')}"
    )
    note = f'<p class="note">By code and level, of {_e(since)}.</p>'
    title = f"Most frequent alarms (top {FREQUENT_ALARMS_SHOWN})"
    return _section("frequent-alarms", title, note + body)


def _runs_section(report: FleetReport) -> str:
    runs = report.freshness.runs[:LAST_RUNS_SHOWN]
    body = _numbers(
        "last-runs",
        ("started", "seconds", "outcome", "failed step", "listed", "changed", "details",
         "skipped", "requests", "429s", "error"),
        [
            (
                format_time(run.get("started_at")),
                f"{run.get('duration_s') or 0:.1f}",
                run.get("outcome") or "?",
                run.get("failed_step") or "",
                _count(run.get("pumps_listed") or 0),
                _count(run.get("pumps_changed") or 0),
                _count(run.get("detail_calls") or 0),
                _count(run.get("items_skipped") or 0),
                _count(run.get("requests") or 0),
                _count(run.get("rate_limited_429s") or 0),
                run.get("error") or "",
            )
            for run in runs
        ],
        "no sync has been recorded yet",
    )  # fmt: skip
    started = {run["run_id"]: format_time(run.get("started_at")) for run in runs}
    shown = len(report.skipped_items)
    body += (
        f'<h3>Skipped items of these runs (<span id="skipped-total">{report.skipped_total:,}'
        f"</span>{f', the first {shown:,} shown' if shown < report.skipped_total else ''})</h3>"
        '<p class="note">"needs action" items made their run partial (exit 10); the others are '
        "the portal's normal state, such as a pump that has never reported.</p>"
    )
    body += _numbers(
        "skipped-items",
        ("run started", "resource", "kind", "item", "HTTP", "code", "needs action",
         "request id", "message"),
        [
            (
                started[item.run_id],
                item.resource or "",
                item.item_kind or "",
                item.item_id or "",
                "" if item.http_status is None else str(item.http_status),
                item.code or "",
                "yes" if item.needs_action else "no",
                item.request_id or "",
                item.message or "",
            )
            for item in report.skipped_items
        ],
        "nothing skipped",
    )  # fmt: skip
    return _section("last-runs-section", f"Last {LAST_RUNS_SHOWN} runs", body)


def _chart(div_id: str, figure: go.Figure) -> str:
    """The figure as a div and its script; plotly.js itself is in the page's head once."""
    figure.update_layout(
        template="plotly_white",
        margin={"l": 10, "r": 40, "t": 10, "b": 10},
        showlegend=len(figure.data) > 1,
    )
    if figure.layout.height is None:
        figure.update_layout(height=320)
    chart: str = figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        # No tool bar: it covers the short charts, and its logo links to plotly's site.
        config={"displayModeBar": False, "responsive": True},
    )
    return f'<figure class="chart">{chart}</figure>'


def _days_axis(days: int) -> dict[str, Any]:
    """Calendar days: one label a day, or a label every few days when there are many, never the
    hours plotly would put between the days of a short window."""
    every = max(1, math.ceil(days / 12))
    return {"type": "date", "tickformat": "%Y-%m-%d", "dtick": every * 86_400_000}


def _ranked_bars(
    values: Sequence[float],
    labels: Sequence[str],
    *,
    color: str,
    number: str,
    hover: str,
    x_axis: dict[str, Any],
) -> go.Figure:
    """Horizontal bars, largest first as the rows come, each labelled with its number."""
    return go.Figure(
        go.Bar(
            x=list(values),
            y=list(labels),
            orientation="h",
            marker_color=color,
            texttemplate=number,
            textposition="outside",
            cliponaxis=False,
            hovertemplate=hover,
        ),
        layout={
            "height": _bars_height(len(values)),
            "yaxis": {"autorange": "reversed", "automargin": True},
            "xaxis": x_axis,
        },
    )


def _count_axis(largest: int) -> dict[str, Any]:
    """Whole numbers only: a count of 1 would otherwise get ticks at 0.2, 0.4, ..."""
    return {"rangemode": "tozero", "tickformat": ",d", "dtick": 1} if largest <= 10 else {}


def _bars_height(bars: int) -> int:
    """A horizontal bar chart tall enough for one readable label a bar."""
    return 80 + 28 * bars


def _user_label(user: UserWater) -> str:
    # Display names need not be unique; the id tells two "Farm" users apart.
    return f"{user.user_name or 'user'} ({user.user_id})"


def _alarm_label(alarm: AlarmFrequency) -> str:
    return f"{alarm.alarm_code or 'no code'} ({alarm.alarm_level or 'no level'})"


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>{body}</section>'


def _definitions(element_id: str, facts: Iterable[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{_e(term)}</dt><dd>{_e(value)}</dd>" for term, value in facts)
    return f'<dl id="{element_id}">{items}</dl>'


def _numbers(
    table_id: str, header: Sequence[str], rows: Sequence[Sequence[str]], empty: str
) -> str:
    """The numbers behind a chart (or a list) as a table: readable without the chart, and
    searchable and copyable."""
    if not rows:
        return f'<p class="empty" id="{table_id}">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _water(value: float) -> str:
    # Units are the API's; a tenth is finer than any meter a pump reports with.
    return f"{value:,.1f}"


def _count(value: int) -> str:
    return f"{value:,}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1rem 1.5rem; color: #212121; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #e0e0e0; padding-bottom: 0.2rem; margin-top: 2rem; }
.meta, .note { color: #616161; font-size: 0.9rem; }
.headline { font-size: 1.1rem; }
.verdict { font-weight: bold; font-size: 1.2rem; }
.fresh { color: #2e7d32; }
.stale { color: #c62828; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { color: #616161; }
dd { margin: 0; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border-bottom: 1px solid #eeeeee; padding: 0.2rem 0.6rem; text-align: left;
         vertical-align: top; }
th { background: #fafafa; }
figure.chart { margin: 0; }
.empty { color: #616161; font-style: italic; }
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
<script type="text/javascript">{plotly_js}</script>
</head>
<body>
<header>
<h1>Pump fleet report</h1>
<p class="meta">Generated {generated} from {source}; {window}.</p>
</header>
{sections}
</body>
</html>
"""
