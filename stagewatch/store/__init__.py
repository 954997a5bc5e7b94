"""The store: snapshot, change log, sync runs, watermarks, leases and staging, in one SQLite file
or in a schema of a PostgreSQL database (a `postgresql://` URL; `location`, `pg`, `pg_schema`).

`Store` is the one door: it opens the database (`connection`) and answers through its parts, the
runs and their leases (`runs`), staging (`staging`) and queries (`queries`); `schema` holds the
migrations. Open one `Store(path)` per thread: runs of different integrations may share the store
from several threads, processes or machines; WAL lets SQLite's readers proceed while one writer
commits.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from stagewatch.diff import EVENT_FIELDS, EVENT_KINDS
from stagewatch.kombo.models import Application, Job, Quarantined
from stagewatch.store.checks import CheckPlan, CheckRecord, Checks
from stagewatch.store.connection import (
    CHECKPOINT_THREAD,
    CRASH_ENV,
    Database,
    wait_for_checkpoints,
)
from stagewatch.store.errors import LeaseLostError, LockedError, Run, StoreError
from stagewatch.store.funnels import Funnels
from stagewatch.store.imports import ImportLedger
from stagewatch.store.lease import DEFAULT_LEASE_SECONDS, LeaseKeeper
from stagewatch.store.queries import Queries
from stagewatch.store.runs import RUN_FACTS, Runs
from stagewatch.store.staging import ApplicationStager, Staging
from stagewatch.timeutil import utcnow

__all__ = [
    "CHECKPOINT_THREAD",
    "CRASH_ENV",
    "EVENT_FIELDS",
    "EVENT_KINDS",
    "RUN_FACTS",
    "CheckPlan",
    "CheckRecord",
    "LeaseLostError",
    "LockedError",
    "Run",
    "Store",
    "StoreError",
    "wait_for_checkpoints",
]


class Store:
    """Open (and create or migrate) a stagewatch database; `readonly=True` never writes or creates.

    `lease_seconds` is how long the lock of a run this store begins outlives the run's last
    renewal (`STAGEWATCH_LOCK_LEASE_SECONDS` through `Settings`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        if not lease_seconds > 0:
            raise StoreError(f"lease_seconds must be positive, not {lease_seconds}")
        self._db = Database(path, readonly=readonly, clock=clock, sleep=sleep, monotonic=monotonic)
        self._runs = Runs(self._db, lease_seconds=lease_seconds)
        self._staging = Staging(self._db, self._runs)
        self._queries = Queries(self._db)
        self._checks = Checks(self._db)
        self._funnels = Funnels(self._db)

    @property
    def path(self):
        return self._db.path

    @property
    def readonly(self) -> bool:
        return self._db.readonly

    @property
    def _conn(self) -> sqlite3.Connection:
        """The store's own connection, for tests and tools that read the file directly."""
        return self._db.conn

    def close(self, *, wait_for_checkpoint: bool = True) -> None:
        """Close the store: the leases of runs still open stop being renewed (a retry resumes
        them), and the connection closes once the background checkpoint is done, unless told
        not to wait (see `Database.close`)."""
        self._runs.stop_keepers()
        self._db.close(wait_for_checkpoint=wait_for_checkpoint)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- runs and leases (see runs.Runs) -------------------------------------------------------

    def begin_run(self, integration_id: str, mode: str = "incremental", *args, **kwargs) -> Run:
        """Record a new run and take the integration's lock (`Runs.begin`)."""
        return self._runs.begin(integration_id, mode, *args, **kwargs)

    def resume_run(self, run: Run) -> bool:
        """Carry on with a run begun earlier, if it still holds its lock (`Runs.resume`)."""
        return self._runs.resume(run)

    def release_lock(self, integration_id: str, *, force: bool = False) -> dict[str, Any]:
        """For operators: release a lock and abandon its run (`Runs.release_lock`)."""
        return self._runs.release_lock(integration_id, force=force)

    def lease_keeper(self, run_id: int) -> LeaseKeeper | None:
        return self._runs.lease_keeper(run_id)

    def commit_run(self, run_id: int, **kwargs: Any) -> dict[str, int]:
        """Apply the run in one transaction; its event counts per kind (`Runs.commit`)."""
        return self._runs.commit(run_id, **kwargs)

    def fail_run(self, run_id: int, **kwargs: Any) -> None:
        """End a run that could not list (`Runs.fail`)."""
        self._runs.fail(run_id, **kwargs)

    def mark_published(self, run_id: int, *, note: str | None = None) -> bool:
        return self._runs.mark_published(run_id, note=note)

    def unpublished_runs(self, integration_id: str) -> list[dict[str, Any]]:
        return self._runs.unpublished(integration_id)

    def watermark(self, integration_id: str) -> datetime | None:
        return self._runs.watermark(integration_id)

    # -- checks before a sync (see checks.Checks) ------------------------------------------------

    def check_plan(self, integration_ids: list[str]) -> list[CheckPlan]:
        """Where each integration's check lists from, and whether it must sync anyway."""
        return self._checks.plan(integration_ids)

    def record_checks(self, records: Iterable[CheckRecord]) -> int:
        """Keep each integration's latest check (table `integration_checks`)."""
        return self._checks.record(records)

    # -- the funnels kept per job (see funnels.Funnels) -------------------------------------------

    def refresh_funnels(self, integration_id: str) -> int:
        """Rebuild the integration's stale kept funnels; how many jobs were stale."""
        return self._funnels.refresh(integration_id)

    def stale_funnel_jobs(self, integration_id: str) -> int:
        """Jobs whose kept funnel rows wait for `refresh_funnels`."""
        return self._funnels.stale_jobs(integration_id)

    def lock_held(self, integration_id: str) -> bool:
        """Whether a live run holds the integration's lock (`Runs.lock_held`)."""
        return self._runs.lock_held(integration_id)

    def take_waiting_place(self, integration_id: str, token: str) -> str | None:
        """Wait next for the integration, or learn who does (`Runs.take_waiting_place`)."""
        return self._runs.take_waiting_place(integration_id, token)

    def renew_waiting_place(self, integration_id: str, token: str) -> bool:
        return self._runs.renew_waiting_place(integration_id, token)

    def leave_waiting_place(self, integration_id: str, token: str) -> int | None:
        return self._runs.leave_waiting_place(integration_id, token)

    # -- staging (see staging.Staging) ---------------------------------------------------------

    def stage_jobs(self, run_id: int, jobs: Iterable[Job]) -> None:
        self._staging.stage_jobs(run_id, jobs)

    def stage_applications(
        self, run_id: int, apps: Iterable[Application], unparsed_ids: Iterable[str] = ()
    ) -> None:
        self._staging.stage_applications(run_id, apps, unparsed_ids)

    def application_stager(self, run_id: int, **kwargs: Any) -> ApplicationStager:
        return self._staging.application_stager(run_id, **kwargs)

    def quarantine(self, run_id: int, integration_id: str, items: Iterable[Quarantined]) -> None:
        self._staging.quarantine(run_id, integration_id, items)

    def absent_applications(self, run_id: int) -> list[str]:
        return self._staging.absent_applications(run_id)

    def stale_job_ids(self, run_id: int) -> list[str]:
        return self._staging.stale_job_ids(run_id)

    # -- the import ledger (see imports.ImportLedger) -------------------------------------------

    def import_ledger(self) -> ImportLedger:
        return ImportLedger(self._db)

    # -- queries (see queries.Queries) ---------------------------------------------------------

    def run(self, run_id: int) -> dict[str, Any]:
        return self._queries.run(run_id)

    def is_baseline(self, run_id: int) -> bool:
        return self._queries.is_baseline(run_id)

    def events(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._queries.events(**filters)

    def history(self, application_id: str, integration_id: str | None = None) -> list[dict]:
        return self._queries.history(application_id, integration_id)

    def status(self) -> list[dict[str, Any]]:
        return self._queries.status()

    def job_names(self, integration_id: str) -> dict[str, str]:
        return self._queries.job_names(integration_id)

    def candidate_names(
        self, integration_id: str, application_ids: Iterable[str]
    ) -> dict[str, str]:
        return self._queries.candidate_names(integration_id, application_ids)

    def live_applications(self, integration_id: str) -> int:
        return self._queries.live_applications(integration_id)

    def schema_markdown(self) -> str:
        return self._queries.schema_markdown()

    def schema_sql(self) -> str:
        return self._queries.schema_sql()

    def integrity_check(self) -> str:
        return self._queries.integrity_check()
