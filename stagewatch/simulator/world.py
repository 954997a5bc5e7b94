"""A deterministic Kombo world: integrations, jobs with stage pipelines, tracked applications.

State is kept in columns (`array`s) rather than objects so a million applications fit in tens of
megabytes and build in seconds; records are rendered to JSON per request (`render.py`). All
randomness comes from `random.Random` streams seeded by `(seed, integration, purpose)`, so the same
seed and the same calls give the same world, byte for byte.
"""

from __future__ import annotations

import functools
import heapq
import hmac
import itertools
import math
import random
import threading
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from stagewatch.simulator import catalog
from stagewatch.simulator.changes import ChangeLog
from stagewatch.simulator.ids import IdCodec, random_id

T = TypeVar("T")

SCENARIOS = (
    "normal",
    "no-applications",
    "no-outcomes",
    "no-stages",
    "setup-pending",
    "permission-missing",
    "no-jobs",
)
DEFAULT_SCENARIOS = SCENARIOS
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
# Limitation scenarios exist to show a behaviour, not to carry volume.
LIMITED_APPLICATIONS = 500
LIMITED_JOBS = 20

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR
PURGE_AFTER_MS = 14 * MS_PER_DAY  # Kombo drops soft-deleted records about 14 days later
HISTORY_MS = 30 * MS_PER_DAY  # initial applications last changed within this window before start

# Simulated activity rates (per simulated day).
EVENTS_PER_ACTIVE_APPLICATION_DAY = 0.2
STAGE_RENAMES_PER_JOB_DAY = 0.01
JOB_RETITLES_PER_JOB_DAY = 0.004
JOB_CLOSES_PER_JOB_DAY = 0.004
RESTORE_PROBABILITY = 0.25
# Stage attributes of newer Kombo responses, drawn per job pipeline: how often the ATS leaves every
# stage's `status` null, sends null `custom_fields`, or fills them.
STATUSLESS_PIPELINE_SHARE = 0.15
NULL_STAGE_FIELDS_SHARE = 0.1
FILLED_STAGE_FIELDS_SHARE = 0.4

PENDING, HIRED, DECLINED = 0, 1, 2
OUTCOMES = ("PENDING", "HIRED", "DECLINED")
NO_STAGE = -1
NO_REASON = -1

APPLICATION_REMOTE_BASE = 100_000
CANDIDATE_REMOTE_BASE = 5_000_000
JOB_REMOTE_BASE = 1_000
STAGE_REMOTE_BASE = 40_000

# Weighted application events: (kind, weight). Stage moves are mostly forward.
_EVENTS_WITH_STAGES = (
    ("forward", 51),
    ("skip", 8),
    ("back", 6),
    ("decline", 20),
    ("hire", 3),
    ("move_job", 3),
    ("rename_candidate", 5),
    ("delete", 4),
)
_EVENTS_WITHOUT_STAGES = (("decline", 40), ("hire", 15), ("rename_candidate", 25), ("delete", 20))


