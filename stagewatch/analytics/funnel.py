"""Per job, stage by stage: who reached it, who is in it, who moved on, and how long they stayed."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from stagewatch.analytics.stays import AnalyticsError, stay_filters
from stagewatch.store.schema import FUNNEL_SELECT, kept_funnel

FUNNEL_FIELDS = (
    "integration_id",
    "job_id",
    "job_name",
    "stage_order",
    "stage_id",
    "stage_name",
    "stage_index",
    "order_note",
    "reached",
    "currently_in",
    "reached_later",
    "conversion",
    "median_days",
    "p90_days",
    "backward_out",
    "hired_in",
    "declined_in",
    "job_hired",
    "job_declined",
    "job_median_days_to_hire",
)


def funnel(
    conn: sqlite3.Connection,
    integration_id: str,
    *,
    job_id: str | None = None,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """The `job_funnel` view's rows for one integration (and job), over the stays entered at or
    after `since` when given; jobs in id order, stages in funnel order.

    Without `since` the kept rows are read (migration 0012), and the stale jobs' computed from
    their stays, as the view does; `since` computes every job's from its stays."""
    where, params = stay_filters(integration_id, job_id, since)
    if since is None:
        keys = "integration_id = :integration_id" + (" AND job_key = :job_id" if job_id else "")
        kept = "f.integration_id = :integration_id" + (" AND f.job_key = :job_id" if job_id else "")
        sql = kept_funnel(f"(SELECT * FROM funnel_stale WHERE {keys})", kept)
        sql = f"SELECT * FROM ({sql}) AS f ORDER BY job_id, stage_order"
    else:
        sql = FUNNEL_SELECT.format(
            stays=f"(SELECT * FROM stage_stays {where})", job_stages="job_stages"
        )
        outer = ["integration_id = :integration_id"]
        if job_id is not None:
            outer.append("job_id = :job_id")
        sql = f"SELECT * FROM ({sql}) AS f WHERE {' AND '.join(outer)} ORDER BY job_id, stage_order"
    try:
        cursor = conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        raise AnalyticsError(f"cannot read the funnel: {exc}") from exc
    columns = [c[0] for c in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor]
