"""What a reviewer sees in Prefect's UI (the V2 UI, which `/` opens) after a manual run of a
normal, a not-ready, an unsupported and a bogus integration (issue 17). Every assertion reads the
rendered page; each test saves the screenshot it looked at (docs/screenshots/README.md says what
each shows)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from stagewatch import report
from stagewatch.store import Store
from tests.browser.conftest import BOGUS_ID, find_in_log, screenshot, skip_reason

# Without Playwright the module is skipped with the reason pytest's summary also prints.
expect = pytest.importorskip("playwright.sync_api", reason=skip_reason()).expect
# The UI's lists load after the page: on a loaded 2-core machine, well past expect's 5 s default.
expect.set_options(timeout=60_000)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

STATE_BADGE = '[data-slot="badge"]'
ENGINE_TRACEBACK = "Engine execution exited with unexpected exception"
STEPS = ("open-run", "fetch-jobs", "fetch-applications", "diff-stages", "publish")


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


@pytest.fixture(scope="module")
def stored(stack):
    """What the normal integration's review run recorded, read from the store."""
    with Store(stack.logs / "stagewatch.db", readonly=True) as store:
        status = {row["integration_id"]: row for row in store.status()}
        run_id = status[stack.ids["normal"]]["last_run_id"]
        return {
            kind: [e["application_id"] for e in store.events(run_id=run_id, kind=kind)]
            for kind in ("deleted", "job_changed")
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


def open_artifact(page, artifact) -> None:
    page.goto(f"/v2/artifacts/artifact/{artifact.id}")
    expect(page.get_by_text(artifact.key, exact=True).first).to_be_visible()
    page.wait_for_load_state("networkidle")


def markdown_tables(page) -> list:
    tables = page.locator("main table")
    expect(tables.first).to_be_visible()
    return tables.all()


def test_the_runs_end_as_expected(stack):
    """Baseline completed; the review run failed, and only because of the bogus integration."""
    assert stack.runs["baseline"].state.type.value == "COMPLETED"
    review = stack.runs["review"].state
    assert review.type.value == "FAILED"
    assert review.message.startswith(f"1 of 4 failed: {BOGUS_ID} (")


def test_flow_runs_page(page, stack):
    page.goto("/v2/runs")
    for label in ("baseline", "review"):
        expect(page.get_by_role("link", name=stack.runs[label].name, exact=True)).to_be_visible()
    # Other modules on this stack (the pipeline report) may add runs of their own.
    expect(page.get_by_text(re.compile(r"^\d+ Flow runs$"))).to_be_visible()
    screenshot(page, "flow-runs")


def test_baseline_run_page_shows_completed(page, stack):
    page.goto(f"/v2/runs/flow-run/{stack.runs['baseline'].id}?tab=Details")
    expect(state_badge(page)).to_have_text("Completed")


def test_only_the_bogus_integration_fails_a_task_run(page, stack):
    """Not ready and unsupported end Completed under names that say so; the one red task run
    is the bogus id's, and every task run names its integration."""
    page.goto(f"/v2/runs/flow-run/{stack.runs['review'].id}?tab=TaskRuns")
    counts = page.get_by_text(re.compile(r"^\(\d+ Completed.*\)$"))
    expect(counts).to_be_visible()
    # In no fixed order; styled `capitalize`: the text is "Not ready", the screen "Not Ready".
    parts = counts.text_content().strip().strip("()").split(", ")
    assert sorted(parts) == ["1 Failed", "1 Not ready", "1 Unsupported", "13 Completed"], parts
    rows = page.locator("main").get_by_role("link", name=re.compile(r"\]$"))
    expect(rows).to_have_count(15)  # every task run but publish-summary carries an integration
    short = {report.short_id(i) for i in stack.ids.values()}
    for name in rows.all_inner_texts():
        step, integration = re.fullmatch(r"([a-z-]+)\[(.+)\]", name).groups()
        assert step in STEPS and integration in short, name
    for state, name in (
        ("Failed", f"fetch-jobs[{report.short_id(BOGUS_ID)}]"),
        ("Not ready", f"fetch-jobs[{report.short_id(stack.ids['not-ready'])}]"),
        ("Unsupported", f"fetch-applications[{report.short_id(stack.ids['unsupported'])}]"),
    ):
        link = page.get_by_role("link", name=name, exact=True)
        card = link.locator("xpath=ancestor::div[.//*[@data-slot='badge']][1]")
        expect(card.locator(STATE_BADGE)).to_have_text(state)
    expect(page.locator(STATE_BADGE).filter(has_text=re.compile(r"^Failed$"))).to_have_count(2)
    screenshot(page, "run-task-runs", full_page=True)


# Scrolls the log's box a little on every poll until a line matches `pattern`: the view holds
# only the lines it has loaded, and loads more as its box scrolls.
def test_logs_say_what_each_step_did_and_end_without_a_traceback(page, stack):
    page.goto(f"/v2/runs/flow-run/{stack.runs['review'].id}?tab=Logs")
    log = page.get_by_role("log")
    # Oldest first, the run's first line on top. The view loads more lines as its box scrolls,
    # and the integrations sync side by side, so the others may lie below the first screenful.
    expect(log).to_contain_text("Beginning flow run")
    for pattern in (
        r"run \d+ opened: full, full listing",
        r"listed 8 jobs in 1 page",
        re.escape("not ready, so the listing stops here (expected, not a failure)"),
        re.escape("unsupported, so the listing stops here (expected, not a failure)"),
    ):
        find_in_log(page, pattern)
    page.get_by_role("combobox").filter(has_text="Oldest to newest").click()
    page.get_by_role("option", name="Newest to oldest").click()
    for pattern in (
        r"listed \d+ applications in \d+ pages",
        r"committed run \d+: \d+ stage moved",
        r"published 2 artifacts and \d+ events",
    ):
        find_in_log(page, pattern)
    # Errors only, newest first: what a reviewer reads to learn why the run failed.
    page.get_by_role("combobox").filter(has_text="Level").click()
    page.get_by_role("option", name="Error and above").click()
    expect(log).to_contain_text(f"No integration with id '{BOGUS_ID}'")
    expect(log).not_to_contain_text(re.compile("NotReadyError|UnsupportedError"))
    expect(log).not_to_contain_text(ENGINE_TRACEBACK)
    log.scroll_into_view_if_needed()
    screenshot(page, "run-logs-errors-newest-first")
    # The process that ran it printed no traceback either.
    output = (stack.logs / "serve.log").read_text(errors="replace")
    assert "SyncFailed" not in output and ENGINE_TRACEBACK not in output


def test_artifacts_page_lists_one_card_per_integration_that_fits(page, stack, review):
    page.goto("/v2/artifacts")
    for integration_id in stack.ids.values():
        expect(
            page.get_by_role("heading", name=report.artifact_key(integration_id))
        ).to_be_visible()
    normal = stack.ids["normal"]
    expect(page.get_by_role("heading", name=report.events_table_key(normal))).to_be_visible()
    # Descriptions load after the cards; wait for them so the screenshot shows them.
    expect(page.get_by_text("What each integration of this sync did")).to_be_visible()
    headings = page.get_by_role("heading", level=3)
    assert headings.count() >= 6  # ours; other modules may add theirs
    for heading in headings.all():
        assert overflow_px(heading) == 0, heading.inner_text()
    screenshot(page, "artifacts")


def test_run_artifacts_tab_includes_the_progress_artifact(page, stack):
    page.goto(f"/v2/runs/flow-run/{stack.runs['review'].id}?tab=Artifacts")
    expect(page.get_by_text("PROGRESS", exact=True)).to_be_visible()
    expect(page.get_by_text(f"{stack.ids['normal']}: ").first).to_be_visible()
    screenshot(page, "run-artifacts", full_page=True)


def test_summary_markdown_gives_each_integration_its_status(page, stack, review):
    open_artifact(page, review["by_key"]["stagewatch-sync-summary"])
    expect(page.get_by_role("heading", level=1)).to_contain_text("stagewatch sync: 4 integrations")
    statuses = {"normal": "synced", "not-ready": "not ready", "unsupported": "unsupported"}
    statuses["bogus"] = "failed"
    for role, status in statuses.items():
        row = page.get_by_role("row").filter(has_text=stack.ids[role])
        expect(row.get_by_role("cell").nth(1)).to_have_text(re.compile(rf"^{status}( \[\d\])?$"))
    # The note keeps the request id (no "[phone redacted]") and its log link whole.
    notes = page.get_by_role("listitem").filter(has_text=BOGUS_ID)
    expect(notes).to_contain_text(re.compile(r"\[request sim_\d{10}\]"))
    expect(notes.get_by_role("link")).to_have_text(re.compile(r"^https://app\.kombo\.dev/logs/"))
    for table in markdown_tables(page):
        assert overflow_px(table) == 0
    screenshot(page, "markdown-summary")


def test_normal_markdown_lists_every_kind_within_the_column(page, stack, review, stored):
    normal = stack.ids["normal"]
    open_artifact(page, review["by_key"][report.artifact_key(normal)])
    title = page.get_by_role("heading", level=1)
    expect(title).to_have_text(
        re.compile(rf"^{re.escape(report.short_id(normal))}: full sync, \d+ changes$")
    )
    assert overflow_px(title) == 0
    counts = page.locator("main table").filter(has=page.get_by_role("columnheader", name="count"))
    for label in ("hired", "declined", "stage moved", "job changed", "deleted"):
        expect(counts.get_by_role("row").filter(has_text=label)).to_be_visible()
    expect(page.get_by_role("heading", name="Hires and declines")).to_be_visible()
    for heading, kind in (("Job changes", "job_changed"), ("Deletions", "deleted")):
        assert stored[kind], f"the fixture's run has {kind} rows"
        section = page.get_by_role("heading", name=f"{heading} ({len(stored[kind])})")
        listing = section.locator("xpath=following-sibling::*[1]")
        for application_id in stored[kind]:
            expect(listing).to_contain_text(application_id)
    tables = markdown_tables(page)
    assert len(tables) == 6  # counts, moves, transitions, job changes, deletions, statistics
    for table in tables:
        assert overflow_px(table) == 0, table.locator("th").all_inner_texts()
    screenshot(page, "markdown-normal")
    for heading, name in (("Stage moves", "stage-moves"), ("Job changes", "job-changes")):
        section = page.get_by_role("heading", name=re.compile(rf"^{heading} \("))
        section.evaluate("heading => heading.scrollIntoView({block: 'start'})")
        screenshot(page, f"markdown-normal-{name}")


@pytest.mark.parametrize(
    ("role", "heading"),
    [("not-ready", "not ready"), ("unsupported", "unsupported"), ("bogus", "failed")],
)
def test_other_integrations_markdown_headings(page, stack, review, role, heading):
    integration_id = stack.ids[role]
    open_artifact(page, review["by_key"][report.artifact_key(integration_id)])
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"{report.short_id(integration_id)}: {heading}"
    )
    expect(page.locator("main")).to_contain_text(f"Integration: {integration_id}")
    screenshot(page, f"markdown-{role}")


