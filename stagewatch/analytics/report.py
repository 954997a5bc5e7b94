"""What the weekly pipeline report holds, read from the store: funnels, the week's moves and hires,
and the stuck applications. Rendering is `stagewatch.analytics.markdown`'s."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from stagewatch.analytics.funnel import funnel
from stagewatch.analytics.stuck import stuck
from stagewatch.timeutil import format_ts

_MOVES = """
SELECT job_id, from_stage_id, from_stage_name, to_stage_id, to_stage_name, direction,
    count(*) AS moves
FROM events
WHERE integration_id = :integration_id AND kind = 'stage_changed'
    AND observed_at > :since AND observed_at <= :until
GROUP BY job_id, from_stage_id, from_stage_name, to_stage_id, to_stage_name, direction
ORDER BY moves DESC, job_id, from_stage_id, to_stage_id
"""

# A hire's time to hire runs from the application's first stay in the job.
_HIRES = """
SELECT h.application_id, h.job_id, h.stage_id, h.stage_name, h.left_at AS hired_at,
    h.left_after AS hired_after,
    (SELECT min(f.entered_at) FROM stage_stays AS f
        WHERE f.integration_id = h.integration_id AND f.application_id = h.application_id
            AND f.job_id = h.job_id) AS first_entered_at
FROM stage_stays AS h
WHERE h.integration_id = :integration_id AND h.ended = 'hired'
    AND h.left_at > :since AND h.left_at <= :until
ORDER BY h.left_at, h.application_id
"""


@dataclass
class PipelineReport:
    """One integration's pipeline as of `as_of`; the week is (`since`, `as_of`]."""

    integration_id: str
    as_of: datetime
    since: datetime
    stuck_days: float
    funnel: list[dict[str, Any]] = field(default_factory=list)
    moves: list[dict[str, Any]] = field(default_factory=list)
    hires: list[dict[str, Any]] = field(default_factory=list)
    stuck: list[dict[str, Any]] = field(default_factory=list)

    @property
    def application_ids(self) -> set[str]:
        return {r["application_id"] for r in (*self.hires, *self.stuck)}


def _rows(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, params)
    columns = [c[0] for c in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor]


def pipeline_report(
    conn: sqlite3.Connection,
    integration_id: str,
    *,
    as_of: datetime,
    stuck_days: float,
    stuck_overrides: dict[str, float] | None = None,
    week: timedelta = timedelta(days=7),
) -> PipelineReport:
    """Everything the report shows for one integration, from one connection."""
    since = as_of - week
    params = {
        "integration_id": integration_id,
        "since": format_ts(since),
        "until": format_ts(as_of),
    }
    return PipelineReport(
        integration_id=integration_id,
        as_of=as_of,
        since=since,
        stuck_days=stuck_days,
        funnel=funnel(conn, integration_id),
        moves=_rows(conn, _MOVES, params),
        hires=_rows(conn, _HIRES, params),
        stuck=list(
            stuck(
                conn,
                days=stuck_days,
                as_of=as_of,
                integration_id=integration_id,
                overrides=stuck_overrides,
            )
        ),
    )
