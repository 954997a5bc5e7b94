"""Builders shared by the store, diff, crash and CLI tests: literal jobs, applications and runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from stagewatch.kombo.models import Application, Job
from stagewatch.store import Store
from stagewatch.store.location import PostgresLocation, is_postgres

INTEGRATION = "greenhouse:HWUTwvyx2wLoSUHphiWVrp28"
OTHER_INTEGRATION = "lever:9Qm2fLx7RkT4vNc8ZpW3bY6d"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
FINISHED = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)

# The public change-log format as docs/architecture.md lists it: deleted_reason and the stage
# statuses came later, so they come last.
CONTRACT_FIELDS = (
    "event_key",
    "integration_id",
    "application_id",
    "kind",
    "observed_at",
    "previous_observed_at",
    "job_id",
    "sync_run_id",
    "from_stage_id",
    "from_stage_name",
    "to_stage_id",
    "to_stage_name",
    "direction",
    "from_outcome",
    "to_outcome",
    "from_job_id",
    "to_job_id",
    "rejection_reason_name",
    "rejected_at",
    "deleted_at",
    "deleted_reason",
    "from_stage_status",
    "to_stage_status",
)

PIPELINE = (
    ("st-applied", "Applied", 0),
    ("st-screen", "Phone screen", 1),
    ("st-onsite", "Onsite", 2),
    ("st-offer", "Offer", 3),
)


def db_rows(db, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """A statement run beside any store, and its rows: `db` is a SQLite path or a PostgreSQL URL (the
    statement in sqlite3's placeholders either way)."""
    if is_postgres(str(db)):
        from stagewatch.store import pg

        conn = pg.connect(PostgresLocation.parse(str(db)))
        try:
            cursor = conn.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        finally:
            conn.close()
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(sql, params).fetchall()
        conn.commit()
        return found
    finally:
        conn.close()


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def job(
    job_id: str = "job-1", stages: Sequence[tuple[str, str | None, int | None]] = PIPELINE
) -> Job:
    return Job.model_validate(
        {
            "id": job_id,
            "remote_id": f"r-{job_id}",
            "name": f"Engineer {job_id}",
            "status": "OPEN",
            "stages": [
                {"id": sid, "name": name, "index": index, "remote_data": {"secret": "x"}}
                for sid, name, index in stages
            ],
            "remote_data": {"internal": "never stored"},
        }
    )


def application(
    app_id: str,
    stage: tuple[str, str | None] | None = ("st-applied", "Applied"),
    outcome: str | None = "PENDING",
    job_id: str = "job-1",
    **fields: Any,
) -> Application:
    record: dict[str, Any] = {
        "id": app_id,
        "remote_id": f"r-{app_id}",
        "outcome": outcome,
        "job_id": job_id,
        "current_stage_id": stage[0] if stage else None,
        "current_stage": {"id": stage[0], "name": stage[1]} if stage else None,
        "candidate": {
            "id": f"cand-{app_id}",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email_addresses": [{"email_address": "ada@example.com", "type": "PRIVATE"}],
            "phone_numbers": [{"phone_number": "+1-541-754-3010", "type": "HOME"}],
        },
        "remote_data": {"raw_ats_payload": "never stored"},
    }
    record.update(fields)
    return Application.model_validate(record)


class Runner:
    """Applies listings to a store as runs observed at T0 + hours."""

    def __init__(self, store: Store, integration: str = INTEGRATION) -> None:
        self.store = store
        self.integration = integration
        self.run_ids: list[int] = []

    def run(
        self,
        apps: Iterable[Application] | Sequence[Sequence[Application]],
        *,
        hours: float,
        mode: str = "full",
        jobs: Iterable[Job] | None = (),
        complete: bool = True,
        watermark: datetime | None = None,
    ) -> dict[str, int]:
        """One run; `apps` is one page, or a list of pages when its first item is a list."""
        apps = list(apps)
        pages = apps if apps and isinstance(apps[0], list) else [apps]
        run = self.store.begin_run(self.integration, mode, started_at=at(hours))
        self.run_ids.append(run.id)
        jobs = list(jobs) if jobs is not None else []
        if jobs:
            self.store.stage_jobs(run.id, jobs)
        for page in pages:
            self.store.stage_applications(run.id, page)
        return self.store.commit_run(
            run.id, observed_at=at(hours), complete=complete, next_watermark=watermark
        )


def counts(**kinds: int) -> dict[str, int]:
    result = dict.fromkeys(
        ("first_seen", "stage_changed", "outcome_changed", "job_changed", "deleted", "restored"), 0
    )
    result.update(kinds)
    return result


def event(
    kind: str,
    application_id: str,
    observed_at: str,
    previous_observed_at: str | None,
    sync_run_id: int,
    *,
    job_id: str | None = "job-1",
    integration_id: str = INTEGRATION,
    **aspects: Any,
) -> dict[str, Any]:
    """An expected event row without its key (checked on its own)."""
    row = dict.fromkeys(CONTRACT_FIELDS[1:])
    row.update(
        integration_id=integration_id,
        application_id=application_id,
        kind=kind,
        observed_at=observed_at,
        previous_observed_at=previous_observed_at,
        job_id=job_id,
        sync_run_id=sync_run_id,
    )
    unknown = set(aspects) - set(row)
    assert not unknown, unknown
    row.update(aspects)
    return row


def events_without_keys(store: Store, **filters: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "event_key"} for row in store.events(**filters)]


def snapshot(store: Store, *columns: str) -> list[tuple]:
    cols = ", ".join(("application_id", *columns))
    return [
        tuple(row)
        for row in store._conn.execute(
            f"SELECT {cols} FROM applications ORDER BY integration_id, application_id"
        )
    ]