def test_table_artifact_leads_with_the_reviewer_columns(page, stack, review):
    open_artifact(page, review["by_key"][report.events_table_key(stack.ids["normal"])])
    table = page.get_by_role("table")
    expect(table.get_by_role("row").nth(1)).to_be_visible()
    headers = table.get_by_role("columnheader").all_inner_texts()
    assert headers[: len(report.REVIEWER_COLUMNS)] == list(report.REVIEWER_COLUMNS)
    assert headers[-1] == "event_key"
    columns = visible_columns(page)
    assert len(columns) >= 3 and columns == list(report.REVIEWER_COLUMNS[: len(columns)])
    screenshot(page, "table-artifact")


def test_progress_artifact_ends_with_what_the_run_listed(page, stack, review):
    normal = stack.ids["normal"]
    open_artifact(page, review["by_key"][report.artifact_key(normal)])
    stats = page.locator("main table").filter(
        has=page.get_by_role("columnheader", name="pages", exact=True)
    )
    expect(stats).to_have_count(1)
    # The table renders in parts: read it once its header and its row have the same cells.
    deadline = time.monotonic() + 15
    while True:
        headers = stats.locator("th").all_inner_texts()
        cells = stats.locator("tbody tr td").all_inner_texts()
        if (headers and len(headers) == len(cells)) or time.monotonic() > deadline:
            break
        page.wait_for_timeout(200)
    row = dict(zip(headers, cells, strict=True))
    (progress,) = review["progress"]
    page.goto(f"/v2/artifacts/artifact/{progress.id}")
    expect(page.get_by_text("Progress: 100%")).to_be_visible()
    expect(
        page.get_by_text(
            f"{normal}: done, {row['pages']} pages, {row['applications listed']} applications "
            "listed",
            exact=True,
        )
    ).to_be_visible()
    screenshot(page, "progress-artifact")


def test_run_form_states_the_limits(page, stack):
    with stack.client() as client:
        deployment = client.read_deployment_by_name("sync-many/manual")
    page.goto(f"/v2/deployments/deployment/{deployment.id}/run")
    expect(
        page.get_by_text("Records per Kombo request, 1 to 250 (Kombo's maximum).")
    ).to_be_visible()
    expect(
        page.get_by_text(re.compile(r"^Kombo integration ids to sync, 1 to 500"))
    ).to_be_visible()
    page.wait_for_load_state("networkidle")
    screenshot(page, "run-form", full_page=True)


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


def test_dashboard_counts_one_failed_task_run(page, stack):
    page.goto(dashboard_url(stack))
    flow_runs = page.locator('[data-slot="card"]').filter(
        has=page.get_by_text("Flow Runs", exact=True)
    )
    task_runs = page.locator('[data-slot="card"]').filter(
        has=page.get_by_text("Task Runs", exact=True)
    )
    expect(flow_runs).to_contain_text(re.compile(r"\d+ total"))
    expect(task_runs).to_contain_text(re.compile(r"\d+\s*Completed"))
    expect(task_runs).to_contain_text(re.compile(r"(^|\D)1\s*Failed"))
    screenshot(page, "dashboard")
