"""What an integration check needs from the store, and where it records what it found.

A check (`stagewatch.checks`) lists what changed after an integration's watermark before any run
begins; `plan` answers, for many integrations in one query, where each check lists from and
whether the integration must sync whatever the check finds. `record` keeps each integration's last
check (table `integration_checks`); the watermark, runs and leases stay the runs' business.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from stagewatch.store.connection import Database
from stagewatch.timeutil import format_ts, parse_ts

# One row per integration asked about; the ids travel as one array parameter.
_PLAN = """
SELECT i.value AS integration_id, w.watermark,
    (SELECT r.status FROM sync_runs AS r WHERE r.integration_id = i.value
        ORDER BY r.id DESC LIMIT 1) AS last_status,
    (SELECT min(r.id) FROM sync_runs AS r WHERE r.integration_id = i.value
        AND r.status = 'succeeded' AND r.published_at IS NULL) AS unpublished
FROM {ids}
LEFT JOIN watermarks AS w ON w.integration_id = i.value
"""
_IDS = {False: "json_each(?) AS i", True: "unnest(?::text[]) AS i (value)"}
_RECORD = (
    "INSERT INTO integration_checks (integration_id, checked_at, window_start, result, detail, "
    "requests) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (integration_id) DO UPDATE SET "
    "checked_at = excluded.checked_at, window_start = excluded.window_start, "
    "result = excluded.result, detail = excluded.detail, requests = excluded.requests"
)


@dataclass(frozen=True)
class CheckPlan:
    """Where an integration's check lists from, and why it must sync anyway (None: only if the
    check finds something)."""

    integration_id: str
    watermark: datetime | None
    must_sync: str | None


@dataclass(frozen=True)
class CheckRecord:
    integration_id: str
    checked_at: datetime
    window_start: datetime | None
    result: str
    detail: str | None
    requests: int


def _must_sync(
    watermark: str | None, last_status: str | None, unpublished: int | None
) -> str | None:
    """Why a check alone cannot stand for a sync: nothing to list after, a run whose changes never
    went out, or a last run that did not succeed (its status stays until a run succeeds)."""
    if watermark is None:
        return "no watermark yet"
    if unpublished is not None:
        return f"run {unpublished} is not published"
    if last_status != "succeeded":
        return f"the last run is {last_status}"
    return None


class Checks:
    def __init__(self, db: Database) -> None:
        self._db = db

    def plan(self, integration_ids: list[str]) -> list[CheckPlan]:
        """Each integration's check plan, in `integration_ids`' order."""
        postgres = self._db.postgres
        ids = list(integration_ids) if postgres else json.dumps(list(integration_ids))
        rows = self._db.conn.execute(_PLAN.format(ids=_IDS[postgres]), (ids,))
        found = {row[0]: row for row in rows}
        plans = []
        for integration_id in integration_ids:
            _, watermark, last_status, unpublished = found[integration_id]
            plans.append(
                CheckPlan(
                    integration_id,
                    None if watermark is None else parse_ts(watermark),
                    _must_sync(watermark, last_status, unpublished),
                )
            )
        return plans

    def record(self, records: Iterable[CheckRecord]) -> int:
        """Keep each integration's latest check, all in one transaction; returns how many."""
        rows = [
            (
                r.integration_id,
                format_ts(r.checked_at),
                None if r.window_start is None else format_ts(r.window_start),
                r.result,
                r.detail,
                r.requests,
            )
            for r in records
        ]
        if rows:
            with self._db.transaction() as conn:
                conn.executemany(_RECORD, rows)
        return len(rows)