def _cumulative(events: Sequence[tuple[str, int]]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    kinds, weights = zip(*events, strict=True)
    return kinds, tuple(itertools.accumulate(weights))


_WEIGHTS_WITH_STAGES = _cumulative(_EVENTS_WITH_STAGES)
_WEIGHTS_WITHOUT_STAGES = _cumulative(_EVENTS_WITHOUT_STAGES)


def _stage_category(name: str) -> str:
    return next((kind for word, kind in catalog.STAGE_CATEGORIES if word in name), "other")


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """Public mutations hold the world lock: a served request never sees half a change."""

    @functools.wraps(method)
    def wrapper(self: Integration, *args: Any, **kwargs: Any) -> T:
        with self.world.lock:
            return method(self, *args, **kwargs)

    return wrapper


def ms_of(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("simulated times must be timezone-aware")
    return round(value.timestamp() * 1000)


def datetime_of(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class SimulationError(ValueError):
    """A request the simulated ATS refuses (unknown record, closed job, wrong stage...)."""

    def __init__(self, message: str, code: str = "PLATFORM.INPUT_INVALID") -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Stage:
    id: str
    remote_id: str
    base_name: str
    index: int | None
    has_index: bool  # some ATSs omit `index` entirely, others send null
    active: bool
    renames: int = 0
    reports_status: bool = True  # False: the ATS leaves `status` null
    custom_fields: dict[str, Any] | None = field(default_factory=dict)

    @property
    def name(self) -> str:
        if not self.renames:
            return self.base_name
        return self.base_name + catalog.RENAME_SUFFIX.format(n=self.renames + 1)

    @property
    def status(self) -> str | None:
        """As Kombo serves it: None where the ATS does not say; an INACTIVE stage can still hold
        applications."""
        if not self.reports_status:
            return None
        return "ACTIVE" if self.active else "INACTIVE"


@dataclass(slots=True)
class Job:
    row: int
    id: str
    remote_id: str
    name: str
    job_code: str
    status: str
    employment_type: str
    visibility: str
    department: str
    city: tuple[str, str, str]
    created_ms: int
    changed_ms: int
    closed_ms: int | None
    deleted_ms: int | None
    stages: list[Stage]
    hired_stage: int | None
    members: array = field(default_factory=lambda: array("q"))

    @property
    def accepts_applications(self) -> bool:
        return self.deleted_ms is None and self.status == "OPEN"

    def active_positions(self) -> list[int]:
        return [p for p, s in enumerate(self.stages) if s.active]


class Integration:
    """One connected ATS: its jobs and the applications created through Kombo for them."""

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
        seed = world.seed
        self._rng = random.Random(f"stagewatch-sim:{seed}:{number}:events")
        ids_rng = random.Random(f"stagewatch-sim:{seed}:{number}:ids")
        self.job_ids = IdCodec(ids_rng)
        self.stage_ids = IdCodec(ids_rng)
        self.application_ids = IdCodec(ids_rng)
        self.candidate_ids = IdCodec(ids_rng)
        self.deleted: dict[int, int] = {}  # application row -> remote_deleted_at (ms)
        self.candidate_changed: dict[int, int] = {}  # row -> candidate changed_at, once renamed
        self.custom_candidates: dict[int, tuple[str, str, str, str | None]] = {}
        self._fates: list[tuple[int, int, str, int, int]] = []
        self._schedule_seq = 0
        self.stage_by_id: dict[str, tuple[int, int]] = {}
        build_rng = random.Random(f"stagewatch-sim:{seed}:{number}:build")
        self.jobs = self._build_jobs(build_rng, jobs)
        self._describe_stages(random.Random(f"stagewatch-sim:{seed}:{number}:stage-status"))
        self.job_by_id = {job.id: job.row for job in self.jobs}
        self.job_log = ChangeLog([job.changed_ms for job in self.jobs])
        self._open_jobs = [job.row for job in self.jobs if job.accepts_applications]
        self._build_applications(build_rng, applications if self.has_applications else 0)

    # -- building ---------------------------------------------------------------------------

    def _build_jobs(self, rng: random.Random, count: int) -> list[Job]:
        start = self.world.start_ms
        jobs: list[Job] = []
        stage_number = 0
        for row in range(count):
            title = rng.choice(catalog.JOB_TITLES)
            seniority = rng.choice(catalog.SENIORITIES)
            name = f"{seniority} {title}".strip()
            department = rng.choice(catalog.DEPARTMENTS)
            status = "OPEN" if row == 0 else rng.choice(catalog.JOB_STATUSES)
            created = start - rng.randrange(40 * MS_PER_DAY, 200 * MS_PER_DAY)
            changed = start - rng.randrange(MS_PER_HOUR, 40 * MS_PER_DAY)
            deleted = None
            if row > 0 and rng.random() < 0.02:
                deleted = changed
            stages: list[Stage] = []
            hired_stage = None
            if self.has_stages:
                pipeline = rng.choice(catalog.PIPELINES)
                style = rng.random()
                inactive = rng.randrange(1, len(pipeline) - 1) if rng.random() < 0.2 else None
                for pos, stage_name in enumerate(pipeline):
                    if style < 0.1:
                        index, has_index = None, False  # ATS without ordering: key missing
                    elif style < 0.2:
                        index, has_index = None, True  # ... or sent as null
                    elif style < 0.3:
                        index, has_index = max(0, pos - 1), True  # first two stages tie at 0
                    else:
                        index, has_index = pos, True
                    stages.append(
                        Stage(
                            id=self.stage_ids.encode(stage_number),
                            remote_id=str(STAGE_REMOTE_BASE + stage_number),
                            base_name=stage_name,
                            index=index,
                            has_index=has_index,
                            active=pos != inactive,
                        )
                    )
                    self.stage_by_id[stages[-1].id] = (row, pos)
                    if stage_name == catalog.HIRED_STAGE:
                        hired_stage = pos
                    stage_number += 1
            jobs.append(
                Job(
                    row=row,
                    id=self.job_ids.encode(row),
                    remote_id=str(JOB_REMOTE_BASE + row),
                    name=name,
                    job_code=f"{department[:3].upper()}-{2025 + row % 2}-{row:04d}",
                    status=status,
                    employment_type=rng.choice(catalog.EMPLOYMENT_TYPES),
                    visibility=rng.choice(catalog.VISIBILITIES),
                    department=department,
                    city=rng.choice(catalog.CITIES),
                    created_ms=created,
                    changed_ms=changed,
                    closed_ms=changed if status in ("CLOSED", "ARCHIVED") else None,
                    deleted_ms=deleted,
                    stages=stages,
                    hired_stage=hired_stage,
                )
            )
        return jobs

    def _describe_stages(self, rng: random.Random) -> None:
        """Each stage's `status` reporting and `custom_fields`, from a stream of their own: drawn
        from the build stream, they would change every world a seed gave before they existed."""
        for job in self.jobs:
            reports_status = rng.random() >= STATUSLESS_PIPELINE_SHARE
            fields_habit = rng.random()
            for stage in job.stages:
                stage.reports_status = reports_status
                if fields_habit < NULL_STAGE_FIELDS_SHARE:
                    stage.custom_fields = None
                elif fields_habit < NULL_STAGE_FIELDS_SHARE + FILLED_STAGE_FIELDS_SHARE:
                    stage.custom_fields = {
                        "category": _stage_category(stage.base_name),
                        "target_days": rng.randrange(1, 15),
                    }

    def _build_applications(self, rng: random.Random, count: int) -> None:
        start = self.world.start_ms
        t0 = start - HISTORY_MS
        open_jobs = [
            job.row for job in self.jobs if job.deleted_ms is None and job.status != "DRAFT"
        ]
        if count and not open_jobs:
            raise ValueError("an integration with applications needs at least one published job")
        jobs = self.jobs
        n_open = len(open_jobs)
        reasons = len(catalog.REJECTION_REASONS)
        job_of = array("q", bytes(8 * count))
        stage_of = array("b", bytes(count))
        outcome_of = array("b", bytes(count))
        reason_of = array("b", bytes(count))
        created_of = array("q", bytes(8 * count))
        changed_of = array("q", bytes(8 * count))
        rejected_of = array("q", bytes(8 * count))
        deleted = self.deleted
        purge_horizon = start - PURGE_AFTER_MS
        getrandbits = rng.getrandbits
        max_age = 21 * MS_PER_DAY
        active = 0
        for i in range(count):
            b = getrandbits(64)
            job = jobs[open_jobs[b % n_open]]
            # Row order is change order: a fraction of a slot of jitter keeps it monotonic.
            t = t0 + ((i * 1024 + (b >> 54)) * HISTORY_MS) // (count * 1024)
            u = (b >> 16) & 0xFF
            n_stages = len(job.stages)
            if u < 40:
                outcome = DECLINED
                reason_of[i] = (b >> 56) % reasons
                rejected_of[i] = t
                stage = (b >> 48) % n_stages if n_stages else NO_STAGE
            elif u < 56:
                outcome = HIRED
                reason_of[i] = NO_REASON
                if job.hired_stage is not None:
                    stage = job.hired_stage
                else:
                    stage = n_stages - 1 if n_stages else NO_STAGE
            else:
                outcome = PENDING
                reason_of[i] = NO_REASON
                stage = (b >> 48) % n_stages if n_stages else NO_STAGE
            job_of[i] = job.row
            stage_of[i] = stage
            outcome_of[i] = outcome
            created_of[i] = t - MS_PER_HOUR - ((b >> 24) & 0xFFFFFF) * max_age // 0x1000000
            changed_of[i] = t
            job.members.append(i)
            if 56 <= u < 58 and t > purge_horizon:
                deleted[i] = t
                self._schedule_deletion_fate(i, t, may_restore=True)
            elif outcome == PENDING:
                active += 1
        self.app_job = job_of
        self.app_stage = stage_of
        self.app_outcome = outcome_of
        self.app_reason = reason_of
        self.app_created = created_of
        self.app_changed = changed_of
        self.app_rejected = rejected_of
        self.app_renames = array("B", bytes(count))
        self.app_log = ChangeLog(array("q", changed_of))
        self.active = active
        self._created_order: array | None = None  # rows by creation time, built on first use

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
        row = int(remote_id) - APPLICATION_REMOTE_BASE
        return row if self.app_log.listed(row) else None

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

    def _require_application(self, application_id: str) -> int:
        row = self.application_row(application_id)
        if row is None:
            raise SimulationError(f"No application with id {application_id!r} in this integration.")
        return row

    # -- changes (all at the world's current time) -----------------------------------------

    def _touch(self, row: int, t: int, *, own: bool) -> None:
        """Record a change; `own=False` is a nested change: `changed_at` stays put."""
        if own:
            self.app_changed[row] = t
        self.app_log.touch(row, t)

    def _is_active(self, row: int) -> bool:
        return self.app_outcome[row] == PENDING and row not in self.deleted

    def _set_outcome(self, row: int, outcome: int, t: int, reason: int = NO_REASON) -> None:
        was_active = self._is_active(row)
        self.app_outcome[row] = outcome
        self.app_reason[row] = reason
        self.app_rejected[row] = t if outcome == DECLINED else 0
        self.active += self._is_active(row) - was_active

    def _move(self, row: int, stage: int, t: int) -> None:
        self.app_stage[row] = stage
        self._touch(row, t, own=True)

    def _hire(self, row: int, t: int) -> None:
        job = self.jobs[self.app_job[row]]
        if job.hired_stage is not None:
            self.app_stage[row] = job.hired_stage
        self._set_outcome(row, HIRED, t)
        self._touch(row, t, own=True)

    def _decline(self, row: int, reason: int, t: int) -> None:
        self._set_outcome(row, DECLINED, t, reason)
        self._touch(row, t, own=True)

    def _move_job(self, row: int, new_job: int, t: int) -> None:
        old = self.jobs[self.app_job[row]]
        old.members.remove(row)
        job = self.jobs[new_job]
        job.members.append(row)
        self.app_job[row] = new_job
        positions = job.active_positions()
        self.app_stage[row] = positions[0] if positions else NO_STAGE
        self._touch(row, t, own=True)

    def _rename_candidate(self, row: int, t: int, first: str | None, last: str | None) -> None:
        if first is None and last is None and row not in self.custom_candidates:
            self.app_renames[row] = min(self.app_renames[row] + 1, 255)
        else:
            current_first, current_last = self.candidate_name(row)
            if first is None and last is None:  # a created candidate marries: double-barrelled
                last = f"{current_last}-{catalog.LAST_NAMES[t % len(catalog.LAST_NAMES)]}"
            email, phone = self.candidate_contact(row)
            self.custom_candidates[row] = (
                first or current_first,
                last or current_last,
                email,
                phone,
            )
        self.candidate_changed[row] = t
        self._touch(row, t, own=False)

    def _delete(self, row: int, t: int, *, may_restore: bool) -> None:
        was_active = self._is_active(row)
        self.deleted[row] = t
        self.active -= was_active
        self._touch(row, t, own=True)
        self._schedule_deletion_fate(row, t, may_restore=may_restore)

    def _restore(self, row: int, t: int) -> None:
        del self.deleted[row]
        self.active += self._is_active(row)
        self._touch(row, t, own=True)

    def _purge(self, row: int) -> None:
        del self.deleted[row]
        self.jobs[self.app_job[row]].members.remove(row)
        self.app_log.remove(row)

    def _rename_stage(self, job_row: int, pos: int, t: int, name: str | None) -> None:
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

    def _schedule_event(self, t: int, kind: str, row: int, tag: int) -> None:
        self._schedule_seq += 1
        heapq.heappush(self._fates, (t, self._schedule_seq, kind, row, tag))

    def _schedule_deletion_fate(self, row: int, deleted_ms: int, *, may_restore: bool) -> None:
        """Every deletion is purged after 14 days unless a (random) restore comes first."""
        self._schedule_event(deleted_ms + PURGE_AFTER_MS, "purge", row, deleted_ms)
        if may_restore and self._rng.random() < RESTORE_PROBABILITY:
            restore_at = deleted_ms + self._rng.randrange(2 * MS_PER_HOUR, 7 * MS_PER_DAY)
            if restore_at > self.world.now_ms:  # a restore "before the start" never happened
                self._schedule_event(restore_at, "restore", row, deleted_ms)

    # -- public mutations (tests, drills, the API's write endpoints) -------------------------

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
        job_row = self.job_row(job_id)
        if job_row is None or self.jobs[job_row].deleted_ms is not None:
            raise SimulationError(f"No job with id {job_id!r} in this integration.")
        job = self.jobs[job_row]
        if not job.accepts_applications:
            raise SimulationError(f"Job {job_id!r} is {job.status}.", "ATS.JOB_CLOSED")
        for row in job.members:
            if self.candidate_contact(row)[0] == email.lower() and row not in self.deleted:
                raise SimulationError(
                    f"{email} already applied to this job.", "ATS.APPLICATION_ALREADY_EXISTS"
                )
        if stage_id is not None:
            where = self.stage_by_id.get(stage_id)
            if where is None or where[0] != job_row:
                raise SimulationError(f"Stage {stage_id!r} is not a stage of job {job_id!r}.")
            stage = where[1]
        else:
            positions = job.active_positions()
            stage = positions[0] if positions else NO_STAGE
        t = self.world.now_ms
        row = self.application_count
        self.app_job.append(job_row)
        self.app_stage.append(stage)
        self.app_outcome.append(PENDING)
        self.app_reason.append(NO_REASON)
        self.app_created.append(t)
        self.app_changed.append(t)
        self.app_rejected.append(0)
        self.app_renames.append(0)
        self.custom_candidates[row] = (first_name, last_name, email.lower(), phone)
        job.members.append(row)
        self.active += 1
        self.app_log.touch(row, t)
        if self._created_order is not None:
            self._created_order.append(row)  # created now: still in creation order
        return row

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
        self._move(row, where[1], self.world.now_ms)

    @_locked
    def hire(self, application_id: str) -> None:
        self._hire(self._require_application(application_id), self.world.now_ms)

    @_locked
    def decline(self, application_id: str, reason: str = catalog.REJECTION_REASONS[0]) -> None:
        if reason not in catalog.REJECTION_REASONS:
            raise SimulationError(
                f"Unknown rejection reason {reason!r}; use one of {catalog.REJECTION_REASONS}."
            )
        self._decline(
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
        self._move_job(row, job_row, self.world.now_ms)

    @_locked
    def rename_candidate(
        self, application_id: str, first_name: str | None = None, last_name: str | None = None
    ) -> None:
        """A nested change: `updated_after` surfaces the application, `changed_at` stays."""
        row = self._require_application(application_id)
        self._rename_candidate(row, self.world.now_ms, first_name, last_name)

    @_locked
    def rename_stage(self, stage_id: str, name: str | None = None) -> None:
        """Rename a stage in the ATS: every application in it changes (nested), no job does."""
        where = self.stage_by_id.get(stage_id)
        if where is None:
            raise SimulationError(f"No stage with id {stage_id!r} in this integration.")
        self._rename_stage(where[0], where[1], self.world.now_ms, name)

    @_locked
    def delete_application(self, application_id: str) -> None:
        row = self._require_application(application_id)
        if row in self.deleted:
            raise SimulationError(f"Application {application_id!r} is already deleted.")
        self._delete(row, self.world.now_ms, may_restore=False)

    @_locked
    def restore_application(self, application_id: str) -> None:
        row = self._require_application(application_id)
        if row not in self.deleted:
            raise SimulationError(f"Application {application_id!r} is not deleted.")
        self._restore(row, self.world.now_ms)

    # -- candidates -------------------------------------------------------------------------

    def candidate_name(self, row: int) -> tuple[str, str]:
        custom = self.custom_candidates.get(row)
        if custom is not None:
            return custom[0], custom[1]
        h = self._candidate_hash(row)
        first = catalog.FIRST_NAMES[h % len(catalog.FIRST_NAMES)]
        last = catalog.LAST_NAMES[((h >> 16) + 7 * self.app_renames[row]) % len(catalog.LAST_NAMES)]
        return first, last

    def candidate_contact(self, row: int) -> tuple[str, str | None]:
        """(e-mail, phone): present so the product can prove it drops contact data."""
        custom = self.custom_candidates.get(row)
        if custom is not None:
            return custom[2], custom[3]
        h = self._candidate_hash(row)
        first = catalog.FIRST_NAMES[h % len(catalog.FIRST_NAMES)]
        last = catalog.LAST_NAMES[(h >> 16) % len(catalog.LAST_NAMES)]
        local = f"{first}.{last}".translate(catalog.ASCII_FOLD).lower()
        email = f"{local}.{CANDIDATE_REMOTE_BASE + row}@example.com"
        phone = f"+49 30 {(h >> 32) % 10_000_000:07d}"
        return email, phone

    def _candidate_hash(self, row: int) -> int:
        salt = (self.world.seed * 0x2545F491 + self.number) * 0x9E3779B1
        return ((row + salt) * 0xBF58476D1CE4E5B9) >> 13 & 0xFFFFFFFFFFFF

    # -- simulated time ---------------------------------------------------------------------

    def step(self, start_ms: int, end_ms: int) -> int:
        """Play one slice of simulated time; returns the number of changes."""
        rng = self._rng
        span = end_ms - start_ms
        events: list[tuple[int, int, str, int, int]] = []
        while self._fates and self._fates[0][0] <= end_ms:
            events.append(heapq.heappop(self._fates))
        if self.application_count:
            events.extend(
                (t, 0, "activity", -1, 0)
                for t in self._event_times(
                    rng, EVENTS_PER_ACTIVE_APPLICATION_DAY * self.active, start_ms, span
                )
            )
        live_jobs = [job.row for job in self.jobs if job.deleted_ms is None]
        if live_jobs:
            for kind, rate in (
                ("rename_stage", STAGE_RENAMES_PER_JOB_DAY),
                ("retitle_job", JOB_RETITLES_PER_JOB_DAY),
                ("close_job", JOB_CLOSES_PER_JOB_DAY),
            ):
                events.extend(
                    (t, 0, kind, rng.choice(live_jobs), 0)
                    for t in self._event_times(rng, rate * len(live_jobs), start_ms, span)
                )
        events.sort(key=lambda e: (e[0], e[1]))
        changes = 0
        for t, _, kind, row, tag in events:
            changes += self._apply(rng, kind, row, tag, t)
        return changes

    @staticmethod
    def _event_times(rng: random.Random, per_day: float, start_ms: int, span: int) -> list[int]:
        expected = per_day * span / MS_PER_DAY
        count = int(expected) + (rng.random() < expected - int(expected))
        return sorted(start_ms + 1 + rng.randrange(span) for _ in range(count))

    def _apply(self, rng: random.Random, kind: str, row: int, tag: int, t: int) -> int:
        if kind == "purge":
            if self.deleted.get(row) == tag:
                self._purge(row)
                return 1
            return 0
        if kind == "restore":
            if self.deleted.get(row) == tag:
                self._restore(row, t)
                return 1
            return 0
        if kind == "activity":
            return self._activity(rng, t)
        job = self.jobs[row]
        if kind == "rename_stage":
            if not job.stages:
                return 0
            self._rename_stage(row, rng.randrange(len(job.stages)), t, None)
        elif kind == "retitle_job":
            # The job's own record changes; applications show the new name without surfacing.
            job.name = job.name + " (m/f/d)" if not job.name.endswith(")") else job.name[:-8]
            job.changed_ms = t
            self.job_log.touch(row, t)
        elif kind == "close_job":
            if job.status != "OPEN" or row == 0:
                return 0
            job.status = "CLOSED"
            self._open_jobs.remove(row)
            job.changed_ms = job.closed_ms = t
            self.job_log.touch(row, t)
        return 1

    def _activity(self, rng: random.Random, t: int) -> int:
        n = self.application_count
        for _ in range(8):
            row = rng.randrange(n)
            if self.app_log.listed(row) and self._is_active(row):
                break
        else:
            return 0
        kinds, cum = _WEIGHTS_WITH_STAGES if self.has_stages else _WEIGHTS_WITHOUT_STAGES
        pick = rng.randrange(cum[-1])
        kind = next(k for k, c in zip(kinds, cum, strict=True) if pick < c)
        job = self.jobs[self.app_job[row]]
        positions = job.active_positions()
        here = self.app_stage[row]
        later = [p for p in positions if p > here]
        if kind == "back":
            earlier = [p for p in positions if p < here]
            if earlier:
                self._move(row, earlier[-1], t)
                return 1
            kind = "forward"
        if kind == "skip" and len(later) >= 2:
            self._move(row, later[1], t)
        elif kind in ("forward", "skip"):
            if later and later[0] != job.hired_stage:
                self._move(row, later[0], t)
            else:
                self._hire(row, t)
        elif kind == "hire":
            self._hire(row, t)
        elif kind == "decline":
            self._decline(row, rng.randrange(len(catalog.REJECTION_REASONS)), t)
        elif kind == "move_job":
            target = rng.choice(self._open_jobs)
            if target == job.row:
                return 0
            self._move_job(row, target, t)
        elif kind == "rename_candidate":
            self._rename_candidate(row, t, None, None)
        elif kind == "delete":
            self._delete(row, t, may_restore=True)
        return 1


class World:
    """Every integration behind one API key, and the simulated clock they share."""

    def __init__(
        self,
        seed: int = 1,
        applications: int = 2_000,
        jobs: int = 50,
        api_key: str = "sk_test",
        scenarios: Sequence[str] = DEFAULT_SCENARIOS,
        start: datetime = DEFAULT_START,
    ) -> None:
        unknown = [s for s in scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
        if applications < 0 or jobs < 0:
            raise ValueError("applications and jobs must be >= 0")
        if applications and not jobs:
            raise ValueError("applications need at least one job")
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.seed = seed
        self._api_key = api_key
        self.start_ms = ms_of(start)
        self.now_ms = self.start_ms
        self.lock = threading.RLock()
        self._id_rng = random.Random(f"stagewatch-sim:{seed}:integration-ids")
        self.environment_id = random_id(self._id_rng)
        self._sizes = (applications, jobs)
        self._integrations: dict[str, Integration] = {}
        self._created = 0  # integrations ever created: numbers (and rng streams) are never reused
        self._listeners: list[Callable[[str, Integration], None]] = []
        for scenario in scenarios:
            self._create_integration(scenario)

    def _create_integration(self, scenario: str) -> Integration:
        applications, jobs = self._sizes
        integration_id = f"{catalog.SCENARIO_TOOLS[scenario]}:{random_id(self._id_rng)}"
        if scenario == "normal":
            size = (applications, jobs)
        elif scenario in ("setup-pending", "permission-missing"):
            size = (0, 0)  # every read fails before data would matter
        else:
            size = (min(applications, LIMITED_APPLICATIONS), min(jobs, LIMITED_JOBS))
        if size[0] and not size[1]:
            size = (size[0], 1)
        integ = Integration(
            self, self._created, integration_id, scenario, applications=size[0], jobs=size[1]
        )
        self._created += 1
        self._integrations[integration_id] = integ
        return integ

    def __repr__(self) -> str:
        return (
            f"World(seed={self.seed}, integrations={len(self._integrations)}, "
            f"now={self.now.isoformat()})"
        )

    @property
    def integrations(self) -> dict[str, str]:
        """`{integration_id: scenario}` in creation order."""
        return {i: integ.scenario for i, integ in self._integrations.items()}

    @property
    def normal_integration_id(self) -> str:
        for integration_id, integ in self._integrations.items():
            if integ.scenario == "normal":
                return integration_id
        raise LookupError("this world has no integration with scenario 'normal'")

    def integration_for(self, scenario: str) -> str:
        """The first integration id serving `scenario`."""
        for integration_id, integ in self._integrations.items():
            if integ.scenario == scenario:
                return integration_id
        raise LookupError(f"this world has no integration with scenario {scenario!r}")

    def integration(self, integration_id: str) -> Integration:
        try:
            return self._integrations[integration_id]
        except KeyError:
            raise LookupError(f"no integration {integration_id!r} in this world") from None

    def find_integration(self, integration_id: str) -> Integration | None:
        return self._integrations.get(integration_id)

    def accepts_key(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._api_key.encode())

    @property
    def now(self) -> datetime:
        return datetime_of(self.now_ms)

    def advance(self, hours: float) -> int:
        """Move simulated time forward; applications move, get decided, deleted, purged...

        Returns the number of changes. Time moves in slices of at most an hour, so events spread
        over the whole span.
        """
        if not isinstance(hours, int | float) or not math.isfinite(hours) or hours < 0:
            raise ValueError(f"hours must be a finite number >= 0, got {hours!r}")
        end = self.now_ms + round(hours * MS_PER_HOUR)
        changes = 0
        changed: dict[str, Integration] = {}
        with self.lock:
            while self.now_ms < end:
                step_end = min(end, self.now_ms + MS_PER_HOUR)
                for integ in self._integrations.values():
                    step_changes = integ.step(self.now_ms, step_end)
                    if step_changes:
                        changes += step_changes
                        changed[integ.id] = integ
                self.now_ms = step_end
        for integ in changed.values():
            self._notify("changed", integ)
        return changes

    # -- integrations joining and leaving (the simulator's webhooks follow these) ------------

    def add_listener(self, listener: Callable[[str, Integration], None]) -> None:
        """Call `listener(kind, integration)` after an integration is `created`, `deleted`, or
        `changed` by `advance`; outside the world lock, so it may read the integration."""
        self._listeners.append(listener)

    def _notify(self, kind: str, integ: Integration) -> None:
        for listener in self._listeners:
            listener(kind, integ)

    def add_integration(self, scenario: str = "normal") -> str:
        """Connect one more integration; its id and data follow from the seed and the calls so far."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; choose from {list(SCENARIOS)}")
        with self.lock:
            integ = self._create_integration(scenario)
        self._notify("created", integ)
        return integ.id

    def remove_integration(self, integration_id: str) -> None:
        """Disconnect an integration: from now on Kombo's API no longer knows its id."""
        with self.lock:
            integ = self._integrations.pop(integration_id, None)
        if integ is None:
            raise LookupError(f"no integration {integration_id!r} in this world")
        self._notify("deleted", integ)


def scenarios_with(normal: int = 1) -> tuple[str, ...]:
    """The default set of scenarios with `normal` normal integrations first."""
    if normal < 0:
        raise ValueError("normal must be >= 0")
    return ("normal",) * normal + tuple(s for s in DEFAULT_SCENARIOS if s != "normal")
