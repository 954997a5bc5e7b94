"""Prefect event payloads for changes."""

import uuid

import pytest

from stagewatch.report import prefect_event
from stagewatch.report.events import _EVENT_NAMESPACE
from tests.report.factories import T1, event


def test_prefect_event_names_resources_and_is_deterministic():
    hired = event(
        "outcome_changed", app="a3", from_outcome="PENDING", to_outcome="HIRED", observed_at=T1
    )
    kwargs = prefect_event(hired, job_names={"job1": "Chef mail me a@b.co"})
    assert kwargs == {
        "event": "stagewatch.application.hired",
        "resource": {
            "prefect.resource.id": "kombo.application.greenhouse:AbC.a3",
            "prefect.resource.name": "a3",
        },
        "related": [
            {
                "prefect.resource.id": "kombo.integration.greenhouse:AbC",
                "prefect.resource.role": "integration",
                "prefect.resource.name": "greenhouse:AbC",
            },
            {
                "prefect.resource.id": "kombo.job.greenhouse:AbC.job1",
                "prefect.resource.role": "job",
                "prefect.resource.name": "Chef mail me [email redacted]",
            },
        ],
        "payload": {
            "event_key": "k-outcome_changed-a3-",
            "application_id": "a3",
            "kind": "outcome_changed",
            "observed_at": "2026-01-06T09:00:00.000Z",
            "previous_observed_at": "2026-01-05T09:00:00.000Z",
            "job_id": "job1",
            "sync_run_id": 7,
            "from_outcome": "PENDING",
            "to_outcome": "HIRED",
        },
        "id": uuid.uuid5(_EVENT_NAMESPACE, "k-outcome_changed-a3-"),
    }
    assert prefect_event(hired)["id"] == kwargs["id"]


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"kind": "stage_changed"}, "stagewatch.application.stage-changed"),
        ({"kind": "outcome_changed", "to_outcome": "DECLINED"}, "stagewatch.application.declined"),
        ({"kind": "first_seen"}, "stagewatch.application.first-seen"),
        ({"kind": "deleted"}, "stagewatch.application.deleted"),
        ({"kind": "restored"}, "stagewatch.application.restored"),
        ({"kind": "job_changed"}, "stagewatch.application.job-changed"),
        ({"kind": "outcome_changed", "to_outcome": None}, "stagewatch.application.outcome-changed"),
    ],
)
def test_prefect_event_names(fields, name):
    assert prefect_event(event("x") | fields)["event"] == name
