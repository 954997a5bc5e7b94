"""An integration over simulated time: the events each slice brings, and the fates of deletions.

Recruiters move, hire, decline and delete applications; deletions are restored or purged; stages
are renamed, jobs retitled and closed.

Events come from the integration's own `events` stream, drawn in a fixed order slice by slice, so
the same seed and the same calls replay the same history.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stagewatch.simulator import catalog
from stagewatch.simulator.records import MS_PER_DAY, MS_PER_HOUR, PURGE_AFTER_MS

if TYPE_CHECKING:
    from stagewatch.simulator.integration import Integration

# Simulated activity rates (per simulated day).
EVENTS_PER_ACTIVE_APPLICATION_DAY = 0.2
STAGE_RENAMES_PER_JOB_DAY = 0.01
JOB_RETITLES_PER_JOB_DAY = 0.004
JOB_CLOSES_PER_JOB_DAY = 0.004
RESTORE_PROBABILITY = 0.25
# Tries at finding an active application for an activity event before the event is dropped.
ROW_TRIES = 8

_JOB_EVENT_RATES = (
    ("rename_stage", STAGE_RENAMES_PER_JOB_DAY),
    ("retitle_job", JOB_RETITLES_PER_JOB_DAY),
    ("close_job", JOB_CLOSES_PER_JOB_DAY),
)
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

# (time, order, kind, row, tag). Scheduled fates carry their scheduling order so that fates due at
# the same time keep it; events drawn for a slice carry 0. `tag` ties a fate to one deletion.
Event = tuple[int, int, str, int, int]


def _cumulative(events: Sequence[tuple[str, int]]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    kinds, weights = zip(*events, strict=True)
    return kinds, tuple(itertools.accumulate(weights))


_WEIGHTS_WITH_STAGES = _cumulative(_EVENTS_WITH_STAGES)
_WEIGHTS_WITHOUT_STAGES = _cumulative(_EVENTS_WITHOUT_STAGES)


def _event_times(rng: random.Random, per_day: float, start_ms: int, span: int) -> list[int]:
    """When this slice's events of one kind happen: as many as the rate expects, the fraction
    decided by a draw."""
    expected = per_day * span / MS_PER_DAY
    count = int(expected) + (rng.random() < expected - int(expected))
    return sorted(start_ms + 1 + rng.randrange(span) for _ in range(count))


class Activity:
    """One integration's future: the fates scheduled for its deletions and the events each slice
    of time draws, carried out through the integration's changes."""

    def __init__(self, integ: Integration, rng: random.Random) -> None:
        self.integ = integ
        self.rng = rng
        self._fates: list[Event] = []  # a heap
        self._scheduled = 0

    # -- fates ------------------------------------------------------------------------------

    def schedule_deletion_fate(
        self, row: int, deleted_ms: int, *, may_restore: bool, now_ms: int
    ) -> None:
        """Every deletion is purged after 14 days unless a (random) restore comes first."""
        self._schedule(deleted_ms + PURGE_AFTER_MS, "purge", row, deleted_ms)
        if may_restore and self.rng.random() < RESTORE_PROBABILITY:
            restore_at = deleted_ms + self.rng.randrange(2 * MS_PER_HOUR, 7 * MS_PER_DAY)
            if restore_at > now_ms:  # a restore "before the start" never happened
                self._schedule(restore_at, "restore", row, deleted_ms)

    def _schedule(self, t: int, kind: str, row: int, tag: int) -> None:
        self._scheduled += 1
        heapq.heappush(self._fates, (t, self._scheduled, kind, row, tag))

    def _due_fates(self, end_ms: int) -> list[Event]:
        due = []
        while self._fates and self._fates[0][0] <= end_ms:
            due.append(heapq.heappop(self._fates))
        return due

    # -- one slice of time --------------------------------------------------------------------

    def step(self, start_ms: int, end_ms: int) -> int:
        """Play one slice of simulated time; returns the number of changes."""
        events = self._due_fates(end_ms)
        events += self._drawn_events(start_ms, end_ms - start_ms)
        events.sort(key=lambda e: (e[0], e[1]))
        changes = 0
        for t, _, kind, row, tag in events:
            changes += self._apply(kind, row, tag, t)
        return changes

    def _drawn_events(self, start_ms: int, span: int) -> list[Event]:
        """Application activity in proportion to the active applications, job events in
        proportion to the live jobs."""
        integ, rng = self.integ, self.rng
        events: list[Event] = []
        if integ.application_count:
            per_day = EVENTS_PER_ACTIVE_APPLICATION_DAY * integ.active
            times = _event_times(rng, per_day, start_ms, span)
            events.extend((t, 0, "activity", -1, 0) for t in times)
        live_jobs = [job.row for job in integ.jobs if job.deleted_ms is None]
        if live_jobs:
            for kind, per_job_day in _JOB_EVENT_RATES:
                times = _event_times(rng, per_job_day * len(live_jobs), start_ms, span)
                events.extend((t, 0, kind, rng.choice(live_jobs), 0) for t in times)
        return events

    def _apply(self, kind: str, row: int, tag: int, t: int) -> int:
        """Carry out one event; 1 when it changed something, else 0."""
        integ = self.integ
        if kind in ("purge", "restore"):
            if integ.deleted.get(row) != tag:
                return 0  # restored or deleted again since: the fate belonged to another deletion
            if kind == "purge":
                integ.purge_row(row)
            else:
                integ.restore_row(row, t)
            return 1
        if kind == "activity":
            return self._application_event(t)
        return self._job_event(kind, row, t)

    # -- jobs -------------------------------------------------------------------------------

    def _job_event(self, kind: str, job_row: int, t: int) -> int:
        integ = self.integ
        job = integ.jobs[job_row]
        if kind == "rename_stage":
            if not job.stages:
                return 0
            integ.rename_job_stage(job_row, self.rng.randrange(len(job.stages)), t, None)
        elif kind == "retitle_job":
            integ.retitle_job(job_row, t)
        elif kind == "close_job":
            if job.status != "OPEN" or job_row == 0:  # the first job stays open for new applicants
                return 0
            integ.close_job(job_row, t)
        return 1

    # -- applications ---------------------------------------------------------------------------

    def _application_event(self, t: int) -> int:
        row = self._pick_active_row()
        if row is None:
            return 0
        kinds, cum = _WEIGHTS_WITH_STAGES if self.integ.has_stages else _WEIGHTS_WITHOUT_STAGES
        pick = self.rng.randrange(cum[-1])
        kind = next(k for k, c in zip(kinds, cum, strict=True) if pick < c)
        return self._act_on(row, kind, t)

    def _pick_active_row(self) -> int | None:
        integ = self.integ
        n = integ.application_count
        for _ in range(ROW_TRIES):
            row = self.rng.randrange(n)
            if integ.app_log.listed(row) and integ.is_active(row):
                return row
        return None

    def _act_on(self, row: int, kind: str, t: int) -> int:
        integ = self.integ
        if kind in ("forward", "skip", "back"):
            self._move_in_pipeline(row, kind, t)
        elif kind == "hire":
            integ.hire_row(row, t)
        elif kind == "decline":
            integ.decline_row(row, self.rng.randrange(len(catalog.REJECTION_REASONS)), t)
        elif kind == "move_job":
            target = self.rng.choice(integ.open_jobs)
            if target == integ.app_job[row]:
                return 0
            integ.move_row_to_job(row, target, t)
        elif kind == "rename_candidate":
            integ.rename_candidate_of(row, t, None, None)
        elif kind == "delete":
            integ.delete_row(row, t, may_restore=True)
        return 1

    def _move_in_pipeline(self, row: int, kind: str, t: int) -> None:
        """One active stage on; a skip jumps one, a step back returns to the closest active stage
        before. Moving on past the last stage, or into the Hired stage, is a hire."""
        integ = self.integ
        job = integ.jobs[integ.app_job[row]]
        positions = job.active_positions()
        here = integ.app_stage[row]
        earlier = [p for p in positions if p < here]
        later = [p for p in positions if p > here]
        if kind == "back" and earlier:
            integ.move_row(row, earlier[-1], t)
        elif kind == "skip" and len(later) >= 2:
            integ.move_row(row, later[1], t)
        elif later and later[0] != job.hired_stage:
            integ.move_row(row, later[0], t)
        else:
            integ.hire_row(row, t)
