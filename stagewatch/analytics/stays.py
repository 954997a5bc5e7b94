"""One row per application per stage stay, with both ends bounded by the observations around them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from stagewatch.errors import StagewatchError
from stagewatch.timeutil import format_ts, parse_ts

ENDINGS = (
    "moved_forward",
    "moved_backward",
    "moved_unknown",
    "hired",
    "declined",
    "deleted",
    "job_changed",
    "current",
)

STAY_FIELDS = (
    "integration_id",
    "application_id",
    "job_id",
    "stage_id",
    "stage_name",
    "stage_index",
    "entered_at",
    "entered_after",
    "entered_from",
    "left_at",
    "left_after",
    "ended",
    "days_in_stage",
    "uncertainty_hours",
    "event_id",
)

_COLUMNS = (
    "integration_id, application_id, job_id, stage_id, stage_name, stage_index, entered_at, "
    "entered_after, entered_from, left_at, left_after, ended, seconds_in_stage, "
    "entry_window_seconds, exit_window_seconds, event_id"
)


class AnalyticsError(StagewatchError):
    """A question the store cannot answer as asked (bad filter, store without the views)."""


def stay_filters(
    integration_id: str | None, job_id: str | None, since: datetime | None, alias: str = ""
) -> tuple[str, dict[str, Any]]:
    """WHERE clause (or "") and its parameters over stage_stays (named `alias`, e.g. "s."); `since`
    keeps stays entered at or after it."""
    clauses, params = [], {}
    if integration_id is not None:
        clauses.append(f"{alias}integration_id = :integration_id")
        params["integration_id"] = integration_id
    if job_id is not None:
        clauses.append(f"{alias}job_id = :job_id")
        params["job_id"] = job_id
    if since is not None:
        clauses.append(f"{alias}entered_at >= :since")
        params["since"] = format_ts(since)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def uncertainty_hours(entry_window: float | None, exit_window: float | None, current: bool):
    """How far the true time in stage may be from days_in_stage, in hours: the wider of the two
    windows the move could have happened in. None when a window is unbounded."""
    if entry_window is None or (exit_window is None and not current):
        return None
    return round(max(entry_window, 0 if current else exit_window) / 3600.0, 2)


def _stay(row: dict[str, Any], as_of: datetime) -> dict[str, Any]:
    stay = dict(row)
    current = row["ended"] == "current"
    seconds = row["seconds_in_stage"]
    if current:
        seconds = (as_of - parse_ts(row["entered_at"])).total_seconds()
    stay["days_in_stage"] = None if seconds is None else round(seconds / 86400.0, 3)
    stay["uncertainty_hours"] = uncertainty_hours(
        row["entry_window_seconds"], row["exit_window_seconds"], current
    )
    return {field: stay[field] for field in STAY_FIELDS}


def stays(
    conn: sqlite3.Connection,
    *,
    as_of: datetime,
    integration_id: str | None = None,
    job_id: str | None = None,
    since: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Stays oldest first per application, streamed. A current stay's days run to `as_of`."""
    where, params = stay_filters(integration_id, job_id, since)
    sql = f"SELECT {_COLUMNS} FROM stage_stays {where} ORDER BY integration_id, application_id, event_id"
    try:
        cursor = conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        raise AnalyticsError(f"cannot read stays: {exc}") from exc
    columns = [column[0] for column in cursor.description]
    return (_stay(dict(zip(columns, row, strict=True)), as_of) for row in cursor)
