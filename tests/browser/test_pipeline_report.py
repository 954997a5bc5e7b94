"""The pipeline report as a reviewer sees it: the served weekly-pipeline-report deployment run on
the browser stack's store, its `pipeline-<slug>` artifact opened in Chromium, the charts visible."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta

import pytest

from stagewatch.timeutil import format_ts, parse_ts
from tests.browser.conftest import RUN_TIMEOUT, find_in_log, screenshot, skip_reason

expect = pytest.importorskip("playwright.sync_api", reason=skip_reason()).expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

REPORT = "pipeline-report/weekly-pipeline-report"
LOAD_TIMEOUT = 60_000
SVG_CHARTS = 'main img[src^="data:image/svg+xml;base64,"]'
# Every chart decoded and laid out: a data URI the UI refused would load as a 0x0 broken image.
CHARTS_DRAWN = """sel => { const imgs = [...document.querySelectorAll(sel)];
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0
    && i.getBoundingClientRect().width > 0) ? imgs.length : null; }"""


# Session, not module, scope: the worker may run other browser modules between this one's tests,
# and a module fixture would then run the deployment again (28 s each time).
@pytest.fixture(scope="session")
def pipeline_run(stack):
    """Run the served deployment as of a day after the review run's observation, with a one-day threshold so
    the stack's three days of activity leave some applications stuck."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.pipeline_report import artifact_key

    normal = stack.ids["normal"]
    with sqlite3.connect(f"file:{stack.logs / 'stagewatch.db'}?mode=ro", uri=True) as conn:
        (last,) = conn.execute("SELECT max(observed_at) FROM sync_runs").fetchone()
    as_of = parse_ts(last) + timedelta(days=1)
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        run = run_deployment(
            REPORT,
            parameters={
                "params": {"integration_ids": [normal], "stuck_days": 1, "as_of": format_ts(as_of)}
            },
            timeout=RUN_TIMEOUT,
            poll_interval=1,
        )
    assert run.state and run.state.is_completed(), (
        f"{REPORT} ended {run.state}; logs in {stack.logs}"
    )
    with stack.client() as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(normal)]))
        )
    return run, artifact


@pytest.fixture(scope="session")
def pipeline_artifact(pipeline_run):
    return pipeline_run[1]


def test_pipeline_report_charts_render(pipeline_artifact, page):
    # pipeline_artifact first: Prefect's sync calls must run before Playwright starts its loop.
    page.goto(f"/v2/artifacts/artifact/{pipeline_artifact.id}")
    # The UI renders the artifact after its queries settle: slow on a loaded machine.
    expect(page.get_by_role("heading", name="Funnel per job")).to_be_visible(timeout=LOAD_TIMEOUT)
    charts = page.wait_for_function(CHARTS_DRAWN, arg=SVG_CHARTS).json_value()
    assert charts >= 1
    expect(page.locator(SVG_CHARTS).first).to_be_visible()
    # The unicode bars in each funnel table render as text too.
    expect(page.locator("main td", has_text="█").first).to_be_visible()
    for heading in ("Movements this week", "Hires this week"):
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    expect(
        page.get_by_role("heading", name="Stuck: in their current stage over 1 days")
    ).to_be_visible()
    screenshot(page, "pipeline-report")  # the top: the heading, the first job's chart and table


def test_pipeline_report_log_says_it_rebuilt_the_kept_funnels(pipeline_run, page, stack):
    """The stack's syncs left the integration's jobs stale: the report rebuilds their kept funnels
    and its log says how many, where a reviewer reads the run."""
    run, _ = pipeline_run
    page.goto(f"/v2/runs/flow-run/{run.id}?tab=Logs")
    expect(page.get_by_role("log")).to_contain_text("Beginning flow run", timeout=LOAD_TIMEOUT)
    pattern = re.escape(stack.ids["normal"]) + r": rebuilt the kept funnels of \d+ job\(s\) changed"
    find_in_log(page, pattern)
    screenshot(page, "pipeline-report-log")
