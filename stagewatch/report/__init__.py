"""What a sync run shows people: markdown, table rows and Prefect event payloads, built from data.

Pure functions over the run's outcome and its change-log rows, so they test in milliseconds and the
Prefect layer only publishes what they return. Everything that came from the ATS goes through
`escape_md` (markdown and HTML neutralised, contact-looking text redacted) before it reaches markdown,
and no builder ever reads a candidate field other than the name the caller chose to pass in.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import islice
from typing import Any, Literal

from pydantic import BaseModel, Field

from stagewatch.diff import EVENT_FIELDS, EVENT_KINDS
from stagewatch.timeutil import format_ts, parse_ts

Status = Literal["synced", "not_ready", "unsupported", "failed"]

STATUS_LABELS: dict[str, str] = {
    "synced": "synced",
    "not_ready": "not ready",
    "unsupported": "unsupported",
    "failed": "failed",
}


# Labels in the order reviewers read them: outcomes first, bulk first sightings last.
LABEL_ORDER = (
    "hired",
    "declined",
    "stage moved",
    "outcome changed",
    "job changed",
    "deleted",
    "restored",
    "first seen",
)
EVENT_NAMES: dict[str, str] = {
    "hired": "stagewatch.application.hired",
    "declined": "stagewatch.application.declined",
    "stage moved": "stagewatch.application.stage-changed",
    "outcome changed": "stagewatch.application.outcome-changed",
    "job changed": "stagewatch.application.job-changed",
    "deleted": "stagewatch.application.deleted",
    "restored": "stagewatch.application.restored",
    "first seen": "stagewatch.application.first-seen",
}
CAPPED_EVENT_NAME = "stagewatch.sync.events-capped"
# The kinds the markdown lists one by one; the rest only count.
LISTED_KINDS = ("outcome_changed", "stage_changed")

DEFAULT_LIST_CAP = 25
DEFAULT_TABLE_CAP = 500
MAX_TEXT = 120

_EVENT_NAMESPACE = uuid.UUID("6f1b0a52-4c1e-4d8a-9a51-3c0a2f5f9e10")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Digits joined by one or two phone separators; nine or more digits make a phone number, which leaves
# dates (eight digits) and short ids alone.
_PHONE = re.compile(r"\+?\(?\d(?:[ ().\-/]{0,2}\d)+")
_PHONE_DIGITS = 9
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# A lone surrogate (JSON's "\ud83d" without its pair) cannot be encoded, so no artifact or event
# holding one could be sent; in a str every paired character is one code point, never these.
_SURROGATE = re.compile("[\ud800-\udfff]")
_MD_PUNCTUATION = set("\\`*_{}[]()#+-.!|~:=$^\"'")
_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


class SyncOutcome(BaseModel):
    """What one integration's sync did: small and JSON-able, so it can be a Prefect result."""

    integration_id: str
    status: Status
    mode: Literal["incremental", "full"]
    run_id: int | None = None
    window_start: datetime | None = Field(
        default=None, description="`updated_after` sent to Kombo; None for a full listing."
    )
    listed_at: datetime | None = Field(
        default=None, description="When the application listing started (Kombo's clock)."
    )
    next_watermark: datetime | None = None
    complete: bool = False
    counts: dict[str, int] = Field(default_factory=dict)
    jobs: int = 0
    applications: int = 0
    pages: int = 0
    quarantined: int = 0
    jobs_from_cache: bool = False
    requests: int = 0
    retries: int = 0
    waited_seconds: float = 0.0
    task_retries: int = 0
    duration_seconds: float = 0.0
    message: str | None = Field(
        default=None, description="Why the run is not_ready, unsupported or failed (no secrets)."
    )
    error_code: str | None = None
    published_late_by: int | None = Field(
        default=None,
        description=(
            "The later run that published this committed run's changes, when the process that "
            "committed them stopped before publishing."
        ),
    )
    jobs_unavailable: str | None = Field(
        default=None,
        description="Kombo's error code when the ATS offers no jobs (no stage order then).",
    )
    jobs_refetched: int = 0
    absent_rescued: int = Field(
        default=0,
        description="Full listing: applications it missed that a lookup by id still found.",
    )
    absent_deleted: int = Field(
        default=0,
        description="Full listing: applications missing from it and from the lookup by id.",
    )

    @property
    def changes(self) -> int:
        return sum(self.counts.values())


