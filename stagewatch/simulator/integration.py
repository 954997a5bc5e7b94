"""One connected ATS's state: its jobs, application columns, and the changes a record goes through.

Changes come from API clients (the public methods, by id) and from simulated activity (by row).

State is kept in columns (`array`s) rather than objects so a million applications fit in tens of
megabytes; records are rendered to JSON per request (`render.py`).
"""

from __future__ import annotations

import functools
import random
from array import array
from bisect import bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from stagewatch.simulator import catalog, generation
from stagewatch.simulator.activity import Activity
from stagewatch.simulator.backlog import IMPORT_ID_TYPES, Untracked, backlog_size, draw_backlog
from stagewatch.simulator.candidates import Candidates, Given
from stagewatch.simulator.changes import ChangeLog
from stagewatch.simulator.ids import IdCodec
from stagewatch.simulator.records import (
    APPLICATION_REMOTE_BASE,
    CANDIDATE_REMOTE_BASE,
    DECLINED,
    HIRED,
    NO_REASON,
    NO_STAGE,
    PENDING,
    Job,
    SimulationError,
)

if TYPE_CHECKING:
    from stagewatch.simulator.world import World

T = TypeVar("T")


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """Public mutations hold the world lock: a served request never sees half a change."""

    @functools.wraps(method)
    def wrapper(self: Integration, *args: Any, **kwargs: Any) -> T:
        with self.world.lock:
            return method(self, *args, **kwargs)

    return wrapper


