"""The pipeline report's Prefect side: one integration's artifact and its stuck events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.events.worker import EventsWorker

from stagewatch import analytics
from stagewatch.analytics.markdown import pipeline_markdown
from stagewatch.analytics.report import pipeline_report
from stagewatch.report.text import slug


def artifact_key(integration_id: str) -> str:
    return f"pipeline-{slug(integration_id)}"


def send_events(events: list[dict[str, Any]]) -> None:
    """Emit, and return once the events have left this process (before they are recorded)."""
    sent = False
    for event in events:
        sent |= emit_event(**event) is not None
    if sent:
        EventsWorker.instance().wait_until_empty()


@task(name="pipeline-report", cache_policy=NO_CACHE)
def report_integration(
    store: Any,
    integration_id: str,
    *,
    as_of: datetime,
    stuck_days: float,
    stuck_stage_days: dict[str, float],
    week_days: int,
    show_candidate_names: bool,
    emit_stuck_events: bool,
) -> dict[str, Any]:
    """Publish `pipeline-<slug>` and announce each newly stuck stay once."""
    # The jobs changed since the last report get their kept funnels rebuilt once, here, so the
    # next readers (CLI, SQL tools) read kept rows instead of computing them.
    refreshed = store.refresh_funnels(integration_id)
    if refreshed:
        get_run_logger().info(
            "%s: rebuilt the kept funnels of %d job(s) changed since the last read",
            integration_id,
            refreshed,
        )
    conn = store._conn
    report = pipeline_report(
        conn,
        integration_id,
        as_of=as_of,
        stuck_days=stuck_days,
        stuck_overrides=stuck_stage_days,
        week=timedelta(days=week_days),
    )
    names = (
        store.candidate_names(integration_id, report.application_ids)
        if show_candidate_names
        else None
    )
    markdown = pipeline_markdown(
        report, job_names=store.job_names(integration_id), candidate_names=names
    )
    artifact = create_markdown_artifact(
        markdown,
        key=artifact_key(integration_id),
        description=f"Pipeline of {integration_id}: funnels, the week's moves, stuck, hires",
    )
    announced = []
    if emit_stuck_events:
        announced = analytics.announce(
            conn, report.stuck, send_events, at=as_of, candidate_names=names
        )
    return {
        "integration_id": integration_id,
        "artifact": str(artifact),
        "funnels_refreshed": refreshed,
        "stuck": len(report.stuck),
        "stuck_announced": len(announced),
    }
