"""`pump-portal report`: the page headless Chromium draws, its charts and numbers against the marts.

The four-day model story (tests/model_scenarios.py) is synced over real HTTP from the emulator
into a real DuckDB file, with a forbidden pump summary before the last sync so a run has a
skipped item; the reader copy is published as `run` publishes it, and the real command line
writes the page. Chromium renders it with every host unresolvable (`--dump-dom` prints the DOM
after plotly drew). Rendering tests skip when `chromium` is not installed; with
PUMP_PORTAL_REQUIRE_CHROMIUM=1 (as in CI) a missing browser fails them instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
import duckdb
import plotly.offline
import pytest
from bs4 import BeautifulSoup, Tag

from pipelines.cli import EXIT_DESTINATION, EXIT_OK, build_parser, publish_for
from pipelines.models import build_models, models_schema
from pipelines.runner import make_pipeline
from pipelines.status import format_time
from tests import model_scenarios as story
from tests.checkout import recipe
from tests.conftest import rows, sync
from tests.portal_emulator import Fleet, PortalEmulator
from tests.test_models import POSTGRES_URL, drop_schemas, require_postgres

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium")
CHARTS = ("chart-water-per-day", "chart-pumps-online", "chart-water-per-user")
CHARTS += ("chart-frequent-alarms",)


def require_chromium() -> str:
    """Skip without the browser; fail instead with PUMP_PORTAL_REQUIRE_CHROMIUM=1."""
    if CHROMIUM is not None:
        return CHROMIUM
    problem = "headless Chromium (`chromium` on PATH) is not installed"
    if os.environ.get("PUMP_PORTAL_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"{problem} (PUMP_PORTAL_REQUIRE_CHROMIUM=1: a missing browser is a failure)")
    pytest.skip(f"{problem}: apt-get install chromium")


def report(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The real command line: `python -m pipelines.cli report ...`."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "report", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class Deployment:
    pipeline: dlt.Pipeline
    env: dict[str, str]
    folder: Path

    def mart(self, sql: str) -> list[tuple[Any, ...]]:
        return rows(
            self.pipeline, sql.format(marts=models_schema(self.pipeline), raw="pump_portal")
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The story synced and published as `pump-portal run` leaves a DuckDB deployment."""
    folder = tmp_path_factory.mktemp("report")
    working = folder / "pump_portal_sync.duckdb"
    published = folder / "pump_portal_warehouse.duckdb"
    pipelines_dir = folder / "dlt_pipelines"
    pipeline = make_pipeline(
        destination=dlt.destinations.duckdb(str(working)),
        dataset_name="pump_portal",
        pipelines_dir=str(pipelines_dir),
        progress=None,
    )
    emulator = PortalEmulator(story.make_fleet())
    emulator.start()
    syncs = 0
    try:

        def one_sync() -> None:
            nonlocal syncs
            syncs += 1
            if syncs == len(story.RUNS):  # the last run skips pump-d's summary: partial
                emulator.inject(
                    "/v1/pumps/:pumpId/summary", status=403, code="forbidden", match="pump-d"
                )
            result = sync(emulator, pipeline, build_models=build_models)
            assert result.error is None, result.error

        story.play(emulator, one_sync)
    finally:
        emulator.stop()
    publish_for(pipeline, working, published)
    env = {
        "DESTINATION__DUCKDB__CREDENTIALS": str(working),
        "SYNC__PUBLISH_TO": str(published),
        "PIPELINES__PUMP_PORTAL__PIPELINES_DIR": str(pipelines_dir),
    }
    yield Deployment(pipeline, env, folder)


@pytest.fixture(scope="module")
def page_path(deployment: Deployment) -> Path:
    done = report(deployment.env)
    assert done.returncode == EXIT_OK, done.stderr
    path = deployment.folder / "pump_portal_report.html"
    assert done.stdout.strip() == f"report written to {path}"
    return path


@pytest.fixture(scope="module")
def page(page_path: Path) -> BeautifulSoup:
    """The page as written (before any script ran)."""
    return BeautifulSoup(page_path.read_text(encoding="utf-8"), "html.parser")


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


