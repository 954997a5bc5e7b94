"""Stage analytics over the store: stays with their time bounds, funnels per job, stuck applications.

Pure functions of a store connection and the times passed in; the SQL lives in the store's views
(`stage_stays`, `job_funnel`; over the stays `commit_run` keeps, migration 0010), so any SQLite tool
sees the same numbers.
"""

from __future__ import annotations

from stagewatch.analytics.funnel import FUNNEL_FIELDS, funnel
from stagewatch.analytics.stays import ENDINGS, STAY_FIELDS, stays
from stagewatch.analytics.stuck import (
    STUCK_EVENT_NAME,
    STUCK_FIELDS,
    announce,
    record_announced,
    stuck,
    stuck_event,
    unannounced,
)

__all__ = [
    "ENDINGS",
    "FUNNEL_FIELDS",
    "STAY_FIELDS",
    "STUCK_EVENT_NAME",
    "STUCK_FIELDS",
    "announce",
    "funnel",
    "record_announced",
    "stays",
    "stuck",
    "stuck_event",
    "unannounced",
]
