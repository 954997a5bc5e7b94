"""What a store answers: the change log, stays, runs, status, names and its own schema."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from stagewatch.diff import EVENT_FIELDS, EVENT_KINDS
from stagewatch.store.connection import Database
from stagewatch.store.errors import StoreError
from stagewatch.store.pg_schema import MIGRATIONS, pg_schema_markdown
from stagewatch.store.schema import schema_markdown
from stagewatch.timeutil import format_ts

# What `status` shows of a held lock: run_locks column -> status field.
# One row per integration that ever ran; the counts read covering indexes.
_STATUS = """
SELECT
    r.integration_id, r.id AS last_run_id, r.mode AS last_run_mode,
    r.status AS last_run_status, r.started_at AS last_run_started_at,
    r.finished_at AS last_run_finished_at, r.events AS last_run_events,
    r.error AS last_run_error,
    (SELECT max(s.finished_at) FROM sync_runs AS s
        WHERE s.integration_id = r.integration_id AND s.status = 'succeeded') AS last_success_at,
    w.watermark,
    l.run_id AS locked_by_run_id, l.pid AS locked_by_pid, l.hostname AS locked_by_hostname,
    l.renewed_at AS lock_renewed_at, l.lease_expires_at AS lock_expires_at,
    (SELECT count(*) FROM jobs AS j WHERE j.integration_id = r.integration_id) AS jobs,
    (SELECT count(*) FROM applications AS a
        WHERE a.integration_id = r.integration_id AND a.deleted_observed_at IS NULL)
        AS applications,
    (SELECT count(*) FROM applications AS a
        WHERE a.integration_id = r.integration_id AND a.deleted_observed_at IS NOT NULL)
        AS deleted_applications,
    (SELECT count(*) FROM events AS e WHERE e.integration_id = r.integration_id) AS events,
    c.checked_at AS last_checked_at, c.result AS last_check_result
FROM (SELECT max(id) AS id FROM sync_runs GROUP BY integration_id) AS last
JOIN sync_runs AS r ON r.id = last.id
LEFT JOIN watermarks AS w ON w.integration_id = r.integration_id
LEFT JOIN run_locks AS l ON l.integration_id = r.integration_id
LEFT JOIN integration_checks AS c ON c.integration_id = r.integration_id
ORDER BY r.integration_id
"""


class Queries:
    """Read-only questions to one database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def run(self, run_id: int) -> dict[str, Any]:
        row = self._db.conn.execute("SELECT * FROM sync_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no sync run {run_id}")
        return dict(row)

    def is_baseline(self, run_id: int) -> bool:
        """Whether the run is the first of its integration that succeeded: its first sightings are
        everything that existed before stagewatch looked, not news."""
        row = self._db.conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM sync_runs AS p WHERE p.integration_id = r.integration_id"
            " AND p.status = 'succeeded' AND p.id < r.id) FROM sync_runs AS r WHERE r.id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise StoreError(f"no sync run {run_id}")
        return bool(row[0])

    def job_names(self, integration_id: str) -> dict[str, str]:
        """Job id -> name as last listed, for reports."""
        return dict(
            self._db.conn.execute(
                "SELECT job_id, name FROM jobs WHERE integration_id = ? AND name IS NOT NULL",
                (integration_id,),
            ).fetchall()
        )

    def candidate_names(
        self, integration_id: str, application_ids: Iterable[str]
    ) -> dict[str, str]:
        """Application id -> candidate name from the stored record (never contact data); reports
        call it only when candidate names may be shown."""
        if self._db.postgres:
            rows = self._db.conn.execute(
                "SELECT application_id, trim(coalesce(raw::jsonb->'candidate'->>'first_name', '') "
                "|| ' ' || coalesce(raw::jsonb->'candidate'->>'last_name', '')) FROM applications "
                "WHERE integration_id = ? AND application_id = ANY(?)",
                (integration_id, sorted(application_ids)),
            )
            return {app_id: name for app_id, name in rows if name}
        rows = self._db.conn.execute(
            "SELECT application_id, trim(coalesce(json_extract(raw, '$.candidate.first_name'), '') "
            "|| ' ' || coalesce(json_extract(raw, '$.candidate.last_name'), '')) FROM applications "
            "WHERE integration_id = ? AND application_id IN (SELECT value FROM json_each(?))",
            (integration_id, json.dumps(sorted(application_ids))),
        )
        return {app_id: name for app_id, name in rows if name}

    def events(
        self,
        *,
        run_id: int | None = None,
        integration_id: str | None = None,
        since: datetime | None = None,
        kind: str | Iterable[str] | None = None,
        application_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events in the order they were written, each a dict with EVENT_FIELDS as keys."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("sync_run_id", run_id),
            ("integration_id", integration_id),
            ("application_id", application_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("observed_at >= ?")
            params.append(format_ts(since))
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            unknown = [k for k in kinds if k not in EVENT_KINDS]
            if unknown:
                raise StoreError(
                    f"unknown event kind {', '.join(unknown)}; known: {', '.join(EVENT_KINDS)}"
                )
            if kinds and run_id is not None:
                kinds = self._kinds_run_wrote(run_id, kinds)
                if not kinds:
                    return iter(())
            if kinds:
                clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})")
                params.extend(kinds)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {', '.join(EVENT_FIELDS)} FROM events {where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        cursor = self._db.conn.execute(sql, params)
        return (dict(row) for row in cursor)

    def _kinds_run_wrote(self, run_id: int, kinds: list[str]) -> list[str]:
        """`kinds` minus those a finished run counted none of: its events need no scan for them
        (a big first sync's first sightings are slow to rule out)."""
        row = self._db.conn.execute(
            f"SELECT {', '.join(EVENT_KINDS)} FROM sync_runs WHERE id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return kinds
        return [k for k in kinds if row[k] is None or row[k] > 0]

    def history(self, application_id: str, integration_id: str | None = None) -> list[dict]:
        """The application's stage stays, oldest first, from the stage_history view."""
        sql = "SELECT * FROM stage_history WHERE application_id = ?"
        params: list[Any] = [application_id]
        if integration_id is not None:
            sql += " AND integration_id = ?"
            params.append(integration_id)
        sql += " ORDER BY integration_id, event_id"
        return [dict(row) for row in self._db.conn.execute(sql, params)]

    def live_applications(self, integration_id: str) -> int:
        """How many applications of the integration the snapshot holds as live (not deleted)."""
        return self._db.conn.execute(
            "SELECT count(*) FROM applications WHERE integration_id = ? "
            "AND deleted_observed_at IS NULL",
            (integration_id,),
        ).fetchone()[0]

    def status(self) -> list[dict[str, Any]]:
        """Per integration: its last run, last success, watermark, lock, what the store holds, and
        its last check (an idle integration is checked, not synced: `stagewatch.checks`)."""
        return [dict(row) for row in self._db.conn.execute(_STATUS)]

    def schema_markdown(self) -> str:
        if self._db.postgres:
            return pg_schema_markdown(self._db.conn)
        return schema_markdown(self._db.conn)

    def schema_sql(self) -> str:
        if self._db.postgres:
            return "".join(f"{sql};\n" for _, statements in MIGRATIONS for sql in statements)
        rows = self._db.conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY rowid"
        )
        return "".join(f"{row[0]};\n" for row in rows)

    def integrity_check(self) -> str:
        if self._db.postgres:  # PostgreSQL checks its pages itself; nothing to ask
            return "ok"
        return self._db.conn.execute("PRAGMA integrity_check").fetchone()[0]
