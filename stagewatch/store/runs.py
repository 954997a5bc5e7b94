"""Runs of a store: begin, resume and end them under the integration's lease, commit, publish marks.

A run streams pages into staging and `commit` applies them in ONE transaction: events, snapshot,
watermark, run row, staging cleared. A crash anywhere before that transaction commits leaves the
store as it was; the next run of the integration takes over the dead run's lock and discards its
staging. The lock is a lease the run renews while it lives (`stagewatch.store.lease`), so a run
killed on any host frees it in time.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from stagewatch import diff
from stagewatch.diff import EVENT_KINDS
from stagewatch.store.connection import BUSY_TIMEOUT_MS, Database, crash_point
from stagewatch.store.errors import LeaseLostError, LockedError, Run, StoreError
from stagewatch.store.lease import RENEWALS_PER_LEASE, LeaseKeeper, machine_id, pid_alive
from stagewatch.timeutil import format_ts, parse_ts

log = logging.getLogger(__name__)

MODES = ("incremental", "full")
# What a listing learnt that the run row keeps beside its counts (see migration 0005).
RUN_FACTS = ("absent_rescued", "jobs_refetched", "jobs_unavailable")
FAILED_STATUSES = ("failed", "not_ready", "unsupported")
LOCK_POLL_SECONDS = 0.2
OTHER_HOST_PUBLISH_GRACE = timedelta(minutes=30)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


def _stats_dict(stats: Mapping[str, Any] | Any | None) -> dict[str, Any]:
    if stats is None:
        return {"requests": None, "retries": None, "waited_seconds": None}
    if not isinstance(stats, Mapping):
        stats = stats.model_dump()
    return {key: stats.get(key) for key in ("requests", "retries", "waited_seconds")}


class Runs:
    """The runs of one database, and the leases this process holds for them."""

    def __init__(self, db: Database, *, lease_seconds: float) -> None:
        self._db = db
        self._lease = timedelta(seconds=lease_seconds)
        self._hostname = socket.gethostname()
        self._machine = machine_id()
        self._keepers: dict[int, LeaseKeeper] = {}

    def integration_of(self, run_id: int, conn=None) -> str:
        row = (
            (conn or self._db.conn)
            .execute("SELECT integration_id FROM sync_runs WHERE id = ?", (run_id,))
            .fetchone()
        )
        if row is None:
            raise StoreError(f"no sync run {run_id}")
        return row[0]

    def stop_keepers(self) -> None:
        """The leases of runs still open stop being renewed: a retry resumes them (`resume`)."""
        for run_id in list(self._keepers):
            self._stop_keeper(run_id)

    def begin(
        self,
        integration_id: str,
        mode: str = "incremental",
        started_at: datetime | None = None,
        window_start: datetime | None = None,
        *,
        wait: float = 0.0,
        from_watermark: bool = False,
    ) -> Run:
        """Record a new run and take the integration's lock, waiting up to `wait` seconds for it.

        `from_watermark=True` (incremental only) starts the window at the integration's watermark
        as it stands once the lock is held, so a run that waited for another lists from where
        that one left off; with no watermark yet the run lists everything and is recorded as
        full. `started_at` defaults to when the lock was taken, not when waiting began.

        The lock is a lease this store renews while the run lives. A lease that ran out, or one
        whose process is dead on this very machine, is taken over: the run that held it is marked
        abandoned with its staging discarded.
        """
        if not isinstance(integration_id, str) or not integration_id:
            raise StoreError("integration_id must be a non-empty string")
        if mode not in MODES:
            raise StoreError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if from_watermark and (mode != "incremental" or window_start is not None):
            raise StoreError("from_watermark needs an incremental run without a window_start")
        deadline = self._db.monotonic() + wait
        while True:
            with self._db.transaction() as conn:
                self._db.lock_integration(conn, integration_id)
                holder = conn.execute(
                    "SELECT * FROM run_locks WHERE integration_id = ?", (integration_id,)
                ).fetchone()
                why = "it held no lock" if holder is None else self._stale(holder)
                if why is not None:
                    started = started_at or self._db.clock()
                    window, run_mode = window_start, mode
                    if from_watermark:
                        window = self._watermark(conn, integration_id)
                        run_mode = "incremental" if window is not None else "full"
                    run_id = self._start_run(conn, integration_id, run_mode, started, window, why)
                    break
            remaining = deadline - self._db.monotonic()
            if remaining <= 0:
                raise LockedError.held_by(holder)
            self._db.sleep(min(LOCK_POLL_SECONDS, remaining))
        self._keep(run_id)
        return Run(run_id, integration_id, run_mode, started, window)

    def _here(self, row: sqlite3.Row) -> bool:
        """Whether the process a run or lock row names ran on this machine, in this pid namespace,
        so its pid means the same process here. The host name alone cannot tell: containers on
        two hosts can share one, and a restarted container reuses its name and its pids."""
        return self._machine is not None and (row["hostname"], row["machine"]) == (
            self._hostname,
            self._machine,
        )

    def _stale(self, holder: sqlite3.Row) -> str | None:
        """Why the lock `holder` may be taken over now, or None while its lease holds."""
        if self._here(holder) and not pid_alive(holder["pid"]):
            return f"process died before committing (pid {holder['pid']} on {holder['hostname']})"
        if holder["lease_expires_at"] <= format_ts(self._db.clock()):
            return (
                f"lease not renewed since {holder['renewed_at']} "
                f"(expired {holder['lease_expires_at']})"
            )
        return None

    def _live(self, holder: sqlite3.Row) -> bool:
        """Whether an operator must not release the lock: its process is alive on this machine,
        or, elsewhere, its lease has not run out."""
        if self._here(holder):
            return pid_alive(holder["pid"])
        return holder["lease_expires_at"] > format_ts(self._db.clock())

    def _start_run(
        self,
        conn: sqlite3.Connection,
        integration_id: str,
        mode: str,
        started: datetime,
        window_start: datetime | None,
        why: str,
    ) -> int:
        """Insert the run and its lock; `why` says why any other running run of the integration
        lost the lock (it is marked abandoned)."""
        taken = self._db.clock()
        now = format_ts(taken)
        run_id = conn.execute(
            "INSERT INTO sync_runs (integration_id, mode, status, started_at, window_start, pid, "
            "hostname, machine) VALUES (?, ?, 'running', ?, ?, ?, ?, ?) RETURNING id",
            (
                integration_id,
                mode,
                format_ts(started),
                _ts(window_start),
                os.getpid(),
                self._hostname,
                self._machine,
            ),
        ).fetchone()[0]
        error = f"{why}; lock taken over by run {run_id} (pid {os.getpid()} on {self._hostname})"
        self._abandon_others(conn, integration_id, run_id, error, now)
        conn.execute(
            "INSERT INTO run_locks (integration_id, run_id, pid, hostname, machine, acquired_at, "
            "renewed_at, lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (integration_id) DO UPDATE SET run_id = excluded.run_id, "
            "pid = excluded.pid, hostname = excluded.hostname, machine = excluded.machine, "
            "acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at, "
            "lease_expires_at = excluded.lease_expires_at",
            (
                integration_id,
                run_id,
                os.getpid(),
                self._hostname,
                self._machine,
                now,
                now,
                format_ts(taken + self._lease),
            ),
        )
        return run_id

    def _abandon_others(
        self, conn: sqlite3.Connection, integration_id: str, run_id: int, error: str, now: str
    ) -> None:
        """Mark every other running run of the integration abandoned, its staging discarded."""
        dead = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM sync_runs WHERE integration_id = ? AND status = 'running' AND id != ?",
                (integration_id, run_id),
            )
        ]
        for dead_id in dead:
            conn.execute(
                "UPDATE sync_runs SET status = 'abandoned', finished_at = ?, error = ? WHERE id = ?",
                (now, error, dead_id),
            )
            self.clear_staging(conn, dead_id)

    def _keep(self, run_id: int) -> None:
        """Renew the run's lease from a thread until the run ends (an in-memory database needs no
        lease: no other connection can see it)."""
        if self._db.in_memory or run_id in self._keepers:
            return
        interval = self._lease.total_seconds() / RENEWALS_PER_LEASE
        # A renewal waits at most an interval for another writer, so stopping never waits long.
        conn = self._db.open_writer(int(min(BUSY_TIMEOUT_MS, interval * 1000)))
        keeper = LeaseKeeper(run_id, conn, partial(self._renew, run_id=run_id), interval)
        self._keepers[run_id] = keeper
        keeper.start()

    def _renew(self, conn: sqlite3.Connection, *, run_id: int) -> bool:
        """Push the run's lease on by its length from now; False once the run lost its lock."""
        now = self._db.clock()
        renewed = conn.execute(
            "UPDATE run_locks SET renewed_at = ?, lease_expires_at = ? WHERE run_id = ?",
            (format_ts(now), format_ts(now + self._lease), run_id),
        )
        return renewed.rowcount == 1

    def lease_keeper(self, run_id: int) -> LeaseKeeper | None:
        """The keeper renewing the run's lease in this store, if any (tests drive its `renew`)."""
        return self._keepers.get(run_id)

    def _stop_keeper(self, run_id: int) -> None:
        keeper = self._keepers.pop(run_id, None)
        if keeper is not None:
            keeper.stop()

    @contextmanager
    def _ending(self, run_id: int) -> Iterator[None]:
        """Around a transaction that ends the run: its lease stops being renewed once the run
        ended or lost its lock. After any other failure the run still holds its lease."""
        try:
            yield
        except LeaseLostError:
            self._stop_keeper(run_id)
            raise
        self._stop_keeper(run_id)

    def resume(self, run: Run) -> bool:
        """Carry on with a run begun earlier (a retried flow run resumes its staging): True when
        it still runs and holds its lock, which this process then holds and renews; False when
        it ended or lost its lock, and a new run must begin."""
        with self._db.transaction() as conn:
            try:
                self.running(conn, run.id)
            except StoreError:
                return False
            now = self._db.clock()
            me = (os.getpid(), self._hostname, self._machine)
            conn.execute(
                "UPDATE run_locks SET pid = ?, hostname = ?, machine = ?, renewed_at = ?, "
                "lease_expires_at = ? WHERE run_id = ?",
                (*me, format_ts(now), format_ts(now + self._lease), run.id),
            )
            conn.execute(
                "UPDATE sync_runs SET pid = ?, hostname = ?, machine = ? WHERE id = ?",
                (*me, run.id),
            )
        self._keep(run.id)
        return True

    def release_lock(self, integration_id: str, *, force: bool = False) -> dict[str, Any]:
        """For operators: release the integration's lock and mark its run abandoned, staging
        discarded; returns the lock row as it was. A live lock (see `_live`) raises LockedError
        unless `force`; no lock at all is a StoreError."""
        now = format_ts(self._db.clock())
        with self._db.transaction() as conn:
            self._db.lock_integration(conn, integration_id)
            holder = conn.execute(
                "SELECT * FROM run_locks WHERE integration_id = ?", (integration_id,)
            ).fetchone()
            if holder is None:
                raise StoreError(
                    f"integration {integration_id!r} holds no lock: nothing to release"
                )
            live = self._live(holder)
            if live and not force:
                raise LockedError.held_by(holder)
            error = f"lock released by an operator at {now}" + (" while live" if live else "")
            conn.execute(
                "UPDATE sync_runs SET status = 'abandoned', finished_at = ?, error = ? "
                "WHERE id = ? AND status = 'running'",
                (now, error, holder["run_id"]),
            )
            self.clear_staging(conn, holder["run_id"])
            conn.execute("DELETE FROM run_locks WHERE integration_id = ?", (integration_id,))
        return dict(holder)

    # -- the waiting place of triggered syncs (see stagewatch.coalesce) ---------------------------

    def lock_held(self, integration_id: str) -> bool:
        """Whether a run holds the integration's lock and may not be taken over yet."""
        holder = self._db.conn.execute(
            "SELECT * FROM run_locks WHERE integration_id = ?", (integration_id,)
        ).fetchone()
        return holder is not None and self._stale(holder) is None

    def take_waiting_place(self, integration_id: str, token: str) -> str | None:
        """Take the integration's one waiting place for `token`; None when taken, else the token
        of the live waiter holding it, whose count of coalesced syncs goes up by one. A place
        whose waiter died or stopped renewing is taken over."""
        with self._db.transaction() as conn:
            self._db.lock_integration(conn, integration_id)  # PostgreSQL: one taker at a time
            row = conn.execute(
                "SELECT * FROM sync_waiters WHERE integration_id = ?", (integration_id,)
            ).fetchone()
            if row is not None and row["token"] != token and self._live(row):
                conn.execute(
                    "UPDATE sync_waiters SET coalesced = coalesced + 1 WHERE integration_id = ?",
                    (integration_id,),
                )
                return row["token"]
            now = self._db.clock()
            conn.execute(
                "INSERT INTO sync_waiters (integration_id, token, pid, hostname, machine, since, "
                "renewed_at, lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (integration_id) DO UPDATE SET token = excluded.token, "
                "pid = excluded.pid, hostname = excluded.hostname, machine = excluded.machine, "
                "since = excluded.since, renewed_at = excluded.renewed_at, "
                "lease_expires_at = excluded.lease_expires_at, coalesced = 0",
                (
                    integration_id,
                    token,
                    os.getpid(),
                    self._hostname,
                    self._machine,
                    format_ts(now),
                    format_ts(now),
                    format_ts(now + self._lease),
                ),
            )
        return None

    def renew_waiting_place(self, integration_id: str, token: str) -> bool:
        """Push the lease on the place on; False when `token` no longer holds it."""
        now = self._db.clock()
        with self._db.transaction() as conn:
            renewed = conn.execute(
                "UPDATE sync_waiters SET renewed_at = ?, lease_expires_at = ? "
                "WHERE integration_id = ? AND token = ?",
                (format_ts(now), format_ts(now + self._lease), integration_id, token),
            )
        return renewed.rowcount == 1

    def leave_waiting_place(self, integration_id: str, token: str) -> int | None:
        """Give the place up; how many syncs coalesced into it, None when `token` held none."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT coalesced FROM sync_waiters WHERE integration_id = ? AND token = ?",
                (integration_id, token),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "DELETE FROM sync_waiters WHERE integration_id = ? AND token = ?",
                (integration_id, token),
            )
        return row[0]

    def running(self, conn: sqlite3.Connection, run_id: int) -> str:
        """The run's integration, after checking the run is running and still holds its lock
        (and, on PostgreSQL, locking the integration for the rest of the transaction)."""
        if self._db.postgres:
            self._db.lock_integration(conn, self.integration_of(run_id, conn))
        row = conn.execute(
            "SELECT r.integration_id, r.status, r.error, l.run_id AS holder FROM sync_runs AS r "
            "LEFT JOIN run_locks AS l ON l.integration_id = r.integration_id WHERE r.id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise StoreError(f"no sync run {run_id}")
        # Only a takeover or an operator abandons a run; its error says which.
        lost = row["status"] == "abandoned" or (
            row["status"] == "running" and row["holder"] != run_id
        )
        if lost:
            holder = row["holder"]
            reason = row["error"] or (f"run {holder} holds it" if holder else "no run holds it")
            raise LeaseLostError(run_id, row["integration_id"], reason)
        if row["status"] != "running":
            raise StoreError(f"sync run {run_id} is {row['status']}, not running")
        return row["integration_id"]

    def clear_staging(self, conn: sqlite3.Connection, run_id: int) -> None:
        for table in ("staged_seen", "staged_applications", "staged_jobs"):
            # On PostgreSQL, another run's rows committed after that look would go too.
            if (
                self._db.postgres
                or conn.execute(
                    f"SELECT 1 FROM {table} WHERE run_id < ? OR run_id > ? LIMIT 1",
                    (run_id, run_id),
                ).fetchone()
            ):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            else:
                # No other run is staging: SQLite's truncate optimisation frees the pages at once.
                conn.execute(f"DELETE FROM {table}")

    def _finish(
        self,
        conn: sqlite3.Connection,
        run_id: int,
        integration_id: str,
        status: str,
        *,
        error: str | None,
        stats: Mapping[str, Any] | Any | None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        fields = {
            "status": status,
            "finished_at": format_ts(self._db.clock()),
            "error": error,
            "quarantined": conn.execute(
                "SELECT count(*) FROM quarantined WHERE run_id = ?", (run_id,)
            ).fetchone()[0],
            **_stats_dict(stats),
            **(values or {}),
        }
        assignments = ", ".join(f"{name} = :{name}" for name in fields)
        conn.execute(f"UPDATE sync_runs SET {assignments} WHERE id = :id", {**fields, "id": run_id})
        self.clear_staging(conn, run_id)
        conn.execute(
            "DELETE FROM run_locks WHERE integration_id = ? AND run_id = ?",
            (integration_id, run_id),
        )

    def commit(
        self,
        run_id: int,
        *,
        observed_at: datetime,
        complete: bool = True,
        next_watermark: datetime | None = None,
        stats: Mapping[str, Any] | Any | None = None,
        error: str | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> dict[str, int]:
        """Apply the run in one transaction and return its event counts per kind.

        `complete=False` (the listing ended early) discards what was staged: partial data cannot
        tell a deletion from a page not fetched, and the next run fetches it again. Nothing but
        the run row changes; the watermark stays. `next_watermark` is where the run proposes the
        next listing to start (see `_advance_watermark` for when it moves there); `facts` are
        counts the listing learnt, kept on the run row (`RUN_FACTS`).

        The commit is durable when this returns; copying it from the WAL into the database file
        goes on in a background thread (see `_checkpoint_in_background`, `wait_for_checkpoints`).
        """
        unknown = set(facts or ()) - set(RUN_FACTS)
        if unknown:
            raise StoreError(f"unknown run facts {sorted(unknown)}; known: {list(RUN_FACTS)}")
        crash_point("commit:start")
        with (
            self._ending(run_id),
            self._db.checkpoint_in_background(),
            self._db.transaction() as conn,
        ):
            integration_id = self.running(conn, run_id)
            if not complete:
                counts = dict.fromkeys(EVENT_KINDS, 0)
                values = {"observed_at": format_ts(observed_at), "events": 0, **counts}
                error = error or "listing ended early; staged records discarded"
                self._finish(conn, run_id, integration_id, "incomplete", error=error, stats=stats,
                             values=values)  # fmt: skip
                return counts
            values = self._apply(conn, run_id, integration_id, observed_at)
            values["next_watermark"] = self._advance_watermark(
                conn, run_id, integration_id, _ts(next_watermark)
            )
            values.update(facts or {})
            self._finish(conn, run_id, integration_id, "succeeded", error=None, stats=stats,
                         values=values)  # fmt: skip
            crash_point("commit:before_commit")
        return {kind: values[kind] for kind in EVENT_KINDS}

    def _apply(
        self, conn: sqlite3.Connection, run_id: int, integration_id: str, observed_at: datetime
    ) -> dict[str, Any]:
        """Diff the run's staging into the change log and snapshot; returns the run row's counts.

        The run is observed no earlier than the integration's previous run: a clock that ran ahead
        (no `Date` header from Kombo) must neither fail every later run nor date a change before
        the observation it follows.
        """
        mode = conn.execute("SELECT mode FROM sync_runs WHERE id = ?", (run_id,)).fetchone()[0]
        previous = conn.execute(
            "SELECT max(observed_at) FROM sync_runs WHERE integration_id = ? "
            "AND status = 'succeeded'",
            (integration_id,),
        ).fetchone()[0]
        observed = format_ts(observed_at)
        if previous is not None and observed < previous:
            log.warning(
                "run %d of %s observed at %s, before the previous run's %s (a clock ahead?); "
                "recorded at %s",
                run_id, integration_id, observed, previous, previous,
            )  # fmt: skip
            observed = previous
        postgres = self._db.postgres
        diff.apply_jobs(
            conn, run_id=run_id, integration_id=integration_id, observed_at=observed,
            postgres=postgres,
        )  # fmt: skip
        applied = diff.apply_applications(
            conn,
            run_id=run_id,
            integration_id=integration_id,
            observed_at=observed,
            previous_observed_at=previous,
            full=mode == "full",
            postgres=postgres,
        )
        crash_point("commit:after_diff")
        counts = dict.fromkeys(EVENT_KINDS, 0)
        counts.update(
            conn.execute(
                "SELECT kind, count(*) FROM events WHERE sync_run_id = ? GROUP BY kind", (run_id,)
            ).fetchall()
        )
        jobs_seen = conn.execute(
            "SELECT count(DISTINCT job_id) FROM staged_jobs WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        return {
            "observed_at": observed,
            "events": sum(counts.values()),
            **counts,
            "jobs_seen": jobs_seen,
            "applications_seen": applied.listed,
            "absent_deleted": applied.absent if mode == "full" else None,
        }

    def _advance_watermark(
        self, conn: sqlite3.Connection, run_id: int, integration_id: str, proposed: str | None
    ) -> str | None:
        """Move the integration's watermark to `proposed` when that loses nothing; returns the
        watermark the run set, None when it set none.

        It never moves backwards, and never past a gap no run listed: a run that listed from a
        `since` later than the stored watermark (or with no watermark yet) leaves it where it is,
        so incremental runs still list what changed in between.
        """
        if proposed is None:
            return None
        window_start = conn.execute(
            "SELECT window_start FROM sync_runs WHERE id = ?", (run_id,)
        ).fetchone()[0]
        row = conn.execute(
            "SELECT watermark FROM watermarks WHERE integration_id = ?", (integration_id,)
        ).fetchone()
        stored = row[0] if row else None
        if window_start is not None and (stored is None or window_start > stored):
            return None
        if stored is not None and proposed <= stored:
            return None
        conn.execute(
            "INSERT INTO watermarks (integration_id, watermark, run_id, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (integration_id) DO UPDATE SET "
            "watermark = excluded.watermark, run_id = excluded.run_id, "
            "updated_at = excluded.updated_at",
            (integration_id, proposed, run_id, format_ts(self._db.clock())),
        )
        return proposed

    def fail(
        self,
        run_id: int,
        *,
        status: str = "failed",
        error: str,
        stats: Mapping[str, Any] | Any | None = None,
    ) -> None:
        """End a run that could not list: staging discarded, lock released, nothing else changes."""
        if status not in FAILED_STATUSES:
            raise StoreError(f"status must be one of {', '.join(FAILED_STATUSES)}, not {status!r}")
        with self._ending(run_id), self._db.transaction() as conn:
            integration_id = self.running(conn, run_id)
            self._finish(conn, run_id, integration_id, status, error=error, stats=stats)

    def mark_published(self, run_id: int, *, note: str | None = None) -> bool:
        """Record that a succeeded run's changes went out to Prefect, or with `note` how they were
        settled otherwise. The first mark stands: returns False when the run was marked already."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT status, published_at FROM sync_runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no sync run {run_id}")
            if row["status"] != "succeeded":
                raise StoreError(
                    f"sync run {run_id} is {row['status']}: only a succeeded run has changes "
                    "to publish"
                )
            # Conditional, so that of two processes marking at once only the first counts.
            marked = conn.execute(
                "UPDATE sync_runs SET published_at = ?, publish_note = ? "
                "WHERE id = ? AND published_at IS NULL",
                (format_ts(self._db.clock()), note, run_id),
            )
            return marked.rowcount == 1

    def unpublished(self, integration_id: str) -> list[dict[str, Any]]:
        """Succeeded runs of the integration whose changes never went out and that no live process
        will still publish, oldest first.

        A run commits (releasing the lock) before it publishes, so a run whose process is alive on
        this machine (`_here`) is left to it. This very process's runs count (a flow run retried
        after its publish failed), and so does a run elsewhere, whose process cannot be checked,
        once it finished `OTHER_HOST_PUBLISH_GRACE` ago.
        """
        cutoff = format_ts(self._db.clock() - OTHER_HOST_PUBLISH_GRACE)
        rows = self._db.conn.execute(
            "SELECT * FROM sync_runs WHERE integration_id = ? AND status = 'succeeded' "
            "AND published_at IS NULL ORDER BY id",
            (integration_id,),
        )
        return [dict(row) for row in rows if self._publisher_gone(row, cutoff)]

    def _publisher_gone(self, run: sqlite3.Row, cutoff: str) -> bool:
        if not self._here(run):
            return run["finished_at"] <= cutoff
        return run["pid"] == os.getpid() or not pid_alive(run["pid"])

    def watermark(self, integration_id: str) -> datetime | None:
        return self._watermark(self._db.conn, integration_id)

    @staticmethod
    def _watermark(conn: sqlite3.Connection, integration_id: str) -> datetime | None:
        row = conn.execute(
            "SELECT watermark FROM watermarks WHERE integration_id = ?", (integration_id,)
        ).fetchone()
        return parse_ts(row[0]) if row else None