def outcome_from_run(
    run: Mapping[str, Any],
    outcome_events: Iterable[Mapping[str, Any]],
    *,
    published_late_by: int | None = None,
) -> SyncOutcome:
    """The outcome of a run that committed, rebuilt from its `sync_runs` row (to publish it late).
    `outcome_events` are the run's outcome changes, which split into hired and declined. Pages
    are not recorded per run, so they show as 0."""
    timestamps = {
        name: parse_ts(run[column]) if run[column] else None
        for name, column in (
            ("window_start", "window_start"),
            ("listed_at", "observed_at"),
            ("next_watermark", "next_watermark"),
            ("started", "started_at"),
            ("finished", "finished_at"),
        )
    }
    started, finished = timestamps.pop("started"), timestamps.pop("finished")
    return SyncOutcome(
        integration_id=run["integration_id"],
        status="synced",
        mode=run["mode"],
        run_id=run["id"],
        **timestamps,
        complete=True,
        counts=labels_from_kinds({kind: run[kind] or 0 for kind in EVENT_KINDS}, outcome_events),
        jobs=run["jobs_seen"] or 0,
        applications=run["applications_seen"] or 0,
        quarantined=run["quarantined"] or 0,
        jobs_unavailable=run["jobs_unavailable"],
        jobs_refetched=run["jobs_refetched"] or 0,
        absent_rescued=run["absent_rescued"] or 0,
        absent_deleted=run["absent_deleted"] or 0,
        requests=run["requests"] or 0,
        retries=run["retries"] or 0,
        waited_seconds=run["waited_seconds"] or 0.0,
        duration_seconds=(finished - started).total_seconds() if started and finished else 0.0,
        published_late_by=published_late_by,
    )


def redact_contacts(text: str) -> str:
    """Defence in depth: ATS free text (stage names, reasons) sometimes carries an email or phone.
    Also replaces lone surrogates, which no JSON or markdown sent to Prefect may hold."""
    text = _EMAIL.sub("[email redacted]", _SURROGATE.sub("\ufffd", text))
    return _PHONE.sub(
        lambda m: "[phone redacted]" if sum(c.isdigit() for c in m[0]) >= _PHONE_DIGITS else m[0],
        text,
    )


