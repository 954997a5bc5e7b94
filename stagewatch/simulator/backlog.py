"""Applications the ATS holds that Kombo does not track: what `import-tracked-application` finds.

A customer who sent candidates before connecting Kombo has such applications. The backlog is drawn
from its own seeded stream when first asked for, so worlds that never import build and evolve
exactly as before. Its remote ids live in their own ranges, so no tracked row ever shares one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stagewatch.simulator import catalog
from stagewatch.simulator.records import MS_PER_DAY, NO_STAGE, Job

# tool -> id_type -> the id fields it requires: Kombo's PostAtsImportTrackedApplicationRequestBody.
IMPORT_ID_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "erecruiter": {
        "application_and_job_remote_ids": ("application_remote_id", "job_remote_id"),
        "application_and_candidate_remote_ids": ("candidate_remote_id", "application_remote_id"),
    },
    "successfactors": {"application_remote_id": ("application_remote_id",)},
    "recruitee": {"placement_id": ("placement_id",)},
    "greenhouse": {"application_id": ("application_id",)},
    # Not in the spec snapshot (2026-05-05); Kombo's SDK 1.4.0, generated from the live API, has it.
    "greenhousev3": {"application_id": ("application_id",)},
    "onlyfy": {"application_id": ("application_id",)},
    "smartrecruiters": {"candidate_and_job_remote_ids": ("candidate_remote_id", "job_remote_id")},
}
BACKLOG_APPLICATION_REMOTE_BASE = 900_000_000
BACKLOG_CANDIDATE_REMOTE_BASE = 950_000_000
BACKLOG_SHARE = 20  # one untracked application per this many tracked ones
MIN_BACKLOG = 10
MAX_BACKLOG = 500
# How long before the world's start the untracked applications were created.
BACKLOG_AGE_MS = (30 * MS_PER_DAY, 200 * MS_PER_DAY)


@dataclass(slots=True)
class Untracked:
    """One application in the ATS that Kombo does not track (yet)."""

    number: int
    job: int  # job row
    stage: int  # position in the job's stages, or NO_STAGE
    created_ms: int
    first_name: str
    last_name: str

    @property
    def remote_id(self) -> str:
        return str(BACKLOG_APPLICATION_REMOTE_BASE + self.number)

    @property
    def candidate_remote_id(self) -> str:
        return str(BACKLOG_CANDIDATE_REMOTE_BASE + self.number)

    def email(self) -> str:
        local = f"{self.first_name}.{self.last_name}".translate(catalog.ASCII_FOLD).lower()
        return f"{local}.{self.candidate_remote_id}@example.com"

    def ids(self, jobs: list[Job]) -> dict[str, str]:
        """Every id field any ATS's shape may name, as this application has them."""
        return {
            "application_id": self.remote_id,
            "application_remote_id": self.remote_id,
            "placement_id": self.remote_id,
            "candidate_remote_id": self.candidate_remote_id,
            "job_remote_id": jobs[self.job].remote_id,
        }


def backlog_size(tracked: int) -> int:
    return 0 if not tracked else max(MIN_BACKLOG, min(MAX_BACKLOG, tracked // BACKLOG_SHARE))


def draw_backlog(rng: random.Random, jobs: list[Job], count: int, start_ms: int) -> list[Untracked]:
    """`count` untracked applications to published jobs, each in an active stage."""
    published = [job for job in jobs if job.deleted_ms is None and job.status != "DRAFT"]
    if not published:
        return []
    backlog = []
    for number in range(count):
        job = rng.choice(published)
        positions = job.active_positions()
        stage = rng.choice(positions) if positions else NO_STAGE
        created = start_ms - rng.randrange(*BACKLOG_AGE_MS)
        first = rng.choice(catalog.FIRST_NAMES)
        last = rng.choice(catalog.LAST_NAMES)
        backlog.append(Untracked(number, job.row, stage, created, first, last))
    return backlog
