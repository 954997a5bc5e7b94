"""The run's markdown artifacts: one integration's changes, and the parent run's summary.

`integration_markdown` reads top-down as its sections, one function each. Every value from the ATS
goes through `escape_md`, and no section reads a candidate field other than the name the caller
chose to pass in. Tables keep to a few short columns, so each fits the UI's markdown column (about
900 px); long text (error messages) goes to lists, where it wraps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stagewatch.report.outcome import STATUS_LABELS, SyncOutcome, event_label, ordered_labels
from stagewatch.report.text import escape_md, short_id, stage_label
from stagewatch.timeutil import format_ts, parse_ts

# The kinds the markdown lists one by one; the rest (first sightings, in bulk) only count.
LISTED_KINDS = ("outcome_changed", "stage_changed", "job_changed", "deleted", "restored")
DEFAULT_LIST_CAP = 25
# The kinds listed after the stage moves: (kind, label, heading).
_OTHER_LISTS = (
    ("job_changed", "job changed", "Job changes"),
    ("deleted", "deleted", "Deletions"),
    ("restored", "restored", "Restores"),
)


def integration_markdown(
    outcome: SyncOutcome,
    events: Iterable[Mapping[str, Any]],
    *,
    job_names: Mapping[str, str] | None = None,
    candidate_names: Mapping[str, str] | None = None,
    cap: int = DEFAULT_LIST_CAP,
    baseline: bool = False,
) -> str:
    """The per-integration artifact: window, counts, hires and declines, stage moves, transitions,
    job changes, deletions and restores, notes and run statistics. Counts come from
    `outcome.counts`; `events` needs only the run's LISTED_KINDS. `candidate_names` is None
    unless names may show;
    `baseline` says the run is its integration's first (`Store.is_baseline`)."""
    names = _Names(job_names or {}, candidate_names)
    digest = _Digest(cap)
    for event in events:
        digest.add(event)
    lines = [
        *_title(outcome),
        *_late_note(outcome),
        *_integration(outcome),
        *_window(outcome),
        *_counts(outcome),
        *_hires_and_declines(outcome, digest, names),
        *_stage_moves(outcome, digest, names),
        *_transitions(outcome, digest),
        *_other_lists(outcome, digest, names),
        *_notes(outcome, baseline),
        *_statistics(outcome),
    ]
    return "\n".join(lines) + "\n"