@pytest.fixture(scope="module")
def rendered(
    chromium: str, page_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> BeautifulSoup:
    """The DOM after headless Chromium ran the page's scripts, with no host reachable (the
    browser is asked for first: without it the tests skip before syncing anything)."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            # Any fetch fails: the charts must be drawn from the page alone.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1200,3000",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page_path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return BeautifulSoup(done.stdout, "html.parser")


def table(soup: BeautifulSoup, table_id: str) -> list[list[str]]:
    element = soup.find(id=table_id)
    assert isinstance(element, Tag) and element.name == "table", f"no table #{table_id}"
    return [[cell.get_text() for cell in row.find_all("td")] for row in element.select("tbody tr")]


def number(text: str) -> float:
    return float(text.replace(",", ""))


def bars(soup: BeautifulSoup, chart_id: str) -> list[list[Tag]]:
    """The bars plotly drew in a chart, trace by trace."""
    chart = soup.find(id=chart_id)
    assert isinstance(chart, Tag), f"no chart #{chart_id}"
    assert chart.select("svg.main-svg"), f"#{chart_id} holds no drawn SVG"
    return [trace.select("g.point path") for trace in chart.select("g.barlayer g.trace.bars")]


def bar_labels(soup: BeautifulSoup, chart_id: str) -> list[str]:
    chart = soup.find(id=chart_id)
    assert isinstance(chart, Tag)
    return [label.get_text() for label in chart.select("g.barlayer text.bartext")]


def fetched_urls(soup: BeautifulSoup) -> list[str]:
    """Every http(s) or protocol-relative address the page would make a browser fetch: script,
    style sheet, image, frame, media and font sources, and CSS url()/@import."""
    remote = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
    found = []
    for element in soup.find_all(True):
        for attribute in ("src", "srcset", "poster", "data", "background"):
            value = element.get(attribute)
            if isinstance(value, str) and remote.match(value):
                found.append(f"<{element.name} {attribute}={value}>")
        if element.name == "link" and isinstance(element.get("href"), str):
            found.append(f"<link href={element['href']}>")  # a page of its own links nothing
    css = [style.get_text() for style in soup.find_all("style")]
    css += [str(element["style"]) for element in soup.find_all(style=True)]
    for text in css:
        found += re.findall(r"url\(\s*['\"]?\s*(?:https?:)?//[^)]*\)", text, re.IGNORECASE)
        found += re.findall(r"@import[^;]*", text, re.IGNORECASE)
    return found


def test_fetched_urls_finds_what_a_browser_would_fetch():
    # the no-network checks below are only as good as this detector
    page = BeautifulSoup(
        '<script src="https://cdn.example/plotly.js"></script>'
        '<link rel="stylesheet" href="//fonts.example/css">'
        '<img src="http://tiles.example/1.png"><a href="https://plotly.com/">a link</a>'
        '<style>@import "x.css"; b { background: url("https://x.example/b.png") }</style>'
        '<div style="background:url(//x.example/c.png)"></div><script>var u = "https://no";</script>',
        "html.parser",
    )
    assert len(fetched_urls(page)) == 6


# --- the command ---------------------------------------------------------------------------------


def test_report_page_embeds_plotly_once_and_fetches_nothing(page: BeautifulSoup, page_path: Path):
    assert fetched_urls(page) == []
    scripts = [script.get_text() for script in page.find_all("script")]
    assert sum(plotly.offline.get_plotlyjs() in script for script in scripts) == 1
    assert page_path.stat().st_size < 6_000_000


def test_report_charts_are_drawn_offline_with_a_bar_per_mart_row(
    rendered: BeautifulSoup, deployment: Deployment
):
    assert fetched_urls(rendered) == []  # nor after plotly added its styles
    [(water_days,)] = deployment.mart("select count(*) from {marts}.fleet_history")
    [(synced_days,)] = deployment.mart(
        "select count(distinct day_date) from {marts}.controller_daily "
        "where last_sync_at is not null"
    )
    [(users,)] = deployment.mart("select count(distinct user_id) from {marts}.user_history")
    [(alarm_kinds,)] = deployment.mart(
        "select count(*) from (select distinct alarm_code, alarm_level from {marts}.alarms) as k"
    )
    expected = {
        "chart-water-per-day": [water_days],
        "chart-pumps-online": [synced_days, synced_days],  # online, offline stacked
        "chart-water-per-user": [users],
        "chart-frequent-alarms": [alarm_kinds],
    }
    assert (water_days, synced_days, users, alarm_kinds) == (4, 3, 2, 2)  # the story's
    for chart in CHARTS:
        drawn = bars(rendered, chart)
        assert [len(trace) for trace in drawn] == expected[chart], chart
        # every bar of the story is non-zero, so each has a shape (an empty bar is "M0,0Z")
        assert all(bar.get("d") not in (None, "", "M0,0Z") for trace in drawn for bar in trace)


def test_report_water_per_day_equals_fleet_history(rendered: BeautifulSoup, deployment: Deployment):
    expected = deployment.mart(
        "select day_date, water_delivered from {marts}.fleet_history order by day_date"
    )
    shown = table(rendered, "water-per-day-numbers")
    assert [(day, number(water)) for day, water in shown] == [
        (day.isoformat(), water) for day, water in expected
    ]
    total = rendered.find(id="water-total")
    assert total is not None
    [(mart_total,)] = deployment.mart("select sum(water_delivered) from {marts}.fleet_history")
    assert number(total.get_text()) == mart_total == 35.0


def test_report_pumps_online_equals_controller_daily(
    rendered: BeautifulSoup, deployment: Deployment
):
    expected = deployment.mart(
        """select day_date,
            sum(case when is_online then 1 else 0 end),
            sum(case when is_listed and not is_online then 1 else 0 end)
        from {marts}.controller_daily where last_sync_at is not null
        group by day_date order by day_date"""
    )
    shown = table(rendered, "pumps-online-numbers")
    assert [(day, int(on), int(off)) for day, on, off in shown] == [
        (day.isoformat(), on, off) for day, on, off in expected
    ]
    # the portal's own counts agree in the story (same 15-minute window)
    portal = deployment.mart(
        "select day_date, active_controllers, offline_controllers from {marts}.fleet_history "
        "where last_sync_at is not null order by day_date"
    )
    assert expected == portal
    latest = rendered.find(id="pumps-online-latest")
    assert latest is not None
    day, online, offline = expected[-1]
    assert latest.get_text() == f"At the last sync of {day}: {online} online, {offline} offline"


def test_report_water_per_user_equals_user_history(rendered: BeautifulSoup, deployment: Deployment):
    expected = deployment.mart(
        """select max(user_name), user_id, sum(water_delivered) as water
        from {marts}.user_history group by user_id order by water desc, user_id"""
    )
    assert expected == [("Acme Farms", 101, 25.5), ("Beta Growers", 102, 9.5)]
    shown = table(rendered, "water-per-user-numbers")
    assert [(name, int(user), number(water)) for name, user, water in shown] == expected
    # the numbers drawn on the bars, as the browser rendered them
    assert [number(label) for label in bar_labels(rendered, "chart-water-per-user")] == [
        water for _, _, water in expected
    ]


def test_report_frequent_alarms_equal_the_alarms_mart(
    rendered: BeautifulSoup, deployment: Deployment
):
    expected = deployment.mart(
        """select alarm_code, alarm_level, count(*) as alarms, count(distinct pump_id),
            sum(case when is_active then 1 else 0 end)
        from {marts}.alarms group by alarm_code, alarm_level
        order by alarms desc, alarm_code, alarm_level"""
    )
    assert expected == [("DRY_RUN", "critical", 1, 1, 1), ("LOW_PRESSURE", "warning", 1, 1, 0)]
    shown = table(rendered, "frequent-alarms-numbers")
    assert [(code, level, *map(int, counts)) for code, level, *counts in shown] == expected
    assert [int(label) for label in bar_labels(rendered, "chart-frequent-alarms")] == [
        count for _, _, count, _, _ in expected
    ]


def test_report_freshness_and_last_runs_match_status(
    rendered: BeautifulSoup, deployment: Deployment
):
    verdict = rendered.find(id="freshness-verdict")
    assert verdict is not None and verdict.get_text() == "fresh (threshold 60 minutes)"
    [(last_seen, last_snapshot)] = deployment.mart(
        "select (select max(last_seen) from {raw}.controllers), "
        "(select max(snapshot_at) from {raw}.fleet_snapshots)"
    )
    facts = rendered.find(id="freshness-facts")
    assert facts is not None
    values = [value.get_text() for value in facts.find_all("dd")]
    assert values[:2] == [format_time(last_seen), format_time(last_snapshot)]
    assert values[:2] == ["2025-03-23 22:00:00 UTC", "2025-03-23 22:00:00 UTC"]

    runs = deployment.mart(
        "select started_at, outcome, pumps_listed, items_skipped from {raw}.sync_runs "
        "order by started_at desc"
    )
    shown = table(rendered, "last-runs")
    assert [(row[0], row[2], int(row[4]), int(row[7])) for row in shown] == [
        (format_time(started), outcome, listed, skipped)
        for started, outcome, listed, skipped in runs
    ]
    assert [row[2] for row in shown] == ["partial"] + ["success"] * 5

    skipped = deployment.mart(
        "select r.started_at, s.resource, s.item_kind, s.item_id, s.http_status, s.code, "
        "s.request_id from {raw}.skipped_items as s join {raw}.sync_runs as r using (run_id)"
    )
    assert [(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], r[7]) for r in table(
        rendered, "skipped-items"
    )] == [
        (format_time(started), resource, kind, item, status, code, "yes", request_id)
        for started, resource, kind, item, status, code, request_id in skipped
    ]  # fmt: skip
    assert [row[3:6] for row in skipped] == [("pump-d", 403, "forbidden")]


def test_report_days_window_ends_at_the_latest_day(deployment: Deployment, tmp_path: Path):
    output = tmp_path / "two-days.html"
    stale = {**deployment.env, "SYNC__MAX_STALENESS_MINUTES": "0.001"}  # as status judges it
    done = report(stale, "--days", "2", "--output", str(output))
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.strip() == f"report written to {output}"
    page = BeautifulSoup(output.read_text(encoding="utf-8"), "html.parser")
    expected = deployment.mart(
        "select day_date, water_delivered from {marts}.fleet_history "
        "where day_date >= date '2025-03-22' order by day_date"
    )
    assert [(day, number(water)) for day, water in table(page, "water-per-day-numbers")] == [
        (day.isoformat(), water) for day, water in expected
    ]
    # both alarms were raised before 2025-03-22 00:00 (the models' time zone, UTC)
    assert [day for day, *_ in expected] == [story.D3, story.D4]
    empty = page.find(id="frequent-alarms-numbers")
    assert empty is not None and empty.get_text() == "no alarm raised in the window"
    verdict = page.find(id="freshness-verdict")
    assert verdict is not None
    assert verdict.get_text() == "STALE: no successful run in the last 0.001 minutes"


def test_readme_report_example_is_valid_command_line():
    lines = [line.split("#")[0].split() for line in recipe("report").strip().splitlines()]
    assert [line[0] for line in lines] == [".venv/bin/pump-portal"] * 2
    parsed = [build_parser().parse_args(line[1:]) for line in lines]
    assert [(args.command, args.days, args.output) for args in parsed] == [
        ("report", 90, None),
        ("report", 30, Path("/srv/www/fleet.html")),
    ]


@pytest.mark.parametrize(
    ("working_file", "error"),
    [
        ("absent", "ERROR: cannot read the warehouse: "),
        ("empty", "ERROR: no report: the warehouse has no marts alarms, controller_daily, "),
    ],
)
def test_report_before_the_first_sync_fails_with_one_line(
    tmp_path: Path, working_file: str, error: str
):
    working = tmp_path / "pump_portal_sync.duckdb"
    if working_file == "empty":
        duckdb.connect(str(working)).close()
    done = report(
        {
            "DESTINATION__DUCKDB__CREDENTIALS": str(working),
            "SYNC__PUBLISH_TO": str(tmp_path / "pump_portal_warehouse.duckdb"),
            "PIPELINES__PUMP_PORTAL__PIPELINES_DIR": str(tmp_path / "dlt_pipelines"),
        }
    )
    assert done.returncode == EXIT_DESTINATION
    assert done.stderr.startswith(error), done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("*.html"))


@pytest.mark.postgres
def test_report_reads_postgres_by_configuration(tmp_path: Path):
    require_postgres()
    dataset = f"pump_portal_{uuid.uuid4().hex[:10]}"
    pipeline = make_pipeline(
        destination=dlt.destinations.postgres(POSTGRES_URL),
        dataset_name=dataset,
        pipelines_dir=str(tmp_path / "dlt_pipelines"),
        progress=None,
    )
    try:
        with PortalEmulator(Fleet.generate(pumps=20, users=3, seed=7)) as emulator:
            for _ in range(2):  # the second sync has readings to credit water to
                emulator.report(emulator.fleet.pump_ids()[:8], water=2.5)
                result = sync(emulator, pipeline, build_models=build_models)
                assert result.error is None, result.error
                emulator.advance(3600)
        done = report(
            {
                "PIPELINES__PUMP_PORTAL__DESTINATION_TYPE": "postgres",
                "DESTINATION__POSTGRES__CREDENTIALS": POSTGRES_URL,
                "PIPELINES__PUMP_PORTAL__DATASET_NAME": dataset,
                "PIPELINES__PUMP_PORTAL__PIPELINES_DIR": str(tmp_path / "dlt_pipelines"),
            },
            cwd=tmp_path,
        )
        assert done.returncode == EXIT_OK, done.stderr
        output = tmp_path / "var" / f"{dataset}_report.html"  # no DuckDB file to sit beside
        assert done.stdout.strip() == f"report written to {output.relative_to(tmp_path)}"
        page = BeautifulSoup(output.read_text(encoding="utf-8"), "html.parser")
        marts = f"{dataset}_models"
        water = rows(
            pipeline, f"select day_date, water_delivered from {marts}.fleet_history order by 1"
        )
        assert [(d, number(w)) for d, w in table(page, "water-per-day-numbers")] == [
            (day.isoformat(), value) for day, value in water
        ]
        per_user = rows(
            pipeline,
            f"""select max(user_name), user_id, sum(water_delivered) as water
            from {marts}.user_history group by user_id order by water desc, user_id""",
        )
        assert [
            (name or None, int(user), number(value))
            for name, user, value in table(page, "water-per-user-numbers")
        ] == per_user
        assert sum(value for *_, value in per_user) > 0
        assert len(table(page, "last-runs")) == 2
    finally:
        drop_schemas(pipeline)
