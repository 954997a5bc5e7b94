"""Prefect task that shows a run to people: artifacts in the UI and one Prefect event per change."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.events.worker import EventsWorker

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
# Unpublished runs one sync publishes late at most; see `publish_late_task`.
LATE_RUNS_LIMIT = 5


def emit_change_events(
    store: Any,
    outcome: SyncOutcome,
    *,
    max_events: int,
    job_names: dict[str, str],
    candidate_names: dict[str, str] | None,
    baseline: bool,
) -> tuple[int, dict[str, int]]:
    """Emit up to `max_events` change events, most important kinds first; the rest are counted
    per label in one `stagewatch.sync.events-capped` event, so automations on hires still fire
    on a run with a million first sightings (and those rows are never read).

    An integration's first run (its `baseline`) emits no change one by one. Every application in it
    is seen for the first time, so its changes are what existed before stagewatch looked: first
    sightings, and applications the ATS had deleted long before. An automation on `first-seen` or
    `deleted` wants news. They are counted in the same event, whose payload then says
    `baseline: true`.

    Returns once the events have left this process, so a run marked published afterwards has
    really sent them. Every id is derived from what it stands for (`report.prefect_event`,
    `report.capped_event`), so sending a run again sends the same events."""
    emitted: Counter[str] = Counter()
    sent = False
    for kinds in () if baseline else EMIT_ORDER:
        remaining = max_events - emitted.total()
        if remaining <= 0:
            break
        for event in store.events(run_id=outcome.run_id, kind=list(kinds), limit=remaining):
            change = report.prefect_event(
                event, job_names=job_names, candidate_names=candidate_names
            )
            sent |= emit_event(**change) is not None
            emitted[report.event_label(event)] += 1
    left_out = {
        label: count - emitted[label]
        for label, count in outcome.counts.items()
        if count > emitted[label]
    }
    if left_out:
        capped = report.capped_event(
            outcome.integration_id,
            outcome.run_id,
            left_out,
            observed_at=outcome.listed_at,
            baseline=baseline,
        )
        sent |= emit_event(**capped) is not None
    if sent:
        EventsWorker.instance().wait_until_empty()
    return emitted.total(), left_out


def _application_ids(events: Iterable[dict[str, Any]]) -> set[str]:
    return {event["application_id"] for event in events}


def publish_outcome(
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
    # An integration's first run lists what existed before stagewatch looked, not changes: its
    # rows are only counted (a table of its first 500 of 2,000 first sightings was 360 KB).
    baseline = committed and store.is_baseline(outcome.run_id)
    if committed:
        job_names = store.job_names(outcome.integration_id)
        if show_candidate_names:
            names = store.candidate_names(outcome.integration_id, _application_ids(listed()))
    markdown = report.integration_markdown(
        outcome, listed(), job_names=job_names, candidate_names=names, baseline=baseline
    )
    late = ""
    if outcome.published_late_by is not None:
        late = f", published late by run {outcome.published_late_by}"
    result: dict[str, Any] = {
        "markdown_artifact": str(
            create_markdown_artifact(
                markdown,
                key=report.artifact_key(outcome.integration_id),
                description=(
                    f"Stage changes of {outcome.integration_id}, run {outcome.run_id}{late}"
                ),
            )
        ),
        "table_artifact": None,
        "events_emitted": 0,
        "events_not_emitted": {},
    }
    if not (committed and outcome.changes):
        return result
    if not baseline:
        cap = report.DEFAULT_TABLE_CAP
        rows = report.event_table(store.events(run_id=outcome.run_id, limit=cap), cap=cap)
        total = outcome.changes
        shown = f"all {total}" if len(rows) == total else f"the first {len(rows)} of {total}"
        result["table_artifact"] = str(
            create_table_artifact(
                rows,
                key=report.events_table_key(outcome.integration_id),
                description=(
                    f"{shown} changes of {outcome.integration_id} in run {outcome.run_id}{late}; "
                    "`stagewatch changes` exports them all"
                ),
            )
        )
    emitted, left_out = emit_change_events(
        store,
        outcome,
        max_events=max_events,
        job_names=job_names,
        candidate_names=names,
        baseline=baseline,
    )
    result["events_emitted"] = emitted
    result["events_not_emitted"] = left_out
    return result


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(
    store: Any, outcome: SyncOutcome, *, show_candidate_names: bool, max_events: int
) -> dict[str, Any]:
    """Publish the run, then record in the store that its changes went out: a process killed
    before that leaves the run for the next sync of the integration to publish late."""
    result = publish_outcome(
        store, outcome, show_candidate_names=show_candidate_names, max_events=max_events
    )
    if outcome.status == "synced" and outcome.run_id is not None:
        store.mark_published(outcome.run_id)
    return result


def plan_late(
    runs: list[dict[str, Any]], *, limit: int
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Which unpublished runs to publish late (the newest `limit` with changes, oldest first)
    and which only to mark, with the note saying why."""
    with_changes = [run for run in runs if run["events"]]
    publish = with_changes[-limit:] if limit else []
    ids = {run["id"] for run in publish}
    settle = []
    for run in runs:
        if not run["events"]:
            settle.append((run, "no changes, so nothing to publish late"))
        elif run["id"] not in ids:
            settle.append(
                (
                    run,
                    f"not published: only the newest {limit} unpublished runs with changes are "
                    "published late; `stagewatch changes` has its changes",
                )
            )
    return publish, settle


@task(name="publish-late", cache_policy=NO_CACHE)
def publish_late_task(
    store: Any,
    runs: list[dict[str, Any]],
    *,
    by_run_id: int,
    show_candidate_names: bool,
    max_events: int,
) -> dict[str, Any]:
    """Publish runs that committed but whose process stopped before publishing (killed between
    diff-stages and publish), so an automation on hires still fires for their changes, then
    mark them. Their artifacts say they are late.

    Bounded: only the newest `LATE_RUNS_LIMIT` such runs with changes are published, oldest
    first; older ones are marked with a note instead. A store that could not publish for weeks
    would otherwise flood Prefect with artifacts and events at once, and changes that old are
    history rather than news: the change log (`stagewatch changes`) holds every one of them.
    Re-sending a run whose publish was cut short midway repeats events with the same ids."""
    publish, settle = plan_late(runs, limit=LATE_RUNS_LIMIT)
    skipped = [run["id"] for run, _ in settle if run["events"]]
    if skipped:
        get_run_logger().warning(
            "runs %s of %s committed changes that were never published and are too old to "
            "publish late; `stagewatch changes` has them",
            skipped,
            runs[0]["integration_id"],
        )
    for run in publish:
        outcome = report.outcome_from_run(
            run,
            store.events(run_id=run["id"], kind="outcome_changed"),
            published_late_by=by_run_id,
        )
        publish_outcome(
            store, outcome, show_candidate_names=show_candidate_names, max_events=max_events
        )
        store.mark_published(run["id"], note=f"published late by run {by_run_id}")
    for run, note in settle:
        store.mark_published(run["id"], note=note)
    return {
        "published_late": [run["id"] for run in publish],
        "marked": [run["id"] for run, _ in settle],
    }


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
