"""What one integration's sync run did, and the reviewer's label for each kind of change."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from stagewatch.diff import EVENT_KINDS
from stagewatch.timeutil import parse_ts

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
_KIND_LABELS = {
    "stage_changed": "stage moved",
    "job_changed": "job changed",
    "first_seen": "first seen",
    "deleted": "deleted",
    "restored": "restored",
}


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
    return _KIND_LABELS.get(str(kind), str(kind).replace("_", " "))


def label_counts(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Counts per reviewer label, in reading order; what the artifact's count table shows."""
    counts = Counter(event_label(e) for e in events)
    return {label: counts[label] for label in ordered_labels(counts)}


def labels_from_kinds(
    kind_counts: Mapping[str, int], outcome_events: Iterable[Mapping[str, Any]]
) -> dict[str, int]:
    """`label_counts` without reading every row: per-kind counts (as the commit returns them)
    and only the outcome changes, which split into hired, declined and other."""
    counts: Counter[str] = Counter(label_counts(outcome_events))
    for kind, count in kind_counts.items():
        if kind != "outcome_changed" and count:
            counts[event_label({"kind": kind})] += count
    return {label: counts[label] for label in ordered_labels(counts)}


def ordered_labels(counts: Mapping[str, int]) -> list[str]:
    """The labels with a count, known ones in LABEL_ORDER and any others after them by name."""
    known = [label for label in LABEL_ORDER if counts.get(label)]
    return known + sorted(label for label in counts if label not in LABEL_ORDER and counts[label])
