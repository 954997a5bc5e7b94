"""The pipeline report: its markdown from the scenario, and the flow that publishes it and
announces each stuck stay once."""

from __future__ import annotations

import base64
import re

from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from stagewatch.analytics.markdown import pipeline_markdown, unicode_bar
from stagewatch.analytics.report import pipeline_report
from tests.analytics.scenario import AS_OF
from tests.builders import INTEGRATION


def test_unicode_bars_scale_to_the_largest():
    assert unicode_bar(40, 40) == "█" * 20
    assert unicode_bar(3, 40) == "█▌"  # 1.5 cells
    assert unicode_bar(1, 1000) == "▏"  # never invisible
    assert unicode_bar(0, 40) == ""


def test_report_markdown_from_the_scenario(scenario):
    report = pipeline_report(scenario._conn, INTEGRATION, as_of=AS_OF, stuck_days=4)
    markdown = pipeline_markdown(report, job_names=scenario.job_names(INTEGRATION))
    assert markdown.count("![Funnel of Engineer job\\-") == 3
    assert (
        "| 2 | Phone screen | 3 | ████████████████████ | 0 | 1 | 33% | 1.0 | 2.0 | 1 | - |"
        in markdown
    )
    assert "| Engineer job\\-1 | Phone screen | Applied | **backward** | 1 |" in markdown
    stuck = markdown.split("## Stuck: in their current stage over 4 days")[1].split("## Hires")[0]
    assert re.findall(r"^\| (app\\-\w) ", stuck, re.M) == ["app\\-f", "app\\-g"]
    hires = markdown.split("## Hires this week")[1]
    assert re.findall(r"^\| (app\\-\w) .* \| ([\d.]+) \|$", hires, re.M) == [
        ("app\\-d", "1.5"),
        ("app\\-a", "7.0"),
    ]
    assert "Lovelace" not in markdown  # candidate names only when asked for
    svg = base64.b64decode(re.search(r"data:image/svg\+xml;base64,([^)]+)", markdown)[1]).decode()
    assert svg.startswith("<svg ") and ">Phone screen</text>" in svg and ">3</text>" in svg


def test_candidate_names_when_asked(scenario):
    report = pipeline_report(scenario._conn, INTEGRATION, as_of=AS_OF, stuck_days=4)
    names = scenario.candidate_names(INTEGRATION, report.application_ids)
    markdown = pipeline_markdown(report, candidate_names=names)
    assert "| Ada Lovelace (app\\-f) |" in markdown


def test_the_flow_publishes_the_artifact_and_announces_stuck_stays_once(
    prefect_harness, scenario, recorded_events
):
    from flows.report import PipelineReportParams
    from flows.report import pipeline_report as flow
    from tasks.pipeline_report import artifact_key

    db = str(scenario.path)
    scenario.close()
    params = PipelineReportParams(db=db, stuck_days=4, as_of=AS_OF)
    first = flow(params, return_state=True)
    second = flow(params, return_state=True)
    assert first.message == "1 integrations; 2 stuck, 2 newly announced"
    assert second.message == "1 integrations; 2 stuck, 0 newly announced"
    # The first report rebuilds the kept funnels of the scenario's three jobs; the second reads them.
    assert [r["funnels_refreshed"] for r in first.result()] == [3]
    assert [r["funnels_refreshed"] for r in second.result()] == [0]
    events = recorded_events()
    assert [(e.event, e.resource.id) for e in events] == [
        ("stagewatch.application.stuck", f"kombo.application.{INTEGRATION}.app-f"),
        ("stagewatch.application.stuck", f"kombo.application.{INTEGRATION}.app-g"),
    ]
    key = artifact_key(INTEGRATION)
    assert re.fullmatch(r"pipeline-greenhouse-hwut-[0-9a-f]{6}", key)
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                # this test's runs only: the harness is shared with the other backend's run
                flow_run_id=ArtifactFilterFlowRunId(
                    any_=[first.state_details.flow_run_id, second.state_details.flow_run_id]
                ),
            )
        )
    assert len(found) == 2 and all("## Funnel per job" in a.data for a in found)
