"""The receiver's ledger: every verified delivery, written before Kombo gets its 2xx.

Its own small SQLite file (WAL), apart from the store: a sync holding the store's write lock for
minutes must not make webhooks wait. Dedupe reads it, so a redelivery after a restart is still a
redelivery, and the worker takes its work from it, so nothing accepted is lost by a crash.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database, Migrations

from stagewatch.errors import StagewatchError
from stagewatch.timeutil import format_ts
from stagewatch.webhooks.envelope import Delivery

BUSY_TIMEOUT_MS = 5_000
MAX_ERROR_CHARS = 500

migrations = Migrations("stagewatch-webhooks")

INITIAL = [
    """
CREATE TABLE deliveries ( -- Every verified webhook delivery: dedupe, and the worker's queue.
    id TEXT PRIMARY KEY, -- Kombo's delivery id; a redelivery carries the same one.
    type TEXT NOT NULL, -- data-changed, integration-created, ... or a type this receiver ignores.
    integration_id TEXT, -- The integration it concerns (NULL for an unknown type).
    payload TEXT NOT NULL, -- The envelope's data as JSON, without contact data or credentials.
    received_at TEXT NOT NULL, -- When it arrived.
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed', 'ignored')), -- ignored: acknowledged, nothing to do.
    attempts INTEGER NOT NULL DEFAULT 0, -- Side-effect attempts so far.
    next_attempt_at TEXT, -- When a pending delivery is due.
    last_error TEXT, -- Why the last attempt failed.
    finished_at TEXT -- When it became done or failed.
)
""",
    "CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending'",
    """