def escape_md(value: Any, *, limit: int = MAX_TEXT, redact: bool = True) -> str:
    """Render an ATS value as inert markdown text on one line, safe inside a table cell.
    `redact=False` only for identifiers, where a long digit run is not a phone number."""
    if value is None:
        return "-"
    text = redact_contacts(str(value)) if redact else _SURROGATE.sub("\ufffd", str(value))
    text = _CONTROL.sub("", text.replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    text = text.replace("\t", " ").strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    if not text:
        return "-"
    out = []
    for char in text:
        if char in _HTML:
            out.append(_HTML[char])
        elif char in _MD_PUNCTUATION:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def slug(integration_id: str) -> str:
    """`greenhouse:AbC` -> `greenhouse-abc-1a2b3c4d`: valid in an artifact key, and the hash of the
    exact id keeps ids that differ only by case or punctuation apart."""
    readable = re.sub(r"[^a-z0-9]+", "-", integration_id.lower()).strip("-")[:48].strip("-")
    digest = hashlib.sha256(integration_id.encode()).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest


def artifact_key(integration_id: str) -> str:
    return f"stage-changes-{slug(integration_id)}"


def events_table_key(integration_id: str) -> str:
    return f"stage-events-{slug(integration_id)}"


def event_label(event: Mapping[str, Any]) -> str:
    """The reviewer's name for a change-log row; outcome changes split into hired and declined."""
    kind = event.get("kind")
    if kind == "outcome_changed":
        outcome = (event.get("to_outcome") or "").upper()
        if outcome == "HIRED":
            return "hired"
        if outcome == "DECLINED":
            return "declined"
        return "outcome changed"
    return {
        "stage_changed": "stage moved",
        "job_changed": "job changed",
        "first_seen": "first seen",
        "deleted": "deleted",
        "restored": "restored",
    }.get(str(kind), str(kind).replace("_", " "))


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


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


class _Digest:
    """One pass over a run's outcome and stage changes, keeping the first few of each list."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.outcomes: list[Mapping[str, Any]] = []
        self.moves: list[Mapping[str, Any]] = []
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.backward = 0

    def add(self, event: Mapping[str, Any]) -> None:
        label = event_label(event)
        if label in ("hired", "declined") and len(self.outcomes) < self.cap:
            self.outcomes.append(event)
        if label == "stage moved":
            self.transitions[
                (
                    str(event.get("from_stage_name") or event.get("from_stage_id") or "none"),
                    str(event.get("to_stage_name") or event.get("to_stage_id") or "none"),
                )
            ] += 1
            if event.get("direction") == "backward":
                self.backward += 1
            if len(self.moves) < self.cap:
                self.moves.append(event)


def label_counts(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Counts per reviewer label, in reading order; what the artifact's count table shows."""
    counts = Counter(event_label(e) for e in events)
    return {label: counts[label] for label in _ordered(counts)}


def labels_from_kinds(
    kind_counts: Mapping[str, int], outcome_events: Iterable[Mapping[str, Any]]
) -> dict[str, int]:
    """`label_counts` without reading every row: per-kind counts (as the commit returns them)
    and only the outcome changes, which split into hired, declined and other."""
    counts: Counter[str] = Counter(label_counts(outcome_events))
    for kind, count in kind_counts.items():
        if kind != "outcome_changed" and count:
            counts[event_label({"kind": kind})] += count
    return {label: counts[label] for label in _ordered(counts)}


def _ordered(counts: Mapping[str, int]) -> list[str]:
    known = [label for label in LABEL_ORDER if counts.get(label)]
    return known + sorted(label for label in counts if label not in LABEL_ORDER and counts[label])


def _window_line(outcome: SyncOutcome) -> str:
    listed = _ts(outcome.listed_at) if outcome.listed_at else "-"
    if outcome.window_start is None:
        return f"**Window:** full listing, started {listed}"
    return f"**Window:** changes after {_ts(outcome.window_start)}, listing started {listed}"


def _application(event: Mapping[str, Any], candidate_names: Mapping[str, str] | None) -> str:
    app_id = event.get("application_id")
    text = _id(app_id)
    if candidate_names is not None and app_id in candidate_names:
        text += f" ({escape_md(candidate_names[app_id])})"
    return text


def _job(job_id: Any, job_names: Mapping[str, str]) -> str:
    if job_id is None:
        return "-"
    name = job_names.get(job_id)
    return escape_md(name) if name else _id(job_id)


def _notes(outcome: SyncOutcome, baseline: bool) -> list[str]:
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
        notes.append(f"**Failed:** {escape_md(outcome.message, limit=300)}")
    if outcome.status == "synced" and not outcome.complete:
        notes.append("**Incomplete listing:** no deletions inferred, watermark not advanced.")
    notes += _listing_notes(outcome)
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


def _statistics(outcome: SyncOutcome) -> list[str]:
    return [
        "| requests | retries | waited | duration | pages | applications listed | jobs |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {outcome.requests} | {outcome.retries} | {_seconds(outcome.waited_seconds)} "
        f"| {_seconds(outcome.duration_seconds)} | {outcome.pages} | {outcome.applications} "
        f"| {outcome.jobs} |",
    ]


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
    notes and run statistics. Counts come from `outcome.counts`; `events` needs only the run's
    outcome and stage changes (LISTED_KINDS). `candidate_names` is None unless names may show;
    `baseline` says the run is its integration's first (`Store.is_baseline`)."""
    job_names = job_names or {}
    counts = outcome.counts
    digest = _Digest(cap)
    for event in events:
        digest.add(event)
    total = outcome.changes
    title = f"# {_id(outcome.integration_id)}: {outcome.mode} sync, "
    title += f"{total} change{'s' if total != 1 else ''}"
    if outcome.status != "synced":
        title = f"# {_id(outcome.integration_id)}: {STATUS_LABELS[outcome.status]}"
    lines = [title, ""]
    if outcome.published_late_by is not None:
        lines += [
            f"**Published late**, run {outcome.run_id} observed at {_ts(outcome.listed_at)}: the "
            f"process that committed it stopped before publishing; run "
            f"{outcome.published_late_by} published it.",
            "",
        ]
    lines += [_window_line(outcome), ""]

    if outcome.status == "synced" and total == 0:
        lines += ["No changes in this window.", ""]
    elif total:
        lines += ["| change | count |", "| --- | ---: |"]
        lines += [f"| {label} | {counts[label]} |" for label in _ordered(counts)]
        lines.append("")

    if digest.outcomes:
        lines += ["## Hires and declines", ""]
        for event in digest.outcomes:
            label = event_label(event)
            line = (
                f"- **{label.capitalize()}**: {_application(event, candidate_names)}, "
                f"job {_job(event.get('job_id'), job_names)}"
            )
            if label == "declined" and event.get("rejection_reason_name"):
                line += f", reason {escape_md(event['rejection_reason_name'])}"
            lines.append(line + f", observed {_between(event)}")
        rest = counts.get("hired", 0) + counts.get("declined", 0) - len(digest.outcomes)
        if rest:
            lines.append(f"- …and {rest} more")
        lines.append("")

    moves = counts.get("stage moved", 0)
    if moves:
        heading = f"## Stage moves ({moves}"
        heading += f", {digest.backward} backward)" if digest.backward else ")"
        lines += [
            heading,
            "",
            "| application | job | from | to | direction | observed between |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for event in digest.moves:
            direction = escape_md(event.get("direction"))
            if event.get("direction") == "backward":
                direction = "**⚠ backward**"
            lines.append(
                f"| {_application(event, candidate_names)} "
                f"| {_job(event.get('job_id'), job_names)} "
                f"| {escape_md(event.get('from_stage_name') or event.get('from_stage_id'))} "
                f"| {escape_md(event.get('to_stage_name') or event.get('to_stage_id'))} "
                f"| {direction} | {_between(event)} |"
            )
        if moves > len(digest.moves):
            lines.append(
                f"\n…and {moves - len(digest.moves)} more stage moves "
                "(all of them in the events table artifact and `stagewatch changes`)."
            )
        lines += ["", "## Transitions", "", "| from → to | moves |", "| --- | ---: |"]
        top = digest.transitions.most_common(cap)
        lines += [f"| {escape_md(a)} → {escape_md(b)} | {n} |" for (a, b), n in top]
        if len(digest.transitions) > len(top):
            lines.append(f"\n…and {len(digest.transitions) - len(top)} more transitions.")
        lines.append("")

    notes = _notes(outcome, baseline)
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    lines += ["## Run statistics", "", *_statistics(outcome)]
    return "\n".join(lines) + "\n"


def event_table(
    events: Iterable[Mapping[str, Any]], *, cap: int = DEFAULT_TABLE_CAP
) -> list[dict[str, Any]]:
    """The machine-readable table artifact: the first `cap` change-log rows with their public
    fields. Values stay raw (the table is data, rendered as text by the UI), timestamps in
    Kombo's format."""
    return [
        {
            field: format_ts(value) if isinstance(value, datetime) else value
            for field in EVENT_FIELDS
            for value in [event.get(field)]
        }
        for event in islice(events, cap)
    ]


def _resource_id(kind: str, integration_id: str, record_id: Any) -> str:
    return f"kombo.{kind}.{integration_id}.{record_id}"


def prefect_event(
    event: Mapping[str, Any],
    *,
    job_names: Mapping[str, str] | None = None,
    candidate_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `prefect.events.emit_event` for one change-log row.

    The application is the resource; its job and integration are related resources, so an
    automation can match `stagewatch.application.hired` for one integration or one job. The id is
    derived from the change's unique key, so emitting the same change twice yields the same event.
    `occurred` is left to Prefect (now): the change's own times are in the payload, and an event
    dated in the past (or on the simulator's clock) would skew the server's trigger windows.
    """
    integration_id = str(event["integration_id"])
    app_id = event.get("application_id")
    resource = {
        "prefect.resource.id": _resource_id("application", integration_id, app_id),
        "prefect.resource.name": str(app_id),
    }
    if candidate_names is not None and app_id in candidate_names:
        resource["prefect.resource.name"] = redact_contacts(str(candidate_names[app_id]))
    related = [
        {
            "prefect.resource.id": f"kombo.integration.{integration_id}",
            "prefect.resource.role": "integration",
            "prefect.resource.name": integration_id,
        }
    ]
    job_id = event.get("job_id")
    if job_id is not None:
        job = {
            "prefect.resource.id": _resource_id("job", integration_id, job_id),
            "prefect.resource.role": "job",
        }
        if job_names and job_names.get(job_id):
            job["prefect.resource.name"] = redact_contacts(str(job_names[job_id]))
        related.append(job)
    payload = {
        field: format_ts(value) if isinstance(value, datetime) else value
        for field in EVENT_FIELDS
        if field not in ("integration_id",)
        for value in [event.get(field)]
        if value is not None
    }
    for field in ("from_stage_name", "to_stage_name", "rejection_reason_name"):
        if field in payload:
            payload[field] = redact_contacts(str(payload[field]))
    return {
        "event": EVENT_NAMES.get(event_label(event), "stagewatch.application.changed"),
        "resource": resource,
        "related": related,
        "payload": payload,
        "id": uuid.uuid5(_EVENT_NAMESPACE, str(event["event_key"])),
    }


def capped_event(
    integration_id: str,
    run_id: int | None,
    left_out: Mapping[str, int],
    *,
    observed_at: datetime | None = None,
    baseline: bool = False,
) -> dict:
    """The one event that stands for the changes a run did not emit one by one (over the cap, or
    the first sightings of a baseline run). With the run's observation time its id is derived
    from the run, like a change's from its key, so publishing the run again (late, after a crash
    mid-publish) yields the same event."""
    event: dict[str, Any] = {
        "event": CAPPED_EVENT_NAME,
        "resource": {
            "prefect.resource.id": f"kombo.integration.{integration_id}",
            "prefect.resource.name": integration_id,
        },
        "payload": {"sync_run_id": run_id, "not_emitted": dict(left_out), "baseline": baseline},
    }
    if run_id is not None and observed_at is not None:
        name = f"events-capped:{integration_id}:{run_id}:{format_ts(observed_at)}"
        event["id"] = uuid.uuid5(_EVENT_NAMESPACE, name)
    return event


def summary_markdown(outcomes: Iterable[SyncOutcome]) -> str:
    """The parent run's artifact: one row per integration saying what happened to it."""
    outcomes = list(outcomes)
    by_status = Counter(o.status for o in outcomes)
    parts = [f"{by_status[s]} {STATUS_LABELS[s]}" for s in STATUS_LABELS if by_status[s]]
    lines = [
        f"# stagewatch sync: {len(outcomes)} integration{'s' if len(outcomes) != 1 else ''}"
        + (f" ({', '.join(parts)})" if parts else ""),
        "",
        "| integration | status | mode | changes | hires | declines | stage moves | note |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for o in outcomes:
        hires = o.counts.get("hired", 0)
        declines = o.counts.get("declined", 0)
        note = escape_md(o.message, limit=160) if o.message else ""
        lines.append(
            f"| {_id(o.integration_id)} | {STATUS_LABELS[o.status]} | {o.mode} "
            f"| {o.changes} | {hires} | {declines} | {o.counts.get('stage moved', 0)} | {note} |"
        )
    return "\n".join(lines) + "\n"
