"""The fan-out's summary of an hourly cycle as a reviewer sees it in the Prefect UI: through
`stagewatch stack up` (Prefect on PostgreSQL, two workers), one integration changed, one idle and
one that syncs without a check; its check table fits the artifact page, no column cut off."""

from __future__ import annotations

import os
import uuid

import pytest

from stagewatch.simulator import World, serve_in_thread
from tests.browser.conftest import VIEWPORT, screenshot, skip_reason
from tests.flows import test_stack as stack_test

expect = pytest.importorskip("playwright.sync_api", reason=skip_reason()).expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

LOAD_TIMEOUT = 60_000
# Every table of the page laid out within its scroll box and within the main column.
TABLES_FIT = """() => { const main = document.querySelector('main').getBoundingClientRect();
  const tables = [...document.querySelectorAll('main table')];
  return tables.length > 0 && tables.every(t => t.parentElement.scrollWidth
    <= t.parentElement.clientWidth + 1 && t.getBoundingClientRect().right <= main.right + 1); }"""


@pytest.fixture(scope="module")
def hourly_summary(tmp_path_factory):
    """The stack, a first hourly cycle (every integration syncs), a decline in one integration,
    then the checked hourly cycle; returns the UI's address, the summary artifact and the ids."""
    world = World(seed=33, applications=30, jobs=3, api_key=stack_test.KEY,
                  scenarios=("normal", "normal", "no-applications"))  # fmt: skip
    base_url, stop = serve_in_thread(world)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KOMBO_"))}
    env |= {"KOMBO_API_KEY": stack_test.KEY, "KOMBO_BASE_URL": base_url,
            "KOMBO_WEBHOOK_SECRET": stack_test.WEBHOOK_SECRET,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    env.pop("STAGEWATCH_DB", None)
    suffix = uuid.uuid4().hex[:12]
    state = tmp_path_factory.mktemp("fanout-stack") / "state"
    store_db = f"stagewatch_store_test_{suffix}"
    port, ids = stack_test._free_port(), list(world.integrations)
    up = stack_test._cli(
        ["up", "--state-dir", str(state), "--prefect-db", f"stagewatch_prefect_test_{suffix}",
         "--store-db", store_db, "--port", str(port), "--webhook-port",
         str(stack_test._free_port()), "--poll-seconds", "1", "-i", ",".join(ids)],
        env,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        api_url = f"http://127.0.0.1:{port}/api"
        _hourly(api_url, ids, check_first=False)
        world.integration(ids[0]).decline(stack_test._pending_application(store_db, ids[0]))
        run = _hourly(api_url, ids)
        (summary,) = [
            a for a in stack_test._artifacts(api_url, ["fanout-summary"]) if a.flow_run_id == run.id
        ]
        yield f"http://127.0.0.1:{port}", summary, ids
    finally:
        stack_test._cli(["down", "--state-dir", str(state), "--drop-database"], env)
        stack_test._drop(store_db)
        stop()


def _hourly(api_url: str, ids: list[str], **params):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        started = run_deployment(
            "sync-fanout/hourly-incremental",
            parameters={"params": {"integration_ids": ids, **params}},
            timeout=0,
        ).id
    (run,) = [r for r in stack_test._wait_for(api_url, {started}) if r.id == started]
    assert run.state.name == "Completed", run.state.message
    return run


def test_the_hourly_summary_names_why_each_synced_and_fits_the_page(hourly_summary, browser):
    ui_url, summary, (changed, idle, unsupported) = hourly_summary
    context = browser.new_context(viewport=VIEWPORT, base_url=ui_url)
    page = context.new_page()
    try:
        page.goto(f"/v2/artifacts/artifact/{summary.id}")
        header = page.get_by_role("columnheader", name="Why it synced")
        expect(header).to_be_visible(timeout=LOAD_TIMEOUT)
        expect(page.get_by_role("row", name=f"{changed} its check listed a change")).to_be_visible()
        expect(
            page.get_by_role("row", name=f"{unsupported} no watermark yet (not checked)")
        ).to_be_visible()
        expect(page.get_by_text(f"(UTC): {idle}")).to_be_visible()
        assert page.wait_for_function(TABLES_FIT, timeout=LOAD_TIMEOUT).json_value() is True
        screenshot(page, "fanout-summary")
    finally:
        context.close()
