"""The events table artifact: a run's change-log rows as the data Prefect shows in a table.

The UI shows a table's columns in the order of the first row's keys and only the first few fit
on screen, so the columns a reviewer reads lead; keys and ids, for machines, come last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import islice
from typing import Any

from stagewatch.diff import EVENT_FIELDS
from stagewatch.report.outcome import event_label
from stagewatch.report.text import redact_contacts
from stagewatch.timeutil import format_ts

DEFAULT_TABLE_CAP = 500
REVIEWER_COLUMNS = ("kind", "application", "job", "stage", "direction", "outcome", "observed")
# Raw fields after the reviewer's columns: readable ones first, then keys and ids.
_IDS = ("application_id", "job_id", "integration_id", "sync_run_id", "event_key")
RAW_COLUMNS = tuple(f for f in EVENT_FIELDS if f not in (*_IDS, *REVIEWER_COLUMNS)) + _IDS


def event_table(
    events: Iterable[Mapping[str, Any]],
    *,
    cap: int = DEFAULT_TABLE_CAP,
    job_names: Mapping[str, str] | None = None,
    candidate_names: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The table artifact: the first `cap` change-log rows, the reviewer's columns first (names
    where the caller passed them; candidate names only when allowed), then every public field.
    Values stay raw (the table is data, rendered as text by the UI), timestamps in Kombo's
    format."""
    jobs = job_names or {}
    return [
        _reviewer_columns(event, jobs, candidate_names)
        | {
            field: format_ts(value) if isinstance(value, datetime) else value
            for field in RAW_COLUMNS
            for value in [event.get(field)]
        }
        for event in islice(events, cap)
    ]


def _reviewer_columns(
    event: Mapping[str, Any], jobs: Mapping[str, str], candidates: Mapping[str, str] | None
) -> dict[str, Any]:
    app_id = event.get("application_id")
    application = str(app_id)
    if candidates is not None and candidates.get(app_id):
        application = f"{redact_contacts(str(candidates[app_id]))} ({app_id})"
    job = _job(event.get("job_id"), jobs)
    if event.get("kind") == "job_changed":
        job = _arrow(_job(event.get("from_job_id"), jobs), _job(event.get("to_job_id"), jobs))
    stage = ""
    if event.get("kind") in ("stage_changed", "first_seen"):
        stage = _arrow(_stage(event, "from"), _stage(event, "to"))
    outcome = ""
    if event.get("kind") == "outcome_changed":
        outcome = _arrow(event.get("from_outcome") or "", event.get("to_outcome") or "")
    observed = event.get("observed_at")
    return {
        "kind": event_label(event),
        "application": application,
        "job": job,
        "stage": stage,
        "direction": event.get("direction"),
        "outcome": outcome,
        "observed": format_ts(observed) if isinstance(observed, datetime) else observed,
    }


def _job(job_id: Any, jobs: Mapping[str, str]) -> str:
    if job_id is None:
        return ""
    return str(jobs.get(job_id) or job_id)


def _stage(event: Mapping[str, Any], side: str) -> str:
    return str(event.get(f"{side}_stage_name") or event.get(f"{side}_stage_id") or "")


def _arrow(before: str, after: str) -> str:
    return f"{before} → {after}" if before else f"→ {after}" if after else ""
