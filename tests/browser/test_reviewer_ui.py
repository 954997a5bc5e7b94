"""What a reviewer sees in Prefect's UI (the V2 UI, which `/` opens) after a manual run of a
normal, a not-ready, an unsupported and a bogus integration. Each test saves the screenshot it
looked at under docs/screenshots/ and asserts only what holds today and must keep holding; the
defects of issue 17 are described in docs/screenshots/README.md with the locator that would
check each fix."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from stagewatch import report
from tests.browser.conftest import BOGUS_ID, screenshot, skip_reason

# Without Playwright the module is skipped with the reason pytest's summary also prints.
expect = pytest.importorskip("playwright.sync_api", reason=skip_reason()).expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

STATE_BADGE = '[data-slot="badge"]'


@pytest.fixture(scope="module")
def review(stack):
    """The review run and its artifacts: keyed ones by key, the unkeyed progress one apart."""
    run = stack.runs["review"]
    with stack.client() as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    return {
        "run": run,
        "by_key": {a.key: a for a in artifacts if a.key},
        "progress": [a for a in artifacts if a.type == "progress"],
    }


# The table artifact's headers that lie wholly inside its horizontal scroll box: what a reviewer
# sees without scrolling sideways. Null until the table is laid out, for `wait_for_function`.
VISIBLE_COLUMNS = """() => {
  const table = document.querySelector('main table');
  if (!table || !table.getBoundingClientRect().width) return null;
  let box = table.parentElement;
  while (getComputedStyle(box).overflowX === 'visible') box = box.parentElement;
  const { left, right } = box.getBoundingClientRect();
  return [...table.querySelectorAll('th')]
    .filter(th => { const b = th.getBoundingClientRect(); return b.left >= left && b.right <= right; })
    .map(th => th.innerText.trim());
}"""
# Pixels an element's content reaches past its own box or its parent's right edge.
OVERFLOW = """e => Math.max(0, e.scrollWidth - e.clientWidth,
  e.getBoundingClientRect().right - e.parentElement.getBoundingClientRect().right)"""


def visible_columns(page) -> list[str]:
    return page.wait_for_function(VISIBLE_COLUMNS).json_value()


def overflow_px(locator) -> float:
    """Measured once the UI's queries have settled: until then it may render the artifact again,
    and an element measured in between has no box yet."""
    expect(locator).to_be_visible()
    locator.page.wait_for_load_state("networkidle")
    assert (locator.bounding_box() or {}).get("width"), "measured before layout"
    return locator.evaluate(OVERFLOW)


def state_badge(page):
    """The run header's state badge (tags are badges too, so match the state names)."""
    return page.locator(STATE_BADGE).filter(has_text=re.compile(r"^(Completed|Failed|Crashed)$"))


def test_the_runs_end_as_expected(stack):
    """Baseline completed; the review run failed, and only because of the bogus integration."""
    assert stack.runs["baseline"].state.type.value == "COMPLETED"
    review = stack.runs["review"].state
    assert review.type.value == "FAILED"
    assert review.message.startswith("1 of 4 failed") and BOGUS_ID in review.message


def test_flow_runs_page(page, stack):
    page.goto("/v2/runs")
    for label in ("baseline", "review"):
        expect(page.get_by_role("link", name=stack.runs[label].name, exact=True)).to_be_visible()
    expect(page.get_by_text("2 Flow runs")).to_be_visible()
    screenshot(page, "flow-runs")


def test_baseline_run_page_shows_completed(page, stack):
    page.goto(f"/v2/runs/flow-run/{stack.runs['baseline'].id}?tab=Details")
    expect(state_badge(page)).to_have_text("Completed")


def test_review_run_task_runs(page, stack):
    page.goto(f"/v2/runs/flow-run/{stack.runs['review'].id}?tab=TaskRuns")
    expect(state_badge(page).first).to_have_text("Failed")
    # The tab's own count line, e.g. "(13 Completed, 3 Failed)", once the list has loaded.
    expect(page.get_by_text(re.compile(r"^\(\d+ Completed.*\)$"))).to_be_visible()
    expect(page.get_by_role("link", name=re.compile(r"^publish-summary-"))).to_be_visible()
    screenshot(page, "run-task-runs", full_page=True)


def test_review_run_error_logs_name_the_bogus_integration(page, stack):
    page.goto(f"/v2/runs/flow-run/{stack.runs['review'].id}?tab=Logs")
    log = page.get_by_role("log")
    expect(log).to_contain_text("Beginning flow run")
    # Errors only, newest first: what a reviewer reads to learn why the run failed.
    page.get_by_role("combobox").filter(has_text="Level").click()
    page.get_by_role("option", name="Error and above").click()
    page.get_by_role("combobox").filter(has_text="Oldest to newest").click()
    page.get_by_role("option", name="Newest to oldest").click()
    expect(log).to_contain_text(f"No integration with id '{BOGUS_ID}'")
    log.scroll_into_view_if_needed()
    screenshot(page, "run-logs-errors-newest-first")


