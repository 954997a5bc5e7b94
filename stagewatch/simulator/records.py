"""The records a simulated ATS keeps: jobs and stages, and the codes in the application columns.

Times are epoch milliseconds throughout: integers compare and store cheaply in `array`s.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stagewatch.simulator import catalog

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR
PURGE_AFTER_MS = 14 * MS_PER_DAY  # Kombo drops soft-deleted records about 14 days later

PENDING, HIRED, DECLINED = 0, 1, 2
OUTCOMES = ("PENDING", "HIRED", "DECLINED")
NO_STAGE = -1
NO_REASON = -1

APPLICATION_REMOTE_BASE = 100_000
CANDIDATE_REMOTE_BASE = 5_000_000
JOB_REMOTE_BASE = 1_000
STAGE_REMOTE_BASE = 40_000


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
