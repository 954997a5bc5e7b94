"""Prefect tasks that show runs to people: what `stagewatch.publishing` plans, sent to Prefect."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.events.worker import EventsWorker

from stagewatch import publishing
from stagewatch.publishing import Artifact, Publication
from stagewatch.report import SyncOutcome, logs
from tasks.names import run_name


def _create(artifact: Artifact) -> str:
    if artifact.rows is not None:
        created = create_table_artifact(
            artifact.rows, key=artifact.key, description=artifact.description
        )
    else:
        created = create_markdown_artifact(
            artifact.markdown or "", key=artifact.key, description=artifact.description
        )
    return str(created)


def send(publication: Publication) -> dict[str, Any]:
    """Create the artifacts and emit the events; returns once the events have left this
    process, so a run marked published afterwards has really sent them."""
    created = [_create(artifact) for artifact in publication.artifacts]
    sent = False
    for event in publication.events:
        sent |= emit_event(**event) is not None
    if sent:
        EventsWorker.instance().wait_until_empty()
    return {
        "artifacts": created,
        "events_emitted": len(publication.events) - bool(publication.not_emitted),
        "events_not_emitted": publication.not_emitted,
    }


@task(name="publish", task_run_name=run_name("publish", "outcome"), cache_policy=NO_CACHE)
def publish_task(
    store: Any, outcome: SyncOutcome, *, show_candidate_names: bool, max_events: int
) -> dict[str, Any]:
    """Publish the run and mark it published (see `stagewatch.publishing.publish_run`)."""
    sent: dict[str, Any] = {}
    publishing.publish_run(
        store,
        outcome,
        send=lambda publication: sent.update(send(publication)),
        show_candidate_names=show_candidate_names,
        max_events=max_events,
    )
    get_run_logger().info(logs.published_line(sent))
    return sent


@task(name="publish-late", task_run_name=run_name("publish-late", "runs"), cache_policy=NO_CACHE)
def publish_late_task(
    store: Any,
    runs: list[dict[str, Any]],
    *,
    by_run_id: int,
    show_candidate_names: bool,
    max_events: int,
) -> dict[str, list[int]]:
    """Publish the runs that committed but never published (see `publishing.publish_late`)."""
    result = publishing.publish_late(
        store,
        runs,
        by_run_id=by_run_id,
        send=send,
        show_candidate_names=show_candidate_names,
        max_events=max_events,
    )
    if result["too_old"]:
        get_run_logger().warning(
            "runs %s of %s committed changes that were never published and are too old to "
            "publish late; `stagewatch changes` has them",
            result["too_old"],
            runs[0]["integration_id"],
        )
    return result


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary_task(outcomes: list[SyncOutcome]) -> str:
    """The parent run's artifact: which integration did what."""
    return _create(publishing.summary(outcomes))
