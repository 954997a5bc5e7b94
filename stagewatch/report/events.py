"""Prefect event payloads: one per change, and one standing for the changes not sent one by one.

The builders return keyword arguments for `prefect.events.emit_event`; publishing is the caller's.
Every id is derived from what the event stands for, so sending the same change twice sends the same
event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stagewatch.diff import EVENT_FIELDS
from stagewatch.report.outcome import event_label
from stagewatch.report.text import redact_contacts
from stagewatch.timeutil import format_ts

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

_EVENT_NAMESPACE = uuid.UUID("6f1b0a52-4c1e-4d8a-9a51-3c0a2f5f9e10")
# ATS free text in a payload; ids and Kombo's codes stay as they are.
_FREE_TEXT_FIELDS = ("from_stage_name", "to_stage_name", "rejection_reason_name")


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
    return {
        "event": EVENT_NAMES.get(event_label(event), "stagewatch.application.changed"),
        "resource": _application(event, candidate_names),
        "related": _related(event, job_names),
        "payload": _payload(event),
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


def _resource_id(kind: str, integration_id: str, record_id: Any) -> str:
    return f"kombo.{kind}.{integration_id}.{record_id}"


def _application(
    event: Mapping[str, Any], candidate_names: Mapping[str, str] | None
) -> dict[str, str]:
    """The event's resource, named by the candidate only when the caller passed names."""
    app_id = event.get("application_id")
    resource = {
        "prefect.resource.id": _resource_id("application", str(event["integration_id"]), app_id),
        "prefect.resource.name": str(app_id),
    }
    if candidate_names is not None and app_id in candidate_names:
        resource["prefect.resource.name"] = redact_contacts(str(candidate_names[app_id]))
    return resource


def _related(event: Mapping[str, Any], job_names: Mapping[str, str] | None) -> list[dict[str, str]]:
    """The integration, and the job when the change has one, for automations to match on."""
    integration_id = str(event["integration_id"])
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
    return related


def _payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """The change's public fields that are set; the integration is already a related resource."""
    payload = {
        field: format_ts(value) if isinstance(value, datetime) else value
        for field in EVENT_FIELDS
        if field not in ("integration_id",)
        for value in [event.get(field)]
        if value is not None
    }
    for field in _FREE_TEXT_FIELDS:
        if field in payload:
            payload[field] = redact_contacts(str(payload[field]))
    return payload
