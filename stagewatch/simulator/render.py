"""Records as Kombo renders them, built per request from the world's columns."""

from __future__ import annotations

import time
from typing import Any

from stagewatch.simulator import catalog
from stagewatch.simulator.integration import Integration
from stagewatch.simulator.records import (
    APPLICATION_REMOTE_BASE,
    CANDIDATE_REMOTE_BASE,
    DECLINED,
    NO_STAGE,
    OUTCOMES,
    Job,
    Stage,
)


def format_ms(ms: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS.sssZ` from epoch milliseconds (hot path: no datetime objects)."""
    seconds, millis = divmod(ms, 1000)
    t = time.gmtime(seconds)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 - measured faster
        t.tm_year,
        t.tm_mon,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
        millis,
    )


def _optional_ms(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def _base_url(integ: Integration) -> str:
    return f"https://{integ.tool}.example.com"


def post_url(integ: Integration, job: Job) -> str:
    return f"https://jobs.example.com/{integ.tool}/{job.remote_id}"


def _custom_fields(stage: Stage) -> dict[str, Any] | None:
    # A copy: a caller editing a record must not edit the world.
    return None if stage.custom_fields is None else dict(stage.custom_fields)


def _stage_ref(integ: Integration, job: Job, pos: int) -> dict[str, Any] | None:
    if pos == NO_STAGE or not integ.has_stages:
        return None
    stage = job.stages[pos]
    return {
        "id": stage.id,
        "remote_id": stage.remote_id,
        "name": stage.name,
        "index": stage.index,
        "status": stage.status,
        "custom_fields": _custom_fields(stage),
    }


def _candidate(
    integ: Integration, row: int, candidate_id: str, full: bool, remote_id: str
) -> dict[str, Any]:
    first, last = integ.candidates.name(row)
    email, phone = integ.candidates.contact(row)
    h = row * 2654435761
    candidate: dict[str, Any] = {
        "id": candidate_id,
        "remote_id": remote_id,
        "first_name": first,
        "last_name": last,
    }
    if full:
        candidate |= {"company": None, "title": None, "confidential": False}
    candidate |= {
        "source": catalog.SOURCES[h % len(catalog.SOURCES)],
        "phone_numbers": [{"phone_number": phone, "type": "MOBILE"}] if phone else [],
        "email_addresses": [{"email_address": email, "type": "PRIVATE"}],
        "social_media": [],
        "remote_url": f"{_base_url(integ)}/people/{remote_id}",
        "tags": [],
    }
    if full:
        created = integ.app_created[row]
        changed = integ.candidates.changed.get(row, created)
        candidate |= {
            "location": None,
            "custom_fields": {},
            "integration_fields": [],
            "remote_created_at": format_ms(created),
            "remote_updated_at": format_ms(changed),
            "remote_data": None,
            "changed_at": format_ms(changed),
            "remote_deleted_at": None,
        }
    return candidate


def application(integ: Integration, row: int, *, full_candidate: bool = False) -> dict[str, Any]:
    """One application as `GET /ats/applications` lists it (or as POST returns it)."""
    job = integ.jobs[integ.app_job[row]]
    outcome = integ.app_outcome[row]
    declined = integ.has_outcomes and outcome == DECLINED
    stage = _stage_ref(integ, job, integ.app_stage[row])
    if integ.imported:
        remote_id, candidate_remote_id = integ.remote_ids_of(row)
    else:
        remote_id, candidate_remote_id = str(APPLICATION_REMOTE_BASE + row), None
    changed = format_ms(integ.app_changed[row])
    candidate_id = integ.candidate_ids.encode(row)
    record: dict[str, Any] = {
        "id": integ.application_ids.encode(row),
        "remote_id": remote_id,
        "outcome": OUTCOMES[outcome] if integ.has_outcomes else None,
        "rejection_reason_name": (
            catalog.REJECTION_REASONS[integ.app_reason[row]] if declined else None
        ),
        "rejected_at": format_ms(integ.app_rejected[row]) if declined else None,
        "current_stage_id": stage["id"] if stage else None,
        "job_id": job.id,
        "candidate_id": candidate_id,
        "screening_question_answers": [],
        "custom_fields": {},
        "integration_fields": [],
        "remote_url": f"{_base_url(integ)}/applications/{remote_id}",
        "changed_at": changed,
        "remote_deleted_at": _optional_ms(integ.deleted.get(row)),
        "remote_created_at": format_ms(integ.app_created[row]),
        "remote_updated_at": changed,
        "remote_data": None,
        "candidate": _candidate(
            integ,
            row,
            candidate_id,
            full_candidate,
            candidate_remote_id or str(CANDIDATE_REMOTE_BASE + row),
        ),
        "current_stage": stage,
        "job": {"id": job.id, "remote_id": job.remote_id, "name": job.name},
    }
    if not full_candidate:
        record["interviews"] = []
        record["offers"] = []
    return record


def _stage(stage: Stage) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": stage.id,
        "remote_id": stage.remote_id,
        "name": stage.name,
        "remote_data": None,
    }
    if stage.has_index:
        record["index"] = stage.index
    record["status"] = stage.status
    record["custom_fields"] = _custom_fields(stage)
    return record


def job(integ: Integration, job: Job) -> dict[str, Any]:
    """One job as `GET /ats/jobs` lists it; `stages` is empty when the ATS has none."""
    city, country, state = job.city
    return {
        "id": job.id,
        "remote_id": job.remote_id,
        "name": job.name,
        "job_code": job.job_code,
        "description": f"<p>Join our {job.department} team as {job.name}.</p>",
        "confidential": job.visibility == "CONFIDENTIAL",
        "weekly_hours": 40 if job.employment_type == "FULL_TIME" else 20,
        "employment_type": job.employment_type,
        "status": job.status,
        "visibility": job.visibility,
        "category": None,
        "department": job.department,
        "post_url": post_url(integ, job),
        "experience_level": None,
        "remote_work_status": "HYBRID",
        "salary_amount": None,
        "salary_amount_from": None,
        "salary_amount_to": None,
        "salary_currency": None,
        "salary_period": None,
        "location": {
            "city": city,
            "country": country,
            "raw": f"{city}, {country}",
            "state": state,
            "street_1": None,
            "street_2": None,
            "zip_code": None,
        },
        "custom_fields": {},
        "integration_fields": [],
        "remote_url": f"{_base_url(integ)}/jobs/{job.remote_id}",
        "opened_at": format_ms(job.created_ms),
        "closed_at": _optional_ms(job.closed_ms),
        "remote_created_at": format_ms(job.created_ms),
        "remote_updated_at": format_ms(job.changed_ms),
        "contact_id": None,
        "remote_data": None,
        "changed_at": format_ms(job.changed_ms),
        "remote_deleted_at": _optional_ms(job.deleted_ms),
        "stages": [_stage(stage) for stage in job.stages],
        "screening_questions": [],
        "job_postings": [],
        "hiring_team": [],
    }
