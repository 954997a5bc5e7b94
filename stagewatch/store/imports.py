"""The import ledger: which ATS applications stagewatch asked Kombo to track, and what came of it.

A row is committed as `sending` before its request goes out and finished in one transaction after
the answer: a process that dies in between leaves `sending`, which means "may have happened", so a
re-run never sends it again blindly. Rows imported or already tracked are never sent again.
"""

from __future__ import annotations

from typing import Any, Literal

from stagewatch.store.connection import Database
from stagewatch.store.errors import StoreError
from stagewatch.timeutil import format_ts

LedgerStatus = Literal["imported", "already_tracked", "rejected", "failed", "unknown"]
FINAL = ("imported", "already_tracked")  # done: a re-run skips them
MAYBE_DONE = ("sending", "unknown")  # Kombo may have acted: re-sent only when asked to

_BEGIN = """
INSERT INTO imports (
    integration_id, import_key, tool, status, tracked_at, attempts, first_sent_at, updated_at
)
VALUES (:integration_id, :import_key, :tool, 'sending', :tracked_at, 1, :now, :now)
ON CONFLICT (integration_id, import_key) DO UPDATE SET
    status = 'sending',
    tracked_at = excluded.tracked_at,
    error_code = NULL,
    message = NULL,
    attempts = imports.attempts + 1,
    updated_at = excluded.updated_at
WHERE imports.status NOT IN ('imported', 'already_tracked')
"""

_FINISH = """
UPDATE imports SET
    status = :status,
    application_id = coalesce(:application_id, application_id),
    tracked_at = coalesce(:tracked_at, tracked_at),
    error_code = :error_code,
    message = :message,
    updated_at = :now
WHERE integration_id = :integration_id AND import_key = :import_key AND status = 'sending'
"""


class ImportLedger:
    """The `imports` table of one store."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _now(self) -> str:
        return format_ts(self._db.clock())

    def entries(self, integration_id: str) -> dict[str, dict[str, Any]]:
        """Every ledger row of the integration, by import key."""
        rows = self._db.conn.execute(
            "SELECT * FROM imports WHERE integration_id = ? ORDER BY first_sent_at, import_key",
            (integration_id,),
        )
        return {row["import_key"]: dict(row) for row in rows}

    def begin(
        self, integration_id: str, import_key: str, tool: str, tracked_at: str | None
    ) -> None:
        """Record that the request is about to go out (committed before it does)."""
        params = {
            "integration_id": integration_id,
            "import_key": import_key,
            "tool": tool,
            "tracked_at": tracked_at,
            "now": self._now(),
        }
        with self._db.transaction() as conn:
            if conn.execute(_BEGIN, params).rowcount != 1:
                raise StoreError(f"{import_key} is already imported for {integration_id}")

    def finish(
        self,
        integration_id: str,
        import_key: str,
        status: LedgerStatus,
        *,
        application_id: str | None = None,
        tracked_at: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Record Kombo's answer (or its absence) for a request `begin` recorded."""
        params = {
            "integration_id": integration_id,
            "import_key": import_key,
            "status": status,
            "application_id": application_id,
            "tracked_at": tracked_at,
            "error_code": error_code,
            "message": message,
            "now": self._now(),
        }
        with self._db.transaction() as conn:
            if conn.execute(_FINISH, params).rowcount != 1:
                raise StoreError(f"{import_key} of {integration_id} is not being sent")

    def first_sightings(self, integration_id: str) -> list[dict[str, Any]]:
        """The first_seen events of the integration, each tagged `imported` or `tracked`."""
        rows = self._db.conn.execute(
            "SELECT * FROM first_sightings WHERE integration_id = ? ORDER BY event_id",
            (integration_id,),
        )
        return [dict(row) for row in rows]
