"""The data an integration starts with: jobs, stages and applications, drawn from seeded streams.

Each function draws from the stream it is given in a fixed order. That order is part of what a seed
promises: drawing one value more, fewer or earlier changes every world built from that seed.
"""

from __future__ import annotations

import itertools
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from stagewatch.simulator import catalog
from stagewatch.simulator.ids import IdCodec
from stagewatch.simulator.records import (
    DECLINED,
    HIRED,
    JOB_REMOTE_BASE,
    MS_PER_DAY,
    MS_PER_HOUR,
    NO_REASON,
    NO_STAGE,
    PENDING,
    PURGE_AFTER_MS,
    STAGE_REMOTE_BASE,
    Job,
    Stage,
)

HISTORY_MS = 30 * MS_PER_DAY  # initial applications last changed within this window before start
# Stage attributes of newer Kombo responses, drawn per job pipeline: how often the ATS leaves every
# stage's `status` null, sends null `custom_fields`, or fills them.
STATUSLESS_PIPELINE_SHARE = 0.15
NULL_STAGE_FIELDS_SHARE = 0.1
FILLED_STAGE_FIELDS_SHARE = 0.4


# -- jobs and stages -----------------------------------------------------------------------------


def build_jobs(
    rng: random.Random,
    count: int,
    start_ms: int,
    *,
    job_ids: IdCodec,
    stage_ids: IdCodec | None,
) -> list[Job]:
    """`count` jobs as they stand at `start_ms`; without `stage_ids` the ATS has no stages.

    Stage numbers run on from job to job, so no two stages of an integration share an id.
    """
    stage_numbers = itertools.count()
    return [
        _draw_job(rng, row, start_ms, job_ids, stage_ids, stage_numbers) for row in range(count)
    ]


def _draw_job(
    rng: random.Random,
    row: int,
    start_ms: int,
    job_ids: IdCodec,
    stage_ids: IdCodec | None,
    stage_numbers: Iterator[int],
) -> Job:
    title = rng.choice(catalog.JOB_TITLES)
    seniority = rng.choice(catalog.SENIORITIES)
    department = rng.choice(catalog.DEPARTMENTS)
    # The first job stays open, so every integration has somewhere to apply.
    status = "OPEN" if row == 0 else rng.choice(catalog.JOB_STATUSES)
    created = start_ms - rng.randrange(40 * MS_PER_DAY, 200 * MS_PER_DAY)
    changed = start_ms - rng.randrange(MS_PER_HOUR, 40 * MS_PER_DAY)
    deleted = changed if row > 0 and rng.random() < 0.02 else None
    stages = [] if stage_ids is None else _draw_pipeline(rng, stage_ids, stage_numbers)
    return Job(
        row=row,
        id=job_ids.encode(row),
        remote_id=str(JOB_REMOTE_BASE + row),
        name=f"{seniority} {title}".strip(),
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
        hired_stage=_hired_position(stages),
    )


def _draw_pipeline(
    rng: random.Random, stage_ids: IdCodec, stage_numbers: Iterator[int]
) -> list[Stage]:
    pipeline = rng.choice(catalog.PIPELINES)
    style = rng.random()
    inactive = rng.randrange(1, len(pipeline) - 1) if rng.random() < 0.2 else None
    stages = []
    for pos, name in enumerate(pipeline):
        number = next(stage_numbers)
        index, has_index = _stage_index(style, pos)
        stages.append(
            Stage(
                id=stage_ids.encode(number),
                remote_id=str(STAGE_REMOTE_BASE + number),
                base_name=name,
                index=index,
                has_index=has_index,
                active=pos != inactive,
            )
        )
    return stages


def _stage_index(style: float, pos: int) -> tuple[int | None, bool]:
    """`(index, has_index)` of the stage at `pos`, by how the job's ATS orders its pipeline."""
    if style < 0.1:
        return None, False  # ATS without ordering: key missing
    if style < 0.2:
        return None, True  # ... or sent as null
    if style < 0.3:
        return max(0, pos - 1), True  # first two stages tie at 0
    return pos, True


