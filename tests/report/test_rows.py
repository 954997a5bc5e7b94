"""The events table artifact rows."""

from stagewatch.diff import EVENT_FIELDS
from stagewatch.report import event_table
from tests.report.factories import T0, event


def test_event_table_keeps_public_fields_up_to_the_cap():
    events = [event("deleted", app=f"a{i}", deleted_at=T0) for i in range(4)]
    rows = event_table(iter(events), cap=3)
    assert [row["application_id"] for row in rows] == ["a0", "a1", "a2"]
    assert rows[0] == {field: None for field in EVENT_FIELDS} | {
        "event_key": "k-deleted-a0-",
        "integration_id": "greenhouse:AbC",
        "application_id": "a0",
        "kind": "deleted",
        "observed_at": "2026-01-06T09:00:00.000Z",
        "previous_observed_at": "2026-01-05T09:00:00.000Z",
        "job_id": "job1",
        "sync_run_id": 7,
        "deleted_at": "2026-01-05T09:00:00.000Z",
    }
