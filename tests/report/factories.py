"""Literal change-log rows and outcomes for the report tests."""

from datetime import UTC, datetime

from stagewatch.report import SyncOutcome

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 1, 6, 9, 0, tzinfo=UTC)


def event(kind, app="app1", **fields):
    base = {
        "event_key": f"k-{kind}-{app}-{fields.get('to_stage_id', '')}",
        "integration_id": "greenhouse:AbC",
        "application_id": app,
        "kind": kind,
        "observed_at": "2026-01-06T09:00:00.000Z",
        "previous_observed_at": "2026-01-05T09:00:00.000Z",
        "job_id": "job1",
        "sync_run_id": 7,
    }
    return base | fields


def outcome(**fields):
    base = dict(
        integration_id="greenhouse:AbC",
        status="synced",
        mode="incremental",
        run_id=7,
        window_start=T0,
        listed_at=T1,
        complete=True,
        requests=4,
        retries=0,
        waited_seconds=0.0,
        duration_seconds=1.25,
        pages=2,
        applications=3,
        jobs=1,
    )
    return SyncOutcome(**(base | fields))