def _hired_position(stages: list[Stage]) -> int | None:
    """Where a hire lands, when the pipeline has a stage for it."""
    hired = [pos for pos, stage in enumerate(stages) if stage.base_name == catalog.HIRED_STAGE]
    return hired[-1] if hired else None


def describe_stages(rng: random.Random, jobs: list[Job]) -> None:
    """Each stage's `status` reporting and `custom_fields`, from a stream of their own: drawn
    from the build stream, they would change every world a seed gave before they existed."""
    for job in jobs:
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


def _stage_category(name: str) -> str:
    return next((kind for word, kind in catalog.STAGE_CATEGORIES if word in name), "other")


# -- applications --------------------------------------------------------------------------------


@dataclass(slots=True)
class Applications:
    """The application columns an integration starts with, indexed by row."""

    job: array
    stage: array
    outcome: array
    reason: array
    created: array
    changed: array
    rejected: array
    deleted: dict[int, int]  # row -> remote_deleted_at (ms), in row order
    active: int = 0  # pending and not deleted

    @classmethod
    def empty(cls, count: int) -> Applications:
        return cls(
            job=array("q", bytes(8 * count)),
            stage=array("b", bytes(count)),
            outcome=array("b", bytes(count)),
            reason=array("b", [NO_REASON]) * count,
            created=array("q", bytes(8 * count)),
            changed=array("q", bytes(8 * count)),
            rejected=array("q", bytes(8 * count)),
            deleted={},
        )


def build_applications(
    rng: random.Random, jobs: list[Job], count: int, start_ms: int
) -> Applications:
    """`count` applications to published jobs, last changed over the `HISTORY_MS` before
    `start_ms`; row order is change order. Adds each row to its job's `members`."""
    published = [job.row for job in jobs if job.deleted_ms is None and job.status != "DRAFT"]
    if count and not published:
        raise ValueError("an integration with applications needs at least one published job")
    applications = Applications.empty(count)
    _draw_applications(rng, jobs, published, applications, start_ms)
    return applications


def _draw_applications(
    rng: random.Random,
    jobs: list[Job],
    published: list[int],
    apps: Applications,
    start_ms: int,
) -> None:
    """One 64-bit draw per row decides all of it, in one loop over local names: a million rows
    must build in seconds."""
    count = len(apps.job)
    t0 = start_ms - HISTORY_MS
    purge_horizon = start_ms - PURGE_AFTER_MS
    max_age = 21 * MS_PER_DAY  # how long before its last change an application was created
    n_published, reasons = len(published), len(catalog.REJECTION_REASONS)
    job_of, stage_of, outcome_of, reason_of = apps.job, apps.stage, apps.outcome, apps.reason
    created_of, changed_of, rejected_of = apps.created, apps.changed, apps.rejected
    deleted = apps.deleted
    getrandbits = rng.getrandbits
    active = 0
    for i in range(count):
        b = getrandbits(64)
        job = jobs[published[b % n_published]]
        # Row order is change order: a fraction of a slot of jitter keeps it monotonic.
        t = t0 + ((i * 1024 + (b >> 54)) * HISTORY_MS) // (count * 1024)
        u = (b >> 16) & 0xFF  # of 256: 40 declined, 16 hired, 2 recently deleted, the rest pending
        n_stages = len(job.stages)
        drawn_stage = (b >> 48) % n_stages if n_stages else NO_STAGE
        if u < 40:
            outcome, stage = DECLINED, drawn_stage
            reason_of[i] = (b >> 56) % reasons
            rejected_of[i] = t
        elif u < 56:
            outcome, stage = HIRED, job.hired_stage
            if stage is None:
                stage = n_stages - 1 if n_stages else NO_STAGE
        else:
            outcome, stage = PENDING, drawn_stage
        job_of[i] = job.row
        stage_of[i] = stage
        outcome_of[i] = outcome
        created_of[i] = t - MS_PER_HOUR - ((b >> 24) & 0xFFFFFF) * max_age // 0x1000000
        changed_of[i] = t
        job.members.append(i)
        if 56 <= u < 58 and t > purge_horizon:
            deleted[i] = t
        elif outcome == PENDING:
            active += 1
    apps.active = active
