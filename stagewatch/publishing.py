"""What a sync run publishes and when, as data: its artifacts, its change events and their cap.

A `Publication` is everything one committed (or failed) run shows people: the markdown artifact,
the table artifact, and the Prefect events, most important first. Building it reads the store
and nothing else; sending it is the caller's (`tasks.publish` sends it to Prefect, the drills
read it). `publish_run` and `publish_late` also decide which runs count as published.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

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
# Unpublished runs one sync publishes late at most; see `publish_late`.
LATE_RUNS_LIMIT = 5
SUMMARY_KEY = "stagewatch-sync-summary"


@dataclass(frozen=True)
class Artifact:
    """A keyed artifact: markdown text, or table rows."""

    key: str
    description: str
    markdown: str | None = None
    rows: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Publication:
    """What one run shows: artifacts, then events (keyword arguments of Prefect's `emit_event`),
    and per label the changes counted in the capped event instead of emitted one by one."""

    artifacts: list[Artifact]
    events: list[dict[str, Any]] = field(default_factory=list)
    not_emitted: dict[str, int] = field(default_factory=dict)

    @property
    def markdown(self) -> str:
        return next(a.markdown for a in self.artifacts if a.markdown is not None)


Send = Callable[[Publication], Any]


def plan_publication(
    store: Any, outcome: SyncOutcome, *, show_candidate_names: bool, max_events: int
) -> Publication:
    """The run's markdown artifact (keyed per integration, so the UI keeps its history), its events
    table, and its change events. Nothing here reads candidate data unless allowed.

    An integration's first run (its baseline) lists what existed before stagewatch looked, not
    changes: its rows are only counted, with no table and no event one by one."""
    committed = outcome.status == "synced" and outcome.run_id is not None
    baseline = committed and store.is_baseline(outcome.run_id)
    job_names = store.job_names(outcome.integration_id) if committed else {}
    names = None
    if committed and show_candidate_names:
        listed = _listed(store, outcome)
        names = store.candidate_names(outcome.integration_id, {e["application_id"] for e in listed})
    markdown = report.integration_markdown(
        outcome,
        _listed(store, outcome),
        job_names=job_names,
        candidate_names=names,
        baseline=baseline,
    )
    artifacts = [
        Artifact(
            report.artifact_key(outcome.integration_id),
            f"Stage changes of {outcome.integration_id}, run {outcome.run_id}{_late(outcome)}",
            markdown=markdown,
        )
    ]
    if not (committed and outcome.changes):
        return Publication(artifacts)
    if not baseline:
        artifacts.append(_table(store, outcome, job_names=job_names, candidate_names=names))
    events, left_out = _change_events(
        store,
        outcome,
        max_events=max_events,
        job_names=job_names,
        candidate_names=names,
        baseline=baseline,
    )
    return Publication(artifacts, events, left_out)


def _listed(store: Any, outcome: SyncOutcome) -> Iterable[dict[str, Any]]:
    """The changes the markdown shows one by one; bulk kinds (first sightings) are only counted."""
    if outcome.status != "synced" or outcome.run_id is None:
        return ()
    return store.events(run_id=outcome.run_id, kind=list(report.LISTED_KINDS))


def _late(outcome: SyncOutcome) -> str:
    late_by = outcome.published_late_by
    return "" if late_by is None else f", published late by run {late_by}"


def _table(
    store: Any,
    outcome: SyncOutcome,
    *,
    job_names: dict[str, str],
    candidate_names: dict[str, str] | None,
) -> Artifact:
    cap = report.DEFAULT_TABLE_CAP
    rows = report.event_table(
        store.events(run_id=outcome.run_id, limit=cap),
        cap=cap,
        job_names=job_names,
        candidate_names=candidate_names,
    )
    total = outcome.changes
    shown = f"all {total}" if len(rows) == total else f"the first {len(rows)} of {total}"
    return Artifact(
        report.events_table_key(outcome.integration_id),
        f"{shown} changes of {outcome.integration_id} in run {outcome.run_id}{_late(outcome)}; "
        "`stagewatch changes` exports them all",
        rows=rows,
    )


def _change_events(
    store: Any,
    outcome: SyncOutcome,
    *,
    max_events: int,
    job_names: dict[str, str],
    candidate_names: dict[str, str] | None,
    baseline: bool,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Up to `max_events` change events, most important kinds first; the rest are counted per
    label in one `stagewatch.sync.events-capped` event, so automations on hires still fire on a
    run with a million first sightings (and those rows are never read).

    A baseline emits no change one by one: its first sightings, and applications the ATS had
    deleted long before, are what existed before stagewatch looked; an automation on them wants
    news. They are counted in the same event, whose payload then says `baseline: true`. Every
    id is derived from what it stands for, so sending a run again sends the same events."""
    events = []
    emitted: Counter[str] = Counter()
    for event in _most_important(store, outcome.run_id, 0 if baseline else max_events):
        events.append(
            report.prefect_event(event, job_names=job_names, candidate_names=candidate_names)
        )
        emitted[report.event_label(event)] += 1
    left_out = {
        label: count - emitted[label]
        for label, count in outcome.counts.items()
        if count > emitted[label]
    }
    if left_out:
        events.append(
            report.capped_event(
                outcome.integration_id,
                outcome.run_id,
                left_out,
                observed_at=outcome.listed_at,
                baseline=baseline,
            )
        )
    return events, left_out


def _most_important(store: Any, run_id: int, limit: int) -> Iterator[dict[str, Any]]:
    remaining = limit
    for kinds in EMIT_ORDER:
        if remaining <= 0:
            return
        for event in store.events(run_id=run_id, kind=list(kinds), limit=remaining):
            remaining -= 1
            yield event


def publish_run(
    store: Any,
    outcome: SyncOutcome,
    *,
    send: Send,
    show_candidate_names: bool,
    max_events: int,
    mark: bool = True,
) -> Publication:
    """Build and send the run's publication, then record in the store that its changes went
    out: a process killed before that leaves the run for the next sync to publish late.
    `mark=False` leaves it unpublished, as such a process would."""
    publication = plan_publication(
        store, outcome, show_candidate_names=show_candidate_names, max_events=max_events
    )
    send(publication)
    if mark and outcome.status == "synced" and outcome.run_id is not None:
        store.mark_published(outcome.run_id)
    return publication


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


def publish_late(
    store: Any,
    runs: list[dict[str, Any]],
    *,
    by_run_id: int,
    send: Send,
    show_candidate_names: bool,
    max_events: int,
    limit: int | None = None,
) -> dict[str, list[int]]:
    """Publish runs that committed but whose process stopped before publishing, so an automation
    on hires still fires for their changes, then mark them; their artifacts say they are late.

    Bounded: only the newest `limit` (`LATE_RUNS_LIMIT`) such runs with changes are published,
    oldest first; older ones are marked with a note instead. A store that could not publish for
    weeks would otherwise flood Prefect at once, and changes that old are history rather than
    news: the change log (`stagewatch changes`) holds every one of them."""
    publish, settle = plan_late(runs, limit=LATE_RUNS_LIMIT if limit is None else limit)
    for run in publish:
        outcome = late_outcome(store, run, by_run_id=by_run_id)
        send(
            plan_publication(
                store, outcome, show_candidate_names=show_candidate_names, max_events=max_events
            )
        )
        store.mark_published(run["id"], note=f"published late by run {by_run_id}")
    for run, note in settle:
        store.mark_published(run["id"], note=note)
    return {
        "published_late": [run["id"] for run in publish],
        "marked": [run["id"] for run, _ in settle],
        "too_old": [run["id"] for run, _ in settle if run["events"]],
    }


def late_outcome(store: Any, run: Mapping[str, Any], *, by_run_id: int) -> SyncOutcome:
    """The outcome of a committed run, rebuilt from its row to publish it late."""
    return report.outcome_from_run(
        run, store.events(run_id=run["id"], kind="outcome_changed"), published_late_by=by_run_id
    )


def summary(outcomes: list[SyncOutcome]) -> Artifact:
    """The parent run's artifact: which integration did what."""
    return Artifact(
        SUMMARY_KEY,
        "What each integration of this sync did",
        markdown=report.summary_markdown(outcomes),
    )