def test_artifacts_page_lists_one_card_per_integration(page, stack, review):
    page.goto("/v2/artifacts")
    for integration_id in stack.ids.values():
        expect(
            page.get_by_role("heading", name=report.artifact_key(integration_id))
        ).to_be_visible()
    normal = stack.ids["normal"]
    expect(page.get_by_role("heading", name=report.events_table_key(normal))).to_be_visible()
    # Descriptions load after the cards; wait for them so the screenshot shows them.
    expect(page.get_by_text("What each integration of this sync did")).to_be_visible()
    screenshot(page, "artifacts")


def test_run_artifacts_tab_includes_the_progress_artifact(page, stack):
    page.goto(f"/v2/runs/flow-run/{stack.runs['review'].id}?tab=Artifacts")
    expect(page.get_by_text("PROGRESS", exact=True)).to_be_visible()
    expect(page.get_by_text(f"{stack.ids['normal']}: ").first).to_be_visible()
    screenshot(page, "run-artifacts", full_page=True)


def test_summary_markdown_gives_each_integration_its_status(page, stack, review):
    page.goto(f"/v2/artifacts/artifact/{review['by_key']['stagewatch-sync-summary'].id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("stagewatch sync: 4 integrations")
    statuses = {"normal": "synced", "not-ready": "not ready", "unsupported": "unsupported"}
    statuses["bogus"] = "failed"
    for role, status in statuses.items():
        row = page.get_by_role("row").filter(has_text=stack.ids[role])
        expect(row.get_by_role("cell").nth(1)).to_have_text(status)
    screenshot(page, "markdown-summary")


def test_normal_markdown_renders_counts_and_moves(page, stack, review):
    normal = stack.ids["normal"]
    page.goto(f"/v2/artifacts/artifact/{review['by_key'][report.artifact_key(normal)].id}")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        re.compile(rf"^{re.escape(normal)}: full sync, \d+ changes$")
    )
    counts = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="count"))
    for label in ("hired", "declined", "stage moved", "job changed", "deleted"):
        expect(counts.get_by_role("row").filter(has_text=label)).to_be_visible()
    assert overflow_px(counts) == 0
    expect(page.get_by_role("heading", name="Hires and declines")).to_be_visible()
    screenshot(page, "markdown-normal")
    moves = page.get_by_role("heading", name=re.compile(r"^Stage moves \("))
    moves.evaluate("heading => heading.scrollIntoView({block: 'start'})")
    screenshot(page, "markdown-normal-stage-moves")


@pytest.mark.parametrize(
    ("role", "heading"),
    [("not-ready", "not ready"), ("unsupported", "unsupported"), ("bogus", "failed")],
)
def test_other_integrations_markdown_headings(page, stack, review, role, heading):
    integration_id = stack.ids[role]
    page.goto(f"/v2/artifacts/artifact/{review['by_key'][report.artifact_key(integration_id)].id}")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"{integration_id}: {heading}")
    screenshot(page, f"markdown-{role}")


def test_table_artifact_renders_the_change_rows(page, stack, review):
    table_key = report.events_table_key(stack.ids["normal"])
    page.goto(f"/v2/artifacts/artifact/{review['by_key'][table_key].id}")
    table = page.get_by_role("table")
    expect(table.get_by_role("columnheader", name="kind", exact=True)).to_be_visible()
    expect(table.get_by_role("row").nth(1)).to_be_visible()
    headers = table.get_by_role("columnheader").all_inner_texts()
    columns = visible_columns(page)
    assert columns and columns == headers[: len(columns)]
    screenshot(page, "table-artifact")


def test_progress_artifact_reaches_100_percent(page, stack, review):
    (progress,) = review["progress"]
    page.goto(f"/v2/artifacts/artifact/{progress.id}")
    expect(page.get_by_text("Progress: 100%")).to_be_visible()
    expect(
        page.get_by_text(re.compile(rf"^{re.escape(stack.ids['normal'])}: \d+ pages"))
    ).to_be_visible()
    screenshot(page, "progress-artifact")


def dashboard_url(stack) -> str:
    """The dashboard over an explicit range around the runs: its default "past day" ends at the
    current minute, rounded down, so runs of the last minute are not counted yet."""
    start = stack.runs["baseline"].start_time - timedelta(hours=1)
    end = datetime.now(UTC) + timedelta(hours=1)
    iso = "%Y-%m-%dT%H:%M:%S.000Z"
    return (
        f"/v2/dashboard?rangeType=range&start={start.astimezone(UTC).strftime(iso)}"
        f"&end={end.strftime(iso)}"
    )


def test_dashboard_counts_both_runs(page, stack):
    page.goto(dashboard_url(stack))
    flow_runs = page.locator('[data-slot="card"]').filter(
        has=page.get_by_text("Flow Runs", exact=True)
    )
    task_runs = page.locator('[data-slot="card"]').filter(
        has=page.get_by_text("Task Runs", exact=True)
    )
    expect(flow_runs).to_contain_text("2 total")
    expect(task_runs).to_contain_text(re.compile(r"\d+\s*Completed"))
    screenshot(page, "dashboard")