class Integration:
    """One connected ATS: its jobs and the applications created through Kombo for them.

    Randomness comes from `random.Random` streams seeded by `(seed, integration, purpose)`: the
    build, ids, stage descriptions and activity each draw from their own.
    """

    def __init__(
        self,
        world: World,
        number: int,
        integration_id: str,
        scenario: str,
        *,
        applications: int,
        jobs: int,
    ) -> None:
        self.world = world
        self.number = number
        self.id = integration_id
        self.scenario = scenario
        self.tool = integration_id.split(":", 1)[0]
        self.has_stages = scenario != "no-stages"
        self.has_outcomes = scenario != "no-outcomes"
        self.has_applications = scenario != "no-applications"
        self.has_jobs = scenario != "no-jobs"  # /ats/jobs answers MODEL_NOT_AVAILABLE
        self.activity = Activity(self, self._stream("events"))
        ids_rng = self._stream("ids")
        self.job_ids = IdCodec(ids_rng)
        self.stage_ids = IdCodec(ids_rng)
        self.application_ids = IdCodec(ids_rng)
        self.candidate_ids = IdCodec(ids_rng)
        build_rng = self._stream("build")
        self._take_jobs(build_rng, jobs)
        count = applications if self.has_applications else 0
        built = generation.build_applications(build_rng, self.jobs, count, world.start_ms)
        self._take_applications(built)
        # Imports: the backlog is drawn on first use; imported rows keep their ATS ids.
        self._backlog: list[Untracked] | None = None
        self._backlog_size = backlog_size(count)
        self.imported: dict[int, Untracked] = {}  # row -> the untracked application it was
        self._imported_rows: dict[int, int] = {}  # backlog number -> row
        self._imported_by_remote: dict[str, int] = {}  # application remote id -> row
        self._pending_imports: list[int] = []  # rows imported, listed at the next sync

    def _stream(self, purpose: str) -> random.Random:
        return random.Random(f"stagewatch-sim:{self.world.seed}:{self.number}:{purpose}")

    def _take_jobs(self, build_rng: random.Random, count: int) -> None:
        stage_ids = self.stage_ids if self.has_stages else None
        self.jobs = generation.build_jobs(
            build_rng, count, self.world.start_ms, job_ids=self.job_ids, stage_ids=stage_ids
        )
        generation.describe_stages(self._stream("stage-status"), self.jobs)
        self.stage_by_id = {
            stage.id: (job.row, pos) for job in self.jobs for pos, stage in enumerate(job.stages)
        }
        self.job_by_id = {job.id: job.row for job in self.jobs}
        self.job_log = ChangeLog([job.changed_ms for job in self.jobs])
        self.open_jobs = [job.row for job in self.jobs if job.accepts_applications]

    def _take_applications(self, apps: generation.Applications) -> None:
        self.app_job = apps.job
        self.app_stage = apps.stage
        self.app_outcome = apps.outcome
        self.app_reason = apps.reason
        self.app_created = apps.created
        self.app_changed = apps.changed
        self.app_rejected = apps.rejected
        self.app_log = ChangeLog(array("q", apps.changed))
        self.deleted = apps.deleted  # row -> remote_deleted_at (ms)
        self.active = apps.active
        self.candidates = Candidates(self.world.seed, self.number, len(apps.job))
        self._created_order: array | None = None  # rows by creation time, built on first use
        for row, deleted_ms in apps.deleted.items():
            self.activity.schedule_deletion_fate(
                row, deleted_ms, may_restore=True, now_ms=self.world.now_ms
            )

    # -- lookups ----------------------------------------------------------------------------

    @property
    def application_count(self) -> int:
        return len(self.app_job)

    def application_row(self, application_id: str) -> int | None:
        """The row of a listed (not purged) application id, else None."""
        row = self.application_ids.decode(application_id)
        if row is None or not self.app_log.listed(row):
            return None
        return row

    def application_row_by_remote_id(self, remote_id: str) -> int | None:
        if not remote_id.isdigit():
            return None
        row = self._imported_by_remote.get(remote_id)
        if row is None:
            row = int(remote_id) - APPLICATION_REMOTE_BASE
            if row in self.imported:
                return None  # an imported row keeps the remote id it had in the ATS
        return row if self.app_log.listed(row) else None

    def remote_ids_of(self, row: int) -> tuple[str, str]:
        """(application remote id, candidate remote id) of a row, imported ones included."""
        entry = self.imported.get(row) if self.imported else None
        if entry is not None:
            return entry.remote_id, entry.candidate_remote_id
        return str(APPLICATION_REMOTE_BASE + row), str(CANDIDATE_REMOTE_BASE + row)

    def rows_created_after(self, ms: int, limit: int) -> list[int] | None:
        """Rows created after `ms`, or None when more than `limit` are (a scan is cheaper then).

        The creation-time index is built on first use: most worlds never filter on it.
        """
        created = self.app_created
        if self._created_order is None:
            self._created_order = array("q", sorted(range(len(created)), key=created.__getitem__))
        order = self._created_order
        first = bisect_right(order, ms, key=created.__getitem__)
        if len(order) - first > limit:
            return None
        return list(order[first:])

    def job_row(self, job_id: str) -> int | None:
        return self.job_by_id.get(job_id)

    def is_active(self, row: int) -> bool:
        return self.app_outcome[row] == PENDING and row not in self.deleted

    # -- changes at time t (the API's writes and simulated activity both come through here) ----

    def _touch(self, row: int, t: int, *, own: bool) -> None:
        """Record a change; `own=False` is a nested change: `changed_at` stays put."""
        if own:
            self.app_changed[row] = t
        self.app_log.touch(row, t)

    def _set_outcome(self, row: int, outcome: int, t: int, reason: int = NO_REASON) -> None:
        was_active = self.is_active(row)
        self.app_outcome[row] = outcome
        self.app_reason[row] = reason
        self.app_rejected[row] = t if outcome == DECLINED else 0
        self.active += self.is_active(row) - was_active

    def move_row(self, row: int, stage: int, t: int) -> None:
        self.app_stage[row] = stage
        self._touch(row, t, own=True)

    def hire_row(self, row: int, t: int) -> None:
        job = self.jobs[self.app_job[row]]
        if job.hired_stage is not None:
            self.app_stage[row] = job.hired_stage
        self._set_outcome(row, HIRED, t)
        self._touch(row, t, own=True)

    def decline_row(self, row: int, reason: int, t: int) -> None:
        self._set_outcome(row, DECLINED, t, reason)
        self._touch(row, t, own=True)

    def move_row_to_job(self, row: int, new_job: int, t: int) -> None:
        old = self.jobs[self.app_job[row]]
        old.members.remove(row)
        job = self.jobs[new_job]
        job.members.append(row)
        self.app_job[row] = new_job
        positions = job.active_positions()
        self.app_stage[row] = positions[0] if positions else NO_STAGE
        self._touch(row, t, own=True)

    def rename_candidate_of(self, row: int, t: int, first: str | None, last: str | None) -> None:
        self.candidates.rename(row, t, first, last)
        self._touch(row, t, own=False)

    def delete_row(self, row: int, t: int, *, may_restore: bool) -> None:
        was_active = self.is_active(row)
        self.deleted[row] = t
        self.active -= was_active
        self._touch(row, t, own=True)
        self.activity.schedule_deletion_fate(
            row, t, may_restore=may_restore, now_ms=self.world.now_ms
        )

    def restore_row(self, row: int, t: int) -> None:
        del self.deleted[row]
        self.active += self.is_active(row)
        self._touch(row, t, own=True)

    def purge_row(self, row: int) -> None:
        del self.deleted[row]
        self.jobs[self.app_job[row]].members.remove(row)
        self.app_log.remove(row)

    def rename_job_stage(self, job_row: int, pos: int, t: int, name: str | None) -> None:
        """Every application in the stage changes (nested), the job does not."""
        job = self.jobs[job_row]
        stage = job.stages[pos]
        if name is None:
            stage.renames += 1
        else:
            stage.base_name, stage.renames = name, 0
        stage_of = self.app_stage
        for row in job.members:
            if stage_of[row] == pos:
                self._touch(row, t, own=False)

    def retitle_job(self, job_row: int, t: int) -> None:
        """The job's own record changes; applications show the new name without surfacing."""
        job = self.jobs[job_row]
        job.name = job.name + " (m/f/d)" if not job.name.endswith(")") else job.name[:-8]
        job.changed_ms = t
        self.job_log.touch(job_row, t)

    def close_job(self, job_row: int, t: int) -> None:
        job = self.jobs[job_row]
        job.status = "CLOSED"
        self.open_jobs.remove(job_row)
        job.changed_ms = job.closed_ms = t
        self.job_log.touch(job_row, t)

    def add_application(self, job: Job, stage: int, candidate: Given, t: int) -> int:
        """A new row, pending in `stage` of `job`."""
        row = self.application_count
        self.app_job.append(job.row)
        self.app_stage.append(stage)
        self.app_outcome.append(PENDING)
        self.app_reason.append(NO_REASON)
        self.app_created.append(t)
        self.app_changed.append(t)
        self.app_rejected.append(0)
        self.candidates.add(row, candidate)
        job.members.append(row)
        self.active += 1
        self.app_log.touch(row, t)
        if self._created_order is not None:
            self._created_order.append(row)  # created now: still in creation order
        return row

    # -- public mutations (tests, drills, the API's write endpoints), at the world's time ------

    @_locked
    def create_application(
        self,
        job_id: str,
        first_name: str,
        last_name: str,
        email: str,
        phone: str | None,
        stage_id: str | None = None,
    ) -> int:
        """A new tracked application, as `POST /ats/jobs/{job_id}/applications` creates it."""
        if not self.has_applications:
            raise SimulationError(
                "This integration does not support applications.",
                "INTEGRATION.ACTION_NOT_AVAILABLE",
            )
        job = self._job_taking_applications(job_id)
        self._refuse_second_application(job, email)
        stage = self._first_stage(job, stage_id)
        candidate = (first_name, last_name, email.lower(), phone)
        return self.add_application(job, stage, candidate, self.world.now_ms)

    def _job_taking_applications(self, job_id: str) -> Job:
        job_row = self.job_row(job_id)
        if job_row is None or self.jobs[job_row].deleted_ms is not None:
            raise SimulationError(f"No job with id {job_id!r} in this integration.")
        job = self.jobs[job_row]
        if not job.accepts_applications:
            raise SimulationError(f"Job {job_id!r} is {job.status}.", "ATS.JOB_CLOSED")
        return job

    def _refuse_second_application(self, job: Job, email: str) -> None:
        for row in job.members:
            if self.candidates.contact(row)[0] == email.lower() and row not in self.deleted:
                raise SimulationError(
                    f"{email} already applied to this job.", "ATS.APPLICATION_ALREADY_EXISTS"
                )

    def _first_stage(self, job: Job, stage_id: str | None) -> int:
        """The stage a new application starts in: the one asked for, else the first active."""
        if stage_id is not None:
            where = self.stage_by_id.get(stage_id)
            if where is None or where[0] != job.row:
                raise SimulationError(f"Stage {stage_id!r} is not a stage of job {job.id!r}.")
            return where[1]
        positions = job.active_positions()
        return positions[0] if positions else NO_STAGE

    @_locked
    def set_stage(self, application_id: str, stage_id: str) -> None:
        """`PUT /ats/applications/{id}/stage`: stage ids are job-specific."""
        if not self.has_stages:
            raise SimulationError(
                "This integration does not support stages.", "INTEGRATION.ACTION_NOT_AVAILABLE"
            )
        row = self._require_application(application_id)
        where = self.stage_by_id.get(stage_id)
        if where is None or where[0] != self.app_job[row]:
            raise SimulationError(
                f"Stage {stage_id!r} is not a stage of the application's job; "
                "take stage ids from that job's `stages`."
            )
        self.move_row(row, where[1], self.world.now_ms)

    @_locked
    def hire(self, application_id: str) -> None:
        self.hire_row(self._require_application(application_id), self.world.now_ms)

    @_locked
    def decline(self, application_id: str, reason: str = catalog.REJECTION_REASONS[0]) -> None:
        if reason not in catalog.REJECTION_REASONS:
            raise SimulationError(
                f"Unknown rejection reason {reason!r}; use one of {catalog.REJECTION_REASONS}."
            )
        self.decline_row(
            self._require_application(application_id),
            catalog.REJECTION_REASONS.index(reason),
            self.world.now_ms,
        )

    @_locked
    def move_to_job(self, application_id: str, job_id: str) -> None:
        row = self._require_application(application_id)
        job_row = self.job_row(job_id)
        if job_row is None:
            raise SimulationError(f"No job with id {job_id!r} in this integration.")
        self.move_row_to_job(row, job_row, self.world.now_ms)

    @_locked
    def rename_candidate(
        self, application_id: str, first_name: str | None = None, last_name: str | None = None
    ) -> None:
        """A nested change: `updated_after` surfaces the application, `changed_at` stays."""
        row = self._require_application(application_id)
        self.rename_candidate_of(row, self.world.now_ms, first_name, last_name)

    @_locked
    def rename_stage(self, stage_id: str, name: str | None = None) -> None:
        """Rename a stage in the ATS: every application in it changes (nested), no job does."""
        where = self.stage_by_id.get(stage_id)
        if where is None:
            raise SimulationError(f"No stage with id {stage_id!r} in this integration.")
        self.rename_job_stage(where[0], where[1], self.world.now_ms, name)

    @_locked
    def delete_application(self, application_id: str) -> None:
        row = self._require_application(application_id)
        if row in self.deleted:
            raise SimulationError(f"Application {application_id!r} is already deleted.")
        self.delete_row(row, self.world.now_ms, may_restore=False)

    @_locked
    def restore_application(self, application_id: str) -> None:
        row = self._require_application(application_id)
        if row not in self.deleted:
            raise SimulationError(f"Application {application_id!r} is not deleted.")
        self.restore_row(row, self.world.now_ms)

    def _require_application(self, application_id: str) -> int:
        row = self.application_row(application_id)
        if row is None:
            raise SimulationError(f"No application with id {application_id!r} in this integration.")
        return row

    # -- imports: POST /ats/import-tracked-application and Kombo's next sync -------------------

    @property
    def supports_import(self) -> bool:
        return self.has_applications and self.tool in IMPORT_ID_TYPES

    @property
    def backlog(self) -> list[Untracked]:
        """Applications in the ATS that Kombo does not track, from their own stream."""
        if self._backlog is None:
            size = self._backlog_size if self.supports_import else 0
            rng = self._stream("backlog")
            self._backlog = draw_backlog(rng, self.jobs, size, self.world.start_ms)
        return self._backlog

    def untracked(self) -> list[Untracked]:
        """The backlog's applications not imported yet."""
        return [u for u in self.backlog if u.number not in self._imported_rows]

    @_locked
    def import_application(self, ids: dict[str, str], tracked_ms: int) -> int:
        """Track the ATS application `ids` names (fields as in `IMPORT_ID_TYPES`); its row.

        The row is reserved now, so its Kombo id is known, and listed at the next sync.
        """
        if self._tracked_row_for(ids) is not None:
            raise SimulationError(
                "Kombo already tracks this application.", "ATS.APPLICATION_ALREADY_EXISTS"
            )
        entry = next((u for u in self.backlog if _names(u.ids(self.jobs), ids)), None)
        if entry is None:
            raise SimulationError(f"No application in the {self.tool} account matches {ids}.")
        if entry.number in self._imported_rows:
            raise SimulationError(
                "This application is already tracked; its data arrives with the next sync.",
                "ATS.APPLICATION_ALREADY_EXISTS",
            )
        row = self.application_count
        for column, value in (
            (self.app_job, entry.job), (self.app_stage, entry.stage),
            (self.app_outcome, PENDING), (self.app_reason, NO_REASON),
            (self.app_created, entry.created_ms), (self.app_changed, tracked_ms),
            (self.app_rejected, 0),
        ):  # fmt: skip
            column.append(value)
        self.candidates.add(row, (entry.first_name, entry.last_name, entry.email(), None))
        self.app_log.reserve(row)
        self._created_order = None  # an old creation time: the index is rebuilt on next use
        self.imported[row] = entry
        self._imported_rows[entry.number] = row
        self._imported_by_remote[entry.remote_id] = row
        self._pending_imports.append(row)
        return row

    def _tracked_row_for(self, ids: dict[str, str]) -> int | None:
        """The listed row those ids name, if Kombo tracks it already."""
        remote = ids.get("application_id") or ids.get("application_remote_id")
        remote = remote or ids.get("placement_id")
        if remote is not None:
            row = self.application_row_by_remote_id(remote)
        else:
            candidate = ids.get("candidate_remote_id", "")
            row = int(candidate) - CANDIDATE_REMOTE_BASE if candidate.isdigit() else None
            if row is not None and (row in self.imported or not self.app_log.listed(row)):
                row = None
        if row is None:
            return None
        application_remote, candidate_remote = self.remote_ids_of(row)
        known = {
            "application_id": application_remote,
            "application_remote_id": application_remote,
            "placement_id": application_remote,
            "candidate_remote_id": candidate_remote,
            "job_remote_id": self.jobs[self.app_job[row]].remote_id,
        }
        return row if _names(known, ids) else None

    def sync_imports(self, t: int) -> int:
        """Kombo's sync after imports: each imported application is listed from `t` on."""
        pending, self._pending_imports = self._pending_imports, []
        for row in pending:
            self.jobs[self.app_job[row]].members.append(row)
            self.active += 1
            self._touch(row, t, own=True)
        return len(pending)


def _names(known: dict[str, str], ids: dict[str, str]) -> bool:
    """Whether every id the request gives is the application's."""
    return all(known.get(field) == value for field, value in ids.items())
