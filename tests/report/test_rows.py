"""The events table artifact rows."""

from stagewatch.diff import EVENT_FIELDS
from stagewatch.report import REVIEWER_COLUMNS, event_table
from tests.report.factories import T0, event


def test_event_table_keeps_public_fields_up_to_the_cap():
    events = [event("deleted", app=f"a{i}", deleted_at=T0) for i in range(4)]
    rows = event_table(iter(events), cap=3)
    assert [row["application_id"] for row in rows] == ["a0", "a1", "a2"]
    assert rows[0] == {field: None for field in EVENT_FIELDS} | {
        "kind": "deleted",
        "application": "a0",
        "job": "job1",
        "stage": "",
        "direction": None,
        "outcome": "",
        "observed": "2026-01-06T09:00:00.000Z",
        "event_key": "k-deleted-a0-",
        "integration_id": "greenhouse:AbC",
        "application_id": "a0",
        "observed_at": "2026-01-06T09:00:00.000Z",
        "previous_observed_at": "2026-01-05T09:00:00.000Z",
        "job_id": "job1",
        "sync_run_id": 7,
        "deleted_at": "2026-01-05T09:00:00.000Z",
    }


def test_reviewer_columns_lead_and_ids_come_last():
    (row,) = event_table(
        [
            event(
                "stage_changed",
                app="a1",
                from_stage_name="Applied",
                to_stage_id="s2",
                direction="backward",
            )
        ],
        job_names={"job1": "Nurse"},
        candidate_names={"a1": "Ada"},
    )
    assert REVIEWER_COLUMNS == (
        "kind",
        "application",
        "job",
        "stage",
        "direction",
        "outcome",
        "observed",
    )
    assert list(row)[:7] == list(REVIEWER_COLUMNS)
    assert list(row)[-5:] == [
        "application_id",
        "job_id",
        "integration_id",
        "sync_run_id",
        "event_key",
    ]
    assert [row[c] for c in REVIEWER_COLUMNS] == [
        "stage moved",
        "Ada (a1)",
        "Nurse",
        "Applied → s2",
        "backward",
        "",
        "2026-01-06T09:00:00.000Z",
    ]


def test_outcome_and_job_changes_read_as_arrows():
    rows = event_table(
        [
            event("outcome_changed", app="a1", from_outcome="ACTIVE", to_outcome="HIRED"),
            event("job_changed", app="a2", from_job_id="job1", to_job_id="job9"),
        ],
        job_names={"job1": "Nurse"},
    )
    assert [(r["kind"], r["job"], r["outcome"]) for r in rows] == [
        ("hired", "Nurse", "ACTIVE → HIRED"),
        ("job changed", "Nurse → job9", ""),
    ]
