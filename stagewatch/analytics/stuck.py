"""Applications in their current stage longer than a threshold, and the one event per such stay."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from stagewatch.analytics.stays import AnalyticsError, stay_filters, uncertainty_hours
from stagewatch.report.text import redact_contacts
from stagewatch.timeutil import format_ts, parse_ts

STUCK_EVENT_NAME = "stagewatch.application.stuck"
_EVENT_NAMESPACE = uuid.UUID("0d3c6f0e-8a7b-4f1e-9a55-6b0f3e2c7d41")

STUCK_FIELDS = (
    "integration_id",
    "application_id",
    "job_id",
    "stage_id",
    "stage_name",
    "entered_at",
    "entered_after",
    "days_in_stage",
    "uncertainty_hours",
    "threshold_days",
    "event_id",
    "event_key",
)
# The event's payload: the row without its integration (the event's related resource) and
# without the event's own ids.
_PAYLOAD_FIELDS = STUCK_FIELDS[1 : STUCK_FIELDS.index("event_id")]

_CURRENT = """
SELECT s.integration_id, s.application_id, s.job_id, s.stage_id, s.stage_name, s.entered_at,
    s.entered_after, s.entry_window_seconds, s.event_id, e.event_key
FROM stage_stays AS s JOIN events AS e ON e.id = s.event_id
{where}
ORDER BY s.entered_at, s.integration_id, s.application_id
"""


def _threshold(
    days: float, by_id: Mapping[str, float], by_name: Mapping[str, float], stay: Mapping[str, Any]
) -> float:
    """A stage's own threshold, by stage id or by name (case-insensitive), else `days`."""
    if stay["stage_id"] in by_id:
        return by_id[stay["stage_id"]]
    return by_name.get(str(stay["stage_name"] or "").casefold(), days)


def stuck(
    conn: sqlite3.Connection,
    *,
    days: float,
    as_of: datetime,
    integration_id: str | None = None,
    job_id: str | None = None,
    overrides: Mapping[str, float] | None = None,
) -> Iterator[dict[str, Any]]:
    """Current, undecided stays older than their threshold at `as_of`, longest first (the
    earliest entry first, then by integration and application), streamed: memory stays flat
    however many there are. A bad threshold raises here, before the first row.

    Days run from entered_at, the observation that saw the move (the latest it can have been), so
    a stay listed here has been in its stage at least that long."""
    overrides = dict(overrides or {})
    for name, value in [("--days", days), *overrides.items()]:
        if not value >= 0:
            raise AnalyticsError(f"stuck threshold {name} must be zero or more days, not {value}")
    where, params = stay_filters(integration_id, job_id, None, alias="s.")
    sql = _CURRENT.format(where=f"{where or 'WHERE 1 = 1'} AND s.ended = 'current'")
    cursor = conn.execute(sql, params)
    by_name = {str(k).casefold(): v for k, v in overrides.items()}
    return _past_threshold(cursor, days, overrides, by_name, as_of)


def _past_threshold(cursor, days, by_id, by_name, as_of: datetime) -> Iterator[dict[str, Any]]:
    columns = [c[0] for c in cursor.description]
    for row in cursor:
        stay = dict(zip(columns, row, strict=True))
        in_stage = (as_of - parse_ts(stay["entered_at"])).total_seconds() / 86400.0
        threshold = _threshold(days, by_id, by_name, stay)
        if in_stage > threshold:
            stay["days_in_stage"] = round(in_stage, 3)
            stay["uncertainty_hours"] = uncertainty_hours(stay["entry_window_seconds"], None, True)
            stay["threshold_days"] = threshold
            yield {field: stay[field] for field in STUCK_FIELDS}


def unannounced(conn: sqlite3.Connection, rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The stuck stays no stuck event was sent for yet."""
    rows = [dict(r) for r in rows]
    if not rows:
        return []
    announced = {
        event_id
        for (event_id,) in conn.execute(
            "SELECT event_id FROM stuck_announcements WHERE integration_id IN "
            f"({', '.join('?' for _ in {r['integration_id'] for r in rows})})",
            sorted({r["integration_id"] for r in rows}),
        )
    }
    return [r for r in rows if r["event_id"] not in announced]


def record_announced(
    conn: sqlite3.Connection, rows: Iterable[Mapping[str, Any]], *, at: datetime
) -> int:
    """Remember the stays whose event went out, in one transaction; returns rows newly recorded."""
    values = [
        (
            r["event_id"],
            r["integration_id"],
            r["application_id"],
            r["job_id"],
            r["stage_id"],
            r["threshold_days"],
            r["days_in_stage"],
            format_ts(at),
        )
        for r in rows
    ]
    count = "SELECT count(*) FROM stuck_announcements"
    # SQLite takes its write lock up front; PostgreSQL knows only BEGIN (its rows lock as written).
    conn.execute("BEGIN IMMEDIATE" if isinstance(conn, sqlite3.Connection) else "BEGIN")
    try:
        before = conn.execute(count).fetchone()[0]
        conn.executemany(
            "INSERT INTO stuck_announcements (event_id, integration_id, application_id, job_id, "
            "stage_id, threshold_days, days_in_stage, announced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (event_id) DO NOTHING",
            values,
        )
        after = conn.execute(count).fetchone()[0]
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return after - before


def stuck_event(row: Mapping[str, Any], *, candidate_name: str | None = None) -> dict:
    """Keyword arguments for `prefect.events.emit_event`: the application as the resource, its job
    and integration related. The id comes from the stay, so sending it again is the same event."""
    integration_id = str(row["integration_id"])
    app_id = str(row["application_id"])
    resource = {
        "prefect.resource.id": f"kombo.application.{integration_id}.{app_id}",
        "prefect.resource.name": redact_contacts(candidate_name) if candidate_name else app_id,
    }
    related = [
        {
            "prefect.resource.id": f"kombo.integration.{integration_id}",
            "prefect.resource.role": "integration",
            "prefect.resource.name": integration_id,
        }
    ]
    if row["job_id"] is not None:
        related.append(
            {
                "prefect.resource.id": f"kombo.job.{integration_id}.{row['job_id']}",
                "prefect.resource.role": "job",
            }
        )
    payload = {field: row[field] for field in _PAYLOAD_FIELDS}
    return {
        "event": STUCK_EVENT_NAME,
        "resource": resource,
        "related": related,
        "payload": payload,
        "id": uuid.uuid5(_EVENT_NAMESPACE, f"stuck:{integration_id}:{row['event_key']}"),
    }


def announce(
    conn: sqlite3.Connection,
    rows: Iterable[Mapping[str, Any]],
    send: Callable[[list[dict[str, Any]]], None],
    *,
    at: datetime,
    candidate_names: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Send one stuck event per stay not announced before, then remember them. `send` returns
    once the events have left; a crash before the record sends them again, with the same ids."""
    pending = unannounced(conn, rows)
    if pending:
        names = candidate_names or {}
        send([stuck_event(r, candidate_name=names.get(r["application_id"])) for r in pending])
        record_announced(conn, pending, at=at)
    return pending
