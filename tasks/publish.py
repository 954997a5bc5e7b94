"""Prefect task that shows a run to people: artifacts in the UI and one Prefect event per change."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from stagewatch import report
from stagewatch.report import SyncOutcome

# Emission order when a run has more changes than `max_events`: outcomes and moves matter most,
# first sightings (a whole integration on its first run) least.
EMIT_ORDER: tuple[tuple[str, ...], ...] = (
    ("outcome_changed",),
    ("stage_changed",),
    ("job_changed", "deleted", "restored"),
    ("first_seen",),
)


def emit_change_events(
    store: Any,
    outcome: SyncOutcome,
    *,
    max_events: int,
    job_names: dict[str, str],
    candidate_names: dict[str, str] | None,
) -> tuple[int, dict[str, int]]:
    """Emit up to `max_events` change events, most important kinds first; the rest are counted
    per label in one `stagewatch.sync.events-capped` event, so automations on hires still fire
    on a run with a million first sightings (and those rows are never read)."""
    emitted: Counter[str] = Counter()
    for kinds in EMIT_ORDER:
        remaining = max_events - emitted.total()
        if remaining <= 0:
            break
        for event in store.events(run_id=outcome.run_id, kind=list(kinds), limit=remaining):
            emit_event(
                **report.prefect_event(event, job_names=job_names, candidate_names=candidate_names)
            )
            emitted[report.event_label(event)] += 1
    left_out = {
        label: count - emitted[label]
        for label, count in outcome.counts.items()
        if count > emitted[label]
    }
    if left_out:
        emit_event(**report.capped_event(outcome.integration_id, outcome.run_id, left_out))
    return emitted.total(), left_out


def _application_ids(events: Iterable[dict[str, Any]]) -> set[str]:
    return {event["application_id"] for event in events}


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(
    store: Any, outcome: SyncOutcome, *, show_candidate_names: bool, max_events: int
) -> dict[str, Any]:
    """The run's markdown artifact (keyed per integration, so the UI keeps its history), its
    events table, and its Prefect events. Nothing here reads candidate data unless allowed."""
    committed = outcome.status == "synced" and outcome.run_id is not None

    def listed() -> Iterable[dict[str, Any]]:
        """The changes shown one by one; bulk kinds (first sightings) are only counted."""
        if not committed:
            return ()
        return store.events(run_id=outcome.run_id, kind=list(report.LISTED_KINDS))

    job_names: dict[str, str] = {}
    names: dict[str, str] | None = None
    if committed:
        job_names = store.job_names(outcome.integration_id)
        if show_candidate_names:
            names = store.candidate_names(outcome.integration_id, _application_ids(listed()))
    markdown = report.integration_markdown(
        outcome, listed(), job_names=job_names, candidate_names=names
    )
    result: dict[str, Any] = {
        "markdown_artifact": str(
            create_markdown_artifact(
                markdown,
                key=report.artifact_key(outcome.integration_id),
                description=f"Stage changes of {outcome.integration_id}, run {outcome.run_id}",
            )
        ),
        "table_artifact": None,
        "events_emitted": 0,
        "events_not_emitted": {},
    }
    if committed and outcome.changes:
        cap = report.DEFAULT_TABLE_CAP
        rows = report.event_table(store.events(run_id=outcome.run_id, limit=cap), cap=cap)
        total = outcome.changes
        shown = f"all {total}" if len(rows) == total else f"the first {len(rows)} of {total}"
        result["table_artifact"] = str(
            create_table_artifact(
                rows,
                key=report.events_table_key(outcome.integration_id),
                description=(
                    f"{shown} changes of {outcome.integration_id} in run {outcome.run_id}; "
                    "`stagewatch changes` exports them all"
                ),
            )
        )
        emitted, left_out = emit_change_events(
            store, outcome, max_events=max_events, job_names=job_names, candidate_names=names
        )
        result["events_emitted"] = emitted
        result["events_not_emitted"] = left_out
    return result


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary_task(outcomes: list[SyncOutcome]) -> str:
    """The parent run's artifact: which integration did what."""
    return str(
        create_markdown_artifact(
            report.summary_markdown(outcomes),
            key="stagewatch-sync-summary",
            description="What each integration of this sync did",
        )
    )