CREATE TABLE integration_states ( -- Every integration-state-changed webhook, for `stagewatch status`.
    delivery_id TEXT PRIMARY KEY REFERENCES deliveries (id), -- The delivery that said so.
    integration_id TEXT NOT NULL, -- Integration.
    state TEXT NOT NULL, -- ACTIVE, INVALID or INACTIVE.
    setup_status TEXT NOT NULL, -- INCOMPLETE, FINAL_SYNC_PENDING or COMPLETED.
    qa_status TEXT NOT NULL, -- PENDING, FAILED or PASSED.
    updated_at TEXT NOT NULL, -- When Kombo says the state changed.
    received_at TEXT NOT NULL -- When the webhook arrived.
)
""",
    "CREATE INDEX integration_states_latest ON integration_states (integration_id, updated_at)",
]


@migrations(name="0001_initial")
def m0001_initial(db: Database) -> None:
    for statement in INITIAL:
        db.execute(statement.strip())


def default_ledger_path(store: str | os.PathLike[str]) -> Path:
    """Next to the store: `stagewatch.db` -> `stagewatch-webhooks.db`; here for a store that is a
    PostgreSQL URL."""
    if "://" in str(store):
        return Path("stagewatch-webhooks.db")
    store = Path(store)
    return store.with_name(f"{store.stem}-webhooks.db")


class LedgerError(StagewatchError):
    """The ledger cannot be read or written: the receiver answers 503 so Kombo delivers again."""


@dataclass(frozen=True)
class Due:
    """A pending delivery the worker should act on now."""

    delivery: Delivery
    attempts: int


class Ledger:
    """One connection shared by the request path and the worker, behind a lock (SQLite writes
    one at a time anyway)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a delivery acknowledged to Kombo survives a power cut, not only a crash.
            self._conn.execute("PRAGMA synchronous = FULL")
            with self._transaction():
                migrations.apply(Database(self._conn, execute_plugins=False))
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the webhook ledger {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextmanager
    def _writing(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with self._transaction() as conn:
                    yield conn
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot {doing} in the webhook ledger: {exc}") from None

    def _reading(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot read the webhook ledger: {exc}") from None

    # -- the request path -----------------------------------------------------------------------

    def record(
        self,
        delivery: Delivery,
        *,
        status: Literal["pending", "ignored"],
        received_at: datetime,
        state: dict[str, str] | None = None,
    ) -> bool:
        """Record a delivery (and the integration state it reports); False when its id is
        already recorded, in which case nothing is written."""
        now = format_ts(received_at)
        with self._writing("record a delivery") as conn:
            inserted = conn.execute(
                "INSERT INTO deliveries (id, type, integration_id, payload, received_at, status,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    delivery.id,
                    delivery.type,
                    delivery.integration_id,
                    json.dumps(delivery.data, sort_keys=True),
                    now,
                    status,
                    now if status == "pending" else None,
                ),
            ).rowcount
            if inserted and state is not None:
                conn.execute(
                    "INSERT INTO integration_states (delivery_id, integration_id, state,"
                    " setup_status, qa_status, updated_at, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        delivery.id,
                        delivery.integration_id,
                        state["state"],
                        state["setup_status"],
                        state["qa_status"],
                        state["updated_at"],
                        now,
                    ),
                )
        return bool(inserted)

    # -- the worker -----------------------------------------------------------------------------

    def due(self, now: datetime, limit: int = 50) -> list[Due]:
        """Pending deliveries due at `now`, oldest first."""
        return self._pending(
            "next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?", (format_ts(now), limit)
        )

    def pending_of(self, integration_id: str, type_: str) -> list[Due]:
        """Every pending delivery of `type_` for the integration, due or waiting for a retry, in
        arrival order: the worker sends them as one event."""
        return self._pending(
            "type = ? AND integration_id = ? ORDER BY received_at, rowid", (type_, integration_id)
        )

    def _pending(self, where: str, params: tuple[Any, ...]) -> list[Due]:
        rows = self._reading(
            "SELECT id, type, integration_id, payload, attempts FROM deliveries"
            f" WHERE status = 'pending' AND {where}",
            params,
        )
        return [
            Due(
                Delivery(row["id"], row["type"], row["integration_id"], json.loads(row["payload"])),
                row["attempts"],
            )
            for row in rows
        ]

    def next_due_at(self) -> str | None:
        """When the earliest pending delivery is due (Kombo's timestamp format), if any."""
        rows = self._reading("SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'")
        return rows[0][0]

    def mark_done(self, attempts: Mapping[str, int], now: datetime) -> None:
        """Deliveries acted on, by id with their attempts so far, all in one transaction."""
        self._finish(attempts, "done", None, now)

    def mark_failed(self, attempts: Mapping[str, int], error: str, now: datetime) -> None:
        """Give up on deliveries; they stay in the ledger for someone to look at."""
        self._finish(attempts, "failed", error, now)

    def _finish(
        self, attempts: Mapping[str, int], status: str, error: str | None, now: datetime
    ) -> None:
        with self._writing(f"mark deliveries {status}") as conn:
            conn.executemany(
                "UPDATE deliveries SET status = ?, attempts = ?, last_error = ?,"
                " next_attempt_at = NULL, finished_at = ? WHERE id = ?",
                [(status, n, _clip(error), format_ts(now), i) for i, n in attempts.items()],
            )

    def mark_retry(self, attempts: Mapping[str, int], error: str, at: datetime) -> None:
        """Deliveries to try again at `at`, all in one transaction."""
        with self._writing("schedule a retry") as conn:
            conn.executemany(
                "UPDATE deliveries SET attempts = ?, last_error = ?, next_attempt_at = ?"
                " WHERE id = ?",
                [(n, _clip(error), format_ts(at), i) for i, n in attempts.items()],
            )

    # -- reading --------------------------------------------------------------------------------

    def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery, in arrival order (tests, and `stagewatch status` later)."""
        rows = self._reading("SELECT * FROM deliveries ORDER BY received_at, rowid")
        return [dict(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Deliveries per status."""
        rows = self._reading("SELECT status, count(*) FROM deliveries GROUP BY status")
        return {row[0]: row[1] for row in rows}

    def integration_states(self) -> list[dict[str, Any]]:
        """The latest reported state of each integration, by Kombo's `updated_at`."""
        rows = self._reading(
            "SELECT integration_id, state, setup_status, qa_status, updated_at, received_at,"
            " delivery_id FROM integration_states AS s WHERE updated_at = (SELECT max(updated_at)"
            " FROM integration_states WHERE integration_id = s.integration_id)"
            " GROUP BY integration_id ORDER BY integration_id"
        )
        return [dict(row) for row in rows]


def _clip(error: str | None) -> str | None:
    return None if error is None else error[:MAX_ERROR_CHARS]