def summary_markdown(outcomes: Iterable[SyncOutcome]) -> str:
    """The parent run's artifact: one row per integration saying what happened to it."""
    outcomes = list(outcomes)
    by_status = Counter(o.status for o in outcomes)
    parts = [f"{by_status[s]} {STATUS_LABELS[s]}" for s in STATUS_LABELS if by_status[s]]
    modes = sorted({o.mode for o in outcomes})
    lines = [
        f"# stagewatch sync: {len(outcomes)} integration{'s' if len(outcomes) != 1 else ''}"
        + (f" ({', '.join(parts)})" if parts else ""),
        "",
        *([f"**Mode:** {', '.join(modes)}", ""] if modes else []),
        "| integration | status | changes | hires | declines | moves |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for o in outcomes:
        status = STATUS_LABELS[o.status]
        if o.message:
            notes.append(f"{len(notes) + 1}. **{_id(o.integration_id)}**: {_message(o.message)}")
            status += f" [{len(notes)}]"
        lines.append(
            f"| {_id(o.integration_id)} | {status} | {o.changes} "
            f"| {o.counts.get('hired', 0)} | {o.counts.get('declined', 0)} "
            f"| {o.counts.get('stage moved', 0)} |"
        )
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


class _Digest:
    """One pass over a run's outcome and stage changes, keeping the first few of each list."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.outcomes: list[Mapping[str, Any]] = []
        self.moves: list[Mapping[str, Any]] = []
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.backward = 0
        self.others: dict[str, list[Mapping[str, Any]]] = {k: [] for k, _, _ in _OTHER_LISTS}

    def add(self, event: Mapping[str, Any]) -> None:
        label = event_label(event)
        if label in ("hired", "declined") and len(self.outcomes) < self.cap:
            self.outcomes.append(event)
        listed = self.others.get(str(event.get("kind")))
        if listed is not None and len(listed) < self.cap:
            listed.append(event)
        if label == "stage moved":
            self.transitions[
                (
                    stage_label(event, "from") or "none",
                    stage_label(event, "to") or "none",
                )
            ] += 1
            if event.get("direction") == "backward":
                self.backward += 1
            if len(self.moves) < self.cap:
                self.moves.append(event)


@dataclass(frozen=True)
class _Names:
    """The names a caller lets show; `candidates` is None when candidate names may not."""

    jobs: Mapping[str, str]
    candidates: Mapping[str, str] | None

    def application(self, event: Mapping[str, Any]) -> str:
        app_id = event.get("application_id")
        text = _id(app_id)
        if self.candidates is not None and app_id in self.candidates:
            text += f" ({escape_md(self.candidates[app_id], redact=True)})"
        return text

    def job(self, job_id: Any) -> str:
        if job_id is None:
            return "-"
        name = self.jobs.get(job_id)
        return escape_md(name) if name else _id(job_id)


# Sections, in the order the artifact shows them. Each returns its lines, ending with a blank one,
# or nothing when it has nothing to say.


def _title(outcome: SyncOutcome) -> list[str]:
    """The id in full would run past the column in the title's type: `_integration` gives it."""
    name = _id(short_id(outcome.integration_id))
    if outcome.status != "synced":
        return [f"# {name}: {STATUS_LABELS[outcome.status]}", ""]
    total = outcome.changes
    return [f"# {name}: {outcome.mode} sync, {total} change{'s' if total != 1 else ''}", ""]


def _integration(outcome: SyncOutcome) -> list[str]:
    return [f"**Integration:** {_id(outcome.integration_id)}", ""]


def _late_note(outcome: SyncOutcome) -> list[str]:
    if outcome.published_late_by is None:
        return []
    return [
        f"**Published late**, run {outcome.run_id} observed at {_ts(outcome.listed_at)}: the "
        f"process that committed it stopped before publishing; run "
        f"{outcome.published_late_by} published it.",
        "",
    ]


def _window(outcome: SyncOutcome) -> list[str]:
    if outcome.status != "synced" and outcome.listed_at is None:
        return []  # stopped before listing: there is no window to speak of
    listed = _ts(outcome.listed_at) if outcome.listed_at else "-"
    if outcome.window_start is None:
        return [f"**Window:** full listing, started {listed}", ""]
    return [f"**Window:** changes after {_ts(outcome.window_start)}, listing started {listed}", ""]


def _counts(outcome: SyncOutcome) -> list[str]:
    counts = outcome.counts
    if outcome.status == "synced" and outcome.changes == 0:
        return ["No changes in this window.", ""]
    if not outcome.changes:
        return []
    return [
        "| change | count |",
        "| --- | ---: |",
        *(f"| {label} | {counts[label]} |" for label in ordered_labels(counts)),
        "",
    ]


def _hires_and_declines(outcome: SyncOutcome, digest: _Digest, names: _Names) -> list[str]:
    if not digest.outcomes:
        return []
    lines = ["## Hires and declines", ""]
    for event in digest.outcomes:
        label = event_label(event)
        line = (
            f"- **{label.capitalize()}**: {names.application(event)}, "
            f"job {names.job(event.get('job_id'))}"
        )
        if label == "declined" and event.get("rejection_reason_name"):
            line += f", reason {escape_md(event['rejection_reason_name'], redact=True)}"
        lines.append(line + f", observed {_between(event)}")
    counts = outcome.counts
    rest = counts.get("hired", 0) + counts.get("declined", 0) - len(digest.outcomes)
    if rest:
        lines.append(f"- …and {rest} more")
    return [*lines, ""]


def _stage_moves(outcome: SyncOutcome, digest: _Digest, names: _Names) -> list[str]:
    moves = outcome.counts.get("stage moved", 0)
    if not moves:
        return []
    backward = f", {digest.backward} backward" if digest.backward else ""
    lines = [
        f"## Stage moves ({moves}{backward})",
        "",
        "| application | job | from → to | direction | observed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for event in digest.moves:
        direction = escape_md(event.get("direction"))
        if event.get("direction") == "backward":
            direction = "**⚠ backward**"
        lines.append(
            f"| {names.application(event)} "
            f"| {names.job(event.get('job_id'))} "
            f"| {escape_md(stage_label(event, 'from'))} → "
            f"{escape_md(stage_label(event, 'to'))} "
            f"| {direction} | {short_ts(event.get('observed_at'))} |"
        )
    if moves > len(digest.moves):
        lines.append(
            f"\n…and {moves - len(digest.moves)} more stage moves "
            "(all of them in the events table artifact and `stagewatch changes`)."
        )
    return [*lines, ""]


def _transitions(outcome: SyncOutcome, digest: _Digest) -> list[str]:
    """Shown with the stage moves, even when none of them was passed in to list."""
    if not outcome.counts.get("stage moved", 0):
        return []
    lines = ["## Transitions", "", "| from → to | moves |", "| --- | ---: |"]
    top = digest.transitions.most_common(digest.cap)
    lines += [f"| {escape_md(a)} → {escape_md(b)} | {n} |" for (a, b), n in top]
    if len(digest.transitions) > len(top):
        lines.append(f"\n…and {len(digest.transitions) - len(top)} more transitions.")
    return [*lines, ""]


def _other_lists(outcome: SyncOutcome, digest: _Digest, names: _Names) -> list[str]:
    """Job changes, deletions and restores, each listed up to the cap like the stage moves."""
    lines: list[str] = []
    for kind, label, heading in _OTHER_LISTS:
        total = outcome.counts.get(label, 0)
        listed = digest.others[kind]
        if not total:
            continue
        lines += [f"## {heading} ({total})", ""]
        if listed:
            lines += _other_table(kind, listed, names)
        if total > len(listed):
            more = f"\n…and {total - len(listed)} more" if listed else f"{total}, listed"
            lines.append(f"{more} in the events table artifact and `stagewatch changes`.")
        lines.append("")
    return lines


def _other_table(kind: str, events: list[Mapping[str, Any]], names: _Names) -> list[str]:
    if kind == "job_changed":
        head = ["| application | from job | to job | observed |", "| --- | --- | --- | --- |"]
        return head + [
            f"| {names.application(e)} | {names.job(e.get('from_job_id'))} "
            f"| {names.job(e.get('to_job_id'))} | {short_ts(e.get('observed_at'))} |"
            for e in events
        ]
    if kind == "deleted":
        head = ["| application | job | why | observed |", "| --- | --- | --- | --- |"]
        return head + [
            f"| {names.application(e)} | {names.job(e.get('job_id'))} "
            f"| {_deleted_reason(e)} | {short_ts(e.get('observed_at'))} |"
            for e in events
        ]
    head = ["| application | job | observed |", "| --- | --- | --- |"]
    return head + [
        f"| {names.application(e)} | {names.job(e.get('job_id'))} "
        f"| {short_ts(e.get('observed_at'))} |"
        for e in events
    ]


def _deleted_reason(event: Mapping[str, Any]) -> str:
    reason = event.get("deleted_reason")
    if reason == "remote_deleted":
        return "deleted in the ATS"
    if reason == "missing_from_full_listing":
        return "missing from the full listing"
    return escape_md(reason, limit=40)


def _notes(outcome: SyncOutcome, baseline: bool) -> list[str]:
    notes = _status_notes(outcome, baseline) + _listing_notes(outcome) + _run_notes(outcome)
    if not notes:
        return []
    return ["## Notes", "", *(f"- {note}" for note in notes), ""]


def _statistics(outcome: SyncOutcome) -> list[str]:
    return [
        "## Run statistics",
        "",
        "| requests | retries | waited | duration | pages | applications listed | jobs |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {outcome.requests} | {outcome.retries} | {_seconds(outcome.waited_seconds)} "
        f"| {_seconds(outcome.duration_seconds)} | {outcome.pages} | {outcome.applications} "
        f"| {outcome.jobs} |",
    ]


# The notes, each list in the order the Notes section shows it.


def _status_notes(outcome: SyncOutcome, baseline: bool) -> list[str]:
    """What kind of run this was, when it was not an ordinary complete sync."""
    notes = []
    if baseline:
        notes.append(
            "**Baseline:** the first sync of this integration. Its applications are what existed "
            "before stagewatch looked, so they are counted, not listed in a table or sent as "
            "events; `stagewatch changes --integration` with this integration's id lists them."
        )
    if outcome.status == "not_ready":
        notes.append(
            f"**Not ready:** Kombo has not finished setting up this integration "
            f"({_id(outcome.error_code)}). Nothing was read; the next run tries again."
        )
    elif outcome.status == "unsupported":
        notes.append(
            f"**Unsupported:** the connected ATS does not offer applications "
            f"({_id(outcome.error_code)}). The run is recorded; nothing else changed."
        )
    elif outcome.status == "failed":
        notes.append(f"**Failed:** {_message(outcome.message)}")
    if outcome.status == "synced" and not outcome.complete:
        notes.append("**Incomplete listing:** no deletions inferred, watermark not advanced.")
    return notes


def _listing_notes(outcome: SyncOutcome) -> list[str]:
    """What the listing could not see directly and how the run settled it."""
    notes = []
    if outcome.jobs_unavailable:
        notes.append(
            f"**Jobs unavailable:** the ATS does not offer jobs ({_id(outcome.jobs_unavailable)})."
            " Applications were tracked anyway; without a stage order, stage moves have "
            "direction unknown."
        )
    missing = outcome.absent_rescued + outcome.absent_deleted
    if missing:
        notes.append(
            f"**Missing from the full listing:** {missing} application(s). Looked up by id, "
            f"{outcome.absent_rescued} were still there (kept) and {outcome.absent_deleted} "
            "were gone (recorded as deleted)."
        )
    if outcome.jobs_refetched:
        notes.append(
            f"**Jobs refreshed:** {outcome.jobs_refetched} job(s) fetched again by id: an "
            "application was in a stage or job the cached job listing did not have."
        )
    return notes


def _run_notes(outcome: SyncOutcome) -> list[str]:
    """What the run went through to get its listing: bad records, retries, a cached job list."""
    notes = []
    if outcome.quarantined:
        notes.append(
            f"**Quarantined:** {outcome.quarantined} record(s) could not be parsed and were kept "
            "aside (`stagewatch status` lists them). They count as listed: their stored state "
            "stays and none is taken for deleted; the rest of the run is unaffected."
        )
    if outcome.retries:
        notes.append(
            f"**Retries:** {outcome.retries} request(s) retried after transient errors, "
            f"{_seconds(outcome.waited_seconds)} waited."
        )
    if outcome.task_retries:
        notes.append(f"**Task retries:** {outcome.task_retries} listing(s) started again.")
    if outcome.jobs_from_cache:
        notes.append("Jobs reused from a recent listing (fetch-jobs cache).")
    return notes


# Formatting of single values.


def _id(value: Any) -> str:
    return escape_md(value, limit=80, redact=False)


def _ts(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            value = parse_ts(value)
        except ValueError:
            return escape_md(value, limit=40)
    if isinstance(value, datetime):
        return format_ts(value)
    return escape_md(value, limit=40)


def _between(event: Mapping[str, Any]) -> str:
    return f"{_ts(event.get('previous_observed_at'))} → {_ts(event.get('observed_at'))}"


def short_ts(value: Any) -> str:
    """`2026-01-06 09:00` (UTC, to the minute): a table cell's worth of a timestamp."""
    text = _ts(value)
    return text[:16].replace("T", " ") if len(text) >= 16 and text[10] == "T" else text


def _message(value: Any) -> str:
    """An error message in full up to a paragraph: never redacted (its ids are ids), never cut
    inside its log link."""
    return escape_md(value, limit=400)


def _seconds(value: float) -> str:
    return f"{value:.1f} s"
