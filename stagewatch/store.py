"""The SQLite store: snapshot, change log, sync runs, watermarks, locks and staging in one file.

A run streams pages into staging tables (one short transaction per batch of about 20 pages) and
`commit_run` applies them in ONE transaction: events, snapshot, watermark, run row, staging cleared.
A crash anywhere before that transaction commits leaves the store as it was; the next run of the
integration takes over the dead run's lock and discards its staging. The lock is a lease the run
renews while it lives (see `stagewatch.lease`), so a run killed on any host frees it in time.

Threads: a `Store` owns one SQLite connection and must stay in the thread that opened it (sqlite3
enforces this). Open one `Store(path)` per thread: runs of different integrations may share the file
from several threads or processes; WAL lets readers proceed while one writer commits. A store also
runs helper threads with connections of their own: an application stager's worker (stopped by the
stager's `close`), the checkpoint after `commit_run` (waited for by the store's `close`) and a lease
keeper per run it holds (stopped when the run ends, loses its lock, or the store closes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from stagewatch import diff
from stagewatch.diff import EVENT_FIELDS, EVENT_KINDS
from stagewatch.errors import StagewatchError
from stagewatch.kombo.models import Application, Job, Quarantined
from stagewatch.lease import (
    DEFAULT_LEASE_SECONDS,
    RENEWALS_PER_LEASE,
    LeaseKeeper,
    machine_id,
    pid_alive,
)
from stagewatch.migrations import MIGRATION_NAMES, MIGRATION_SET, migrations
from stagewatch.runtime import listing_runtime
from stagewatch.timeutil import format_ts, parse_ts, utcnow

__all__ = [
    "EVENT_FIELDS",
    "EVENT_KINDS",
    "LeaseLostError",
    "LockedError",
    "Run",
    "Store",
    "StoreError",
    "wait_for_checkpoints",
]

log = logging.getLogger(__name__)

MODES = ("incremental", "full")
# What a listing learnt that the run row keeps beside its counts (see migration 0005).
RUN_FACTS = ("absent_rescued", "jobs_refetched", "jobs_unavailable")
FAILED_STATUSES = ("failed", "not_ready", "unsupported")
BUSY_TIMEOUT_MS = 60_000
LOCK_POLL_SECONDS = 0.2
WAL_SWITCH_POLL_SECONDS = 0.02
# The page cache, and also what SQLite's sorter holds in memory before it spills to a temporary
# file: commit_run's sorts of a 1M-application run filled it. 32 MiB instead of 64 cut the peak of a
# 1M first sync from 233 to 169 MB with no slower commit (store_bench at 1M: 5.3-5.5 s vs 5.7-7.5 s).
CACHE_SIZE_KIB = 32 * 1024
TEMP_CACHE_SIZE_KIB = 16 * 1024
# A stager's worker: its hash lookups seek at random through the live index; a bigger cache barely
# helps them (1M applications: 3.5 s of seeks with a 64 MiB cache, 3.0 s with 1 GiB).
STAGER_CACHE_SIZE_KIB = 16 * 1024
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file keeps after a checkpoint
WAL_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default
CHECKPOINT_THREAD = "stagewatch-checkpoint"
OTHER_HOST_PUBLISH_GRACE = timedelta(minutes=30)
CRASH_ENV = "STAGEWATCH_TEST_CRASH_AT"
# Records an ApplicationStager holds before writing them in one transaction. Per-page transactions
# spent most of a 1M listing committing: each one rewrites the b-tree pages its random ids touch.
STAGING_BATCH_RECORDS = 5000
# ...or after this long, so staging never lags a slow listing by more than a moment (a crash drill
# and `stagewatch status` readers see how far a listing got).
STAGING_FLUSH_SECONDS = 0.2

_CANDIDATE_KEEP = ("id", "remote_id", "first_name", "last_name")
# What `status` shows of a held lock: run_locks column -> status field.
LOCK_STATUS_COLUMNS = {
    "run_id": "locked_by_run_id",
    "pid": "locked_by_pid",
    "hostname": "locked_by_hostname",
    "renewed_at": "lock_renewed_at",
    "lease_expires_at": "lock_expires_at",
}


class StoreError(StagewatchError):
    """The database cannot be used as asked: missing, not a stagewatch store, misused run."""


class LockedError(StoreError):
    """Another live run holds the integration's lock."""

    def __init__(
        self,
        integration_id: str,
        run_id: int,
        pid: int,
        hostname: str,
        since: str,
        lease_expires_at: str,
    ):
        self.integration_id = integration_id
        self.run_id = run_id
        self.pid = pid
        self.hostname = hostname
        self.since = since
        self.lease_expires_at = lease_expires_at
        super().__init__(
            f"integration {integration_id!r} is locked by run {run_id} "
            f"(pid {pid} on {hostname}, started {since}, lease expires {lease_expires_at})"
        )

    @classmethod
    def held_by(cls, holder: sqlite3.Row) -> LockedError:
        return cls(
            holder["integration_id"],
            holder["run_id"],
            holder["pid"],
            holder["hostname"],
            holder["acquired_at"],
            holder["lease_expires_at"],
        )


class LeaseLostError(StoreError):
    """The run's lock was taken over (its lease ran out, or an operator released it): the run must
    stop without committing. `reason` names who took it over."""

    def __init__(self, run_id: int, integration_id: str, reason: str):
        self.run_id = run_id
        self.integration_id = integration_id
        self.reason = reason
        super().__init__(f"sync run {run_id} lost the lock of {integration_id!r}: {reason}")


@dataclass(frozen=True)
class Run:
    id: int
    integration_id: str
    mode: str
    started_at: datetime
    window_start: datetime | None


def _crash_point(name: str) -> None:
    """Test hook: SIGKILL this process at a named point, to prove a crash there loses nothing."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _scrub(value: Any) -> Any:
    """Drop remote_data everywhere and candidate contact data, for payloads no model filtered."""
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            if key == "remote_data":
                continue
            if key == "candidate" and isinstance(item, dict):
                item = {k: item[k] for k in _CANDIDATE_KEEP if k in item}
            cleaned[key] = _scrub(item)
        return cleaned
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _stats_dict(stats: Mapping[str, Any] | Any | None) -> dict[str, Any]:
    if stats is None:
        return {"requests": None, "retries": None, "waited_seconds": None}
    if not isinstance(stats, Mapping):
        stats = stats.model_dump()
    return {key: stats.get(key) for key in ("requests", "retries", "waited_seconds")}


# A batch arrives as a JSON array of [id, hash] pairs. One row comes back, the JSON array of the
# positions whose hash the live snapshot does not hold: every index seek runs inside a single
# sqlite3 step, which releases the GIL, and the GIL is needed only for the few changed records.
# An unparseable record's pair has no hash: it is listed, but has nothing to stage.
_CHANGED_POSITIONS = """
SELECT json_group_array(b.key) FROM json_each(?2) AS b
WHERE json_type(b.value, '$[1]') = 'text' AND NOT EXISTS (
    SELECT 1 FROM applications AS a INDEXED BY applications_content
    WHERE a.integration_id = ?1 AND a.application_id = json_extract(b.value, '$[0]')
        AND a.content_hash = json_extract(b.value, '$[1]') AND a.deleted_observed_at IS NULL
)
"""

_RESERVE_SEQ = """
UPDATE sync_runs SET staged_records = staged_records + ? WHERE id = ? RETURNING staged_records
"""

# One statement per batch: each [id, hash] pair's seq is first + its position.
_STAGE_SEEN = """
INSERT INTO staged_seen (run_id, application_id, seq)
SELECT ?1, json_extract(value, '$[0]'), ?2 + key FROM json_each(?3)
"""


def _stamp_from_json(path: str) -> str:
    """SQL for a timestamp of the staged record `r` in `format_ts`'s form.

    pydantic writes a UTC datetime as `YYYY-MM-DDTHH:MM:SSZ`, or with six fraction digits when it
    has microseconds; `format_ts` keeps milliseconds, truncated. (The models' validator makes every
    timestamp UTC.) A test checks the two agree on random times.
    """
    value = f"json_extract(r, '{path}')"
    return (
        f"CASE length({value}) WHEN 20 THEN substr({value}, 1, 19) || '.000Z' "
        f"ELSE substr({value}, 1, 23) || 'Z' END"
    )


_INSERT_STAGED = """INSERT INTO staged_applications (
    run_id, seq, application_id, content_hash, raw, remote_id, job_id, stage_id, stage_name,
    outcome, rejection_reason_name, rejected_at, remote_deleted_at, changed_at,
    remote_created_at, remote_updated_at
)"""

# The columns the diff reads are taken out of the stored JSON by SQLite, which parses each record
# once (its JSON cache) while the GIL is free for the thread parsing the next page; in Python this
# cost as much as serialising the record. The expressions mirror `Application.stage_id`,
# `stage_name` and `effective_job_id`. SQLite's json_extract cuts a string at an escaped NUL, so a
# record holding one takes `_STAGE_CHANGED_FROM_MODEL` instead.
# A batch's records arrive as one JSON array of [seq, id, hash, raw] in one statement: a stager's
# worker would otherwise wait for the GIL once per row (executemany steps each row) while the
# caller's thread serialises the next batch.
_STAGE_CHANGED = f"""
WITH batch AS MATERIALIZED (
    SELECT json_extract(value, '$[0]') AS seq, json_extract(value, '$[1]') AS application_id,
        json_extract(value, '$[2]') AS content_hash, json_extract(value, '$[3]') AS r
    FROM json_each(?2)
)
{_INSERT_STAGED}
SELECT ?1, seq, application_id, content_hash, r, json_extract(r, '$.remote_id'),
    coalesce(nullif(json_extract(r, '$.job_id'), ''), json_extract(r, '$.job.id')),
    coalesce(json_extract(r, '$.current_stage.id'), json_extract(r, '$.current_stage_id')),
    json_extract(r, '$.current_stage.name'), json_extract(r, '$.outcome'),
    json_extract(r, '$.rejection_reason_name'), {_stamp_from_json("$.rejected_at")},
    {_stamp_from_json("$.remote_deleted_at")}, {_stamp_from_json("$.changed_at")},
    {_stamp_from_json("$.remote_created_at")}, {_stamp_from_json("$.remote_updated_at")}
FROM batch
"""

_STAGE_CHANGED_FROM_MODEL = f"""
{_INSERT_STAGED} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_ESCAPED_NUL = b"\\u0000"


def _row_from_model(run_id: int, seq: int, app: Application, digest: str, raw: bytes) -> tuple:
    return (
        run_id,
        seq,
        app.id,
        digest,
        raw.decode(),
        app.remote_id,
        app.effective_job_id,
        app.stage_id,
        app.stage_name,
        app.outcome,
        app.rejection_reason_name,
        _ts(app.rejected_at),
        _ts(app.remote_deleted_at),
        _ts(app.changed_at),
        _ts(app.remote_created_at),
        _ts(app.remote_updated_at),
    )


_ABSENT = """
SELECT application_id FROM applications INDEXED BY applications_content
WHERE integration_id = ?1 AND deleted_observed_at IS NULL
EXCEPT
SELECT application_id FROM staged_seen WHERE run_id = ?2
"""

_STALE_JOBS = """
WITH needed AS (
    SELECT DISTINCT job_id, stage_id FROM staged_applications
    WHERE run_id = ?2 AND job_id IS NOT NULL
)
SELECT DISTINCT n.job_id FROM needed AS n
WHERE NOT EXISTS (SELECT 1 FROM staged_jobs AS s WHERE s.run_id = ?2 AND s.job_id = n.job_id)
    AND (
        NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.integration_id = ?1 AND j.job_id = n.job_id)
        OR n.stage_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM job_stages AS js
            WHERE js.integration_id = ?1 AND js.job_id = n.job_id AND js.stage_id = n.stage_id
        )
    )
ORDER BY n.job_id
"""

_STAGE_JOB = """
INSERT INTO staged_jobs (
    run_id, job_id, remote_id, name, status, changed_at, remote_created_at, remote_updated_at,
    remote_deleted_at, stages, content_hash, raw
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def _encode(apps: Iterable[Application]) -> list[tuple[Application, bytes, str]]:
    """Each record with its stored form and that form's hash.

    The stored form is pydantic's JSON of the parsed record (the models leave remote_data out):
    fields in model order, timestamps normalised to UTC, so one record always gives the same bytes
    and hash (sorting keys too would cost three times as much). Serialising and hashing are most of
    staging's cost, so the loop stays flat, without a helper call per record.
    """
    sha1 = hashlib.sha1
    encoded = []
    for app in apps:
        raw = app.__pydantic_serializer__.to_json(app)
        encoded.append((app, raw, sha1(raw, usedforsecurity=False).hexdigest()))
    return encoded


def _pairs(encoded: list[tuple[Application, bytes, str]], unparsed: Iterable[str] = ()) -> str:
    """The batch's [id, hash] pairs as JSON, in staging order, then [id, null] for each record
    listed but unparseable: noted as listed, so no listing mistakes it for a vanished one."""
    pairs: list[tuple[str, str | None]] = [(app.id, digest) for app, _, digest in encoded]
    pairs.extend((record_id, None) for record_id in unparsed)
    return json.dumps(pairs)


def _changed_positions(conn: sqlite3.Connection, integration_id: str, pairs: str) -> list[int]:
    """Where in `pairs` (see `_pairs`) a record differs from the live snapshot, or is new to it."""
    return json.loads(conn.execute(_CHANGED_POSITIONS, (integration_id, pairs)).fetchone()[0])


def wait_for_checkpoints() -> None:
    """Wait until every background checkpoint of this process (see `Store.commit_run`) is done:
    until then the WAL still holds pages the database file does not."""
    for thread in threading.enumerate():
        if thread.name == CHECKPOINT_THREAD:
            thread.join()


class ApplicationStager:
    """Stages pages of applications in batches, one transaction per batch instead of per page: a
    batch is handed over once it holds `batch_records` records or `flush_seconds` after the last one.

    The caller's thread serialises and hashes a batch (pydantic, holding the GIL); a worker thread
    with its own connection then looks up the stored hashes of the batch's ids and writes it,
    while the caller serialises the next one. The worker's SQLite statements run outside the GIL,
    on the other core. At most one batch is with the worker at a time. Reading outside the write
    transaction is safe: the run holds its integration's lock, so no other run can change that
    integration's snapshot, and the write checks the lock.

    `flush` hands over what is buffered and returns once everything is written; it raises what a
    write raised. Records still buffered when the listing fails are never staged: an unfinished
    listing is discarded at commit and listed again by the retry, so `flush` is for a listing that
    ended. Use it as a context manager (or call `close`) to stop the worker.
    """

    def __init__(
        self,
        store: Store,
        run_id: int,
        batch_records: int,
        flush_seconds: float,
        monotonic: Callable[[], float],
    ) -> None:
        if batch_records < 1:
            raise StoreError(f"batch_records must be at least 1, not {batch_records}")
        self._store = store
        self._run_id = run_id
        self._integration_id = store.run(run_id)["integration_id"]
        self._batch_records = batch_records
        self._flush_seconds = flush_seconds
        self._monotonic = monotonic
        self._flushed_at = monotonic()
        # Application id -> its last record in this batch, or None when it was unparseable.
        self._pending: dict[str, Application | None] = {}
        self._worker: ThreadPoolExecutor | None = None
        self._runtime = ExitStack()
        self._written: Future[None] | None = None
        self._writer: sqlite3.Connection | None = None

    def __enter__(self) -> ApplicationStager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def buffered(self) -> int:
        """Records waiting for their batch to fill (not yet handed to the worker)."""
        return len(self._pending)

    def __call__(
        self, run_id: int, apps: Iterable[Application], unparsed_ids: Iterable[str] = ()
    ) -> None:
        """Buffer a page: its records, and the ids of its records that could not be parsed (noted
        as listed, their stored snapshot kept)."""
        if run_id != self._run_id:
            raise StoreError(f"this stager stages run {self._run_id}, not run {run_id}")
        pending = self._pending
        for app in apps:
            pending[app.id] = app
        for record_id in unparsed_ids:
            pending[record_id] = None
        if (
            len(self._pending) >= self._batch_records
            or self._monotonic() - self._flushed_at >= self._flush_seconds
        ):
            self._hand_over()

    def flush(self) -> None:
        """Write everything buffered and wait until the worker is done."""
        self._hand_over()
        self._wait()

    def _hand_over(self) -> None:
        self._flushed_at = self._monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        encoded = _encode(app for app in pending.values() if app is not None)
        unparsed = [record_id for record_id, app in pending.items() if app is None]
        if self._store._in_memory:  # a second connection would see another database
            pairs = _pairs(encoded, unparsed)
            self._store._stage_encoded(
                self._store._conn, self._run_id, encoded, len(unparsed), pairs, None
            )
            return
        self._wait()
        if self._worker is None:
            self._runtime.enter_context(listing_runtime())
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="stagewatch-stager")
        self._written = self._worker.submit(self._write, encoded, unparsed)

    def _wait(self) -> None:
        written, self._written = self._written, None
        if written is not None:
            written.result()

    def _write(self, encoded: list[tuple[Application, bytes, str]], unparsed: list[str]) -> None:
        """Runs in the worker, on the connection it opens on first use. The lookup runs before the
        write transaction, so other writers are not kept waiting for it."""
        if self._writer is None:
            self._writer = self._store._open_writer()
            self._writer.execute(f"PRAGMA cache_size = -{STAGER_CACHE_SIZE_KIB}")
        pairs = _pairs(encoded, unparsed)
        changed = _changed_positions(self._writer, self._integration_id, pairs)
        self._store._stage_encoded(
            self._writer, self._run_id, encoded, len(unparsed), pairs, changed
        )

    def close(self) -> None:
        """Stop the worker once its batch is written (a failure is for `flush` to raise, so it is
        dropped here); records not handed over are dropped."""
        self._pending = {}
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None
        self._written = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._runtime.close()


class Store:
    """Open (and create or migrate) a stagewatch database; `readonly=True` never writes or creates.

    `lease_seconds` is how long the lock of a run this store begins outlives the run's last
    renewal (`STAGEWATCH_LOCK_LEASE_SECONDS` through `Settings`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        if not lease_seconds > 0:
            raise StoreError(f"lease_seconds must be positive, not {lease_seconds}")
        self.path = Path(path)
        self.readonly = readonly
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        self._lease = timedelta(seconds=lease_seconds)
        self._hostname = socket.gethostname()
        self._machine = machine_id()
        self._keepers: dict[int, LeaseKeeper] = {}
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_wanted = False
        self._conn = self._connect()
        try:
            self._prepare()
        except BaseException:
            self._conn.close()
            raise

    # -- opening -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            conn = self._connect_readonly()
        else:
            if self.path.is_dir():
                raise StoreError(f"{self.path} is a directory, not a database file")
            self._check_writable()
            try:
                conn = sqlite3.connect(self.path, isolation_level=None)
            except sqlite3.OperationalError as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    def _check_writable(self) -> None:
        """A store that syncs writes the file and, beside it, its -wal and -shm files."""
        if self._in_memory:
            return
        directory = self.path.resolve().parent
        if not directory.is_dir():
            raise StoreError(f"cannot create {self.path}: no directory {directory}")
        if not os.access(directory, os.W_OK):
            raise StoreError(
                f"cannot write {self.path}: its directory {directory} is not writable (read-only "
                "storage?); the read-only commands (changes, history, status, schema) still work"
            )
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise StoreError(f"cannot write {self.path}: the file is read-only")

    def _connect_readonly(self) -> sqlite3.Connection:
        """A connection that never writes. mode=rw never creates the file and query_only refuses
        every write (mode=ro would leave empty -wal/-shm files behind, which a read-only connection
        cannot remove). On read-only storage, where SQLite cannot create the -shm file a WAL
        database needs, the file is read as immutable: nothing there can change it, and with no
        -wal file beside it the file alone holds every commit."""
        if not self.path.is_file():
            raise StoreError(f"no stagewatch database at {self.path}")
        uri = self.path.resolve().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=rw", uri=True, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.DatabaseError as exc:
            conn.close()
            writable = os.access(self.path.resolve().parent, os.W_OK)
            if writable or not isinstance(exc, sqlite3.OperationalError):
                raise StoreError(f"{self.path} is not a SQLite database ({exc})") from None
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size:
            raise StoreError(
                f"cannot read {self.path}: it is on read-only storage with an unfinished "
                f"write-ahead log ({wal.name}); open it once where it is writable, or copy both"
            )
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)

    def _prepare(self) -> None:
        try:
            tables = {
                row[0]
                for row in self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                )
            }
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a SQLite database ({exc})") from exc
        applied = self._applied_migrations(tables)
        if tables and not applied:
            raise StoreError(
                f"{self.path} is a SQLite database but not a stagewatch one "
                "(no stagewatch migrations recorded)"
            )
        unknown = [name for name in applied if name not in MIGRATION_NAMES]
        if unknown:
            raise StoreError(
                f"{self.path} was written by a newer stagewatch (unknown migrations: "
                f"{', '.join(unknown)})"
            )
        pending = [name for name in MIGRATION_NAMES if name not in applied]
        if self.readonly:
            if not tables:
                raise StoreError(f"{self.path} is not a stagewatch database (it is empty)")
            if pending:
                raise StoreError(
                    f"{self.path} needs migrations {', '.join(pending)}: "
                    "open it once with a command that writes (a sync) to upgrade it"
                )
        else:
            self._enable_wal()
            self._tune(self._conn)
            if pending:
                self._migrate()
        # Bounded caches: scratch tables and sorts spill to temporary files rather than grow.
        self._conn.execute(f"PRAGMA cache_size = -{CACHE_SIZE_KIB}")
        self._conn.execute(f"PRAGMA temp.cache_size = -{TEMP_CACHE_SIZE_KIB}")
        diff.register_functions(self._conn)

    @staticmethod
    def _tune(conn: sqlite3.Connection) -> None:
        """The settings of a connection that writes (each connection keeps its own)."""
        # NORMAL in WAL mode survives any process crash; a power cut can lose the last
        # commits but never corrupts the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        # Debian's SQLite (this machine's too) is built with SECURE_DELETE, which overwrites
        # every freed page with zeros: clearing a 1M first sync's staging wrote about 1 GB of
        # zeros through the WAL (commit_run 29.7 s -> 22.6 s without it). FAST still purges
        # deleted rows from the pages a write touches anyway, so only whole freed pages keep
        # old bytes. What this store deletes is staging and scratch rows: listed records,
        # scrubbed like the snapshot's raw (no remote_data, no contact data, never the key).
        conn.execute("PRAGMA secure_delete = FAST")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")

    def _enable_wal(self) -> None:
        """Switch to WAL, waiting like a write would: SQLite answers "database is locked" at once,
        without its busy handler, when several processes or threads open a new file together."""
        deadline = self._monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or self._monotonic() >= deadline:
                    raise
            self._sleep(WAL_SWITCH_POLL_SECONDS)

    def _applied_migrations(self, tables: set[str]) -> list[str]:
        if migrations.migrations_table not in tables:
            return []
        rows = self._conn.execute(
            f"SELECT name FROM {migrations.migrations_table} WHERE migration_set = ? ORDER BY id",
            (MIGRATION_SET,),
        )
        return [row[0] for row in rows]

    def _migrate(self) -> None:
        """Apply pending migrations under the write lock, so concurrent openers apply them once."""
        db = Database(self._conn, execute_plugins=False)
        with self._transaction():
            migrations.apply(db)

    @property
    def _in_memory(self) -> bool:
        """An in-memory database: no other connection can see it."""
        return str(self.path) == ":memory:"

    def close(self, *, wait_for_checkpoint: bool = True) -> None:
        """Close the connection, once this store's background checkpoint, if one runs, is done.

        Without `wait_for_checkpoint` the checkpoint goes on in its own connection after this
        returns. Its thread is not a daemon, so the process waits for it before exiting;
        `wait_for_checkpoints` waits for it sooner (before copying or deleting the file).
        The leases of runs still open stop being renewed: a retry resumes them (`resume_run`)."""
        for run_id in list(self._keepers):
            self._stop_keeper(run_id)
        with self._checkpoint_lock:
            checkpointer = self._checkpointer
        if checkpointer is not None and wait_for_checkpoint:
            checkpointer.join()
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _checkpoint_in_background(self) -> Iterator[None]:
        """Around a big transaction: its COMMIT skips SQLite's automatic checkpoint, which copies
        every page the transaction wrote from the WAL into the database file before COMMIT returns
        (1.2 s of a 1M-application commit_run, which writes about 400 MB of WAL). A thread with
        its own connection runs that checkpoint after the commit instead, while the caller goes
        on (a flow publishes its report and ends). `close` waits for it unless told not to; a
        process killed meanwhile only leaves a longer WAL, which a later checkpoint copies.
        """
        if self._in_memory:
            yield
            return
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield
        finally:
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        with self._checkpoint_lock:
            self._checkpoint_wanted = True
            if self._checkpointer is None:
                self._checkpointer = threading.Thread(
                    target=self._checkpoints, name=CHECKPOINT_THREAD
                )
                self._checkpointer.start()

    def _checkpoints(self) -> None:
        """The checkpoint thread: once more whenever a commit asked for one while it ran, since a
        checkpoint copies only the frames the WAL held when it began."""
        while True:
            with self._checkpoint_lock:
                if not self._checkpoint_wanted:
                    self._checkpointer = None
                    return
                self._checkpoint_wanted = False
            self._checkpoint()

    def _checkpoint(self) -> None:
        """A PASSIVE checkpoint: it copies what no reader still needs and never blocks a writer."""
        try:
            conn = self._open_writer()
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error:
            pass  # nothing is lost: the next checkpoint copies what this one did not

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT on `conn` (the store's own by default); anything raised
        (COMMIT's own failure too) rolls back."""
        conn = conn or self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- runs and locks ------------------------------------------------------------------------

    def begin_run(
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
        deadline = self._monotonic() + wait
        while True:
            with self._transaction() as conn:
                holder = conn.execute(
                    "SELECT * FROM run_locks WHERE integration_id = ?", (integration_id,)
                ).fetchone()
                why = "it held no lock" if holder is None else self._stale(holder)
                if why is not None:
                    started = started_at or self._clock()
                    window, run_mode = window_start, mode
                    if from_watermark:
                        window = self._watermark(conn, integration_id)
                        run_mode = "incremental" if window is not None else "full"
                    run_id = self._start_run(conn, integration_id, run_mode, started, window, why)
                    break
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise LockedError.held_by(holder)
            self._sleep(min(LOCK_POLL_SECONDS, remaining))
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
        if holder["lease_expires_at"] <= format_ts(self._clock()):
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
        return holder["lease_expires_at"] > format_ts(self._clock())

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
        taken = self._clock()
        now = format_ts(taken)
        run_id = conn.execute(
            "INSERT INTO sync_runs (integration_id, mode, status, started_at, window_start, pid, "
            "hostname, machine) VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
            (
                integration_id,
                mode,
                format_ts(started),
                _ts(window_start),
                os.getpid(),
                self._hostname,
                self._machine,
            ),
        ).lastrowid
        error = f"{why}; lock taken over by run {run_id} (pid {os.getpid()} on {self._hostname})"
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
            self._clear_staging(conn, dead_id)
        conn.execute(
            "INSERT OR REPLACE INTO run_locks (integration_id, run_id, pid, hostname, machine, "
            "acquired_at, renewed_at, lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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

    def _keep(self, run_id: int) -> None:
        """Renew the run's lease from a thread until the run ends (an in-memory database needs no
        lease: no other connection can see it)."""
        if self._in_memory or run_id in self._keepers:
            return
        interval = self._lease.total_seconds() / RENEWALS_PER_LEASE
        conn = self._open_writer()
        # A renewal waits at most an interval for another writer, so stopping never waits long.
        conn.execute(f"PRAGMA busy_timeout = {int(min(BUSY_TIMEOUT_MS, interval * 1000))}")
        keeper = LeaseKeeper(run_id, conn, partial(self._renew, run_id=run_id), interval)
        self._keepers[run_id] = keeper
        keeper.start()

    def _renew(self, conn: sqlite3.Connection, *, run_id: int) -> bool:
        """Push the run's lease on by its length from now; False once the run lost its lock."""
        now = self._clock()
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

    def resume_run(self, run: Run) -> bool:
        """Carry on with a run begun earlier (a retried flow run resumes its staging): True when
        it still runs and holds its lock, which this process then holds and renews; False when
        it ended or lost its lock, and a new run must begin."""
        with self._transaction() as conn:
            try:
                self._running(conn, run.id)
            except StoreError:
                return False
            now = self._clock()
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
        now = format_ts(self._clock())
        with self._transaction() as conn:
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
            self._clear_staging(conn, holder["run_id"])
            conn.execute("DELETE FROM run_locks WHERE integration_id = ?", (integration_id,))
        return dict(holder)

    def _running(self, conn: sqlite3.Connection, run_id: int) -> str:
        """The run's integration, after checking the run is running and still holds its lock."""
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

    def _clear_staging(self, conn: sqlite3.Connection, run_id: int) -> None:
        for table in ("staged_seen", "staged_applications", "staged_jobs"):
            others = conn.execute(
                f"SELECT 1 FROM {table} WHERE run_id < ? OR run_id > ? LIMIT 1", (run_id, run_id)
            ).fetchone()
            if others:
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
            "finished_at": format_ts(self._clock()),
            "error": error,
            "quarantined": conn.execute(
                "SELECT count(*) FROM quarantined WHERE run_id = ?", (run_id,)
            ).fetchone()[0],
            **_stats_dict(stats),
            **(values or {}),
        }
        assignments = ", ".join(f"{name} = :{name}" for name in fields)
        conn.execute(f"UPDATE sync_runs SET {assignments} WHERE id = :id", {**fields, "id": run_id})
        self._clear_staging(conn, run_id)
        conn.execute(
            "DELETE FROM run_locks WHERE integration_id = ? AND run_id = ?",
            (integration_id, run_id),
        )

    # -- staging -------------------------------------------------------------------------------

    def stage_jobs(self, run_id: int, jobs: Iterable[Job]) -> None:
        rows = []
        for job in jobs:
            record = _scrub(job.model_dump(mode="json"))
            raw = canonical_json(record)
            stages = [
                {key: stage.get(key) for key in ("id", "remote_id", "name", "index", "status")}
                for stage in record.get("stages") or []
            ]
            rows.append(
                (
                    run_id,
                    job.id,
                    job.remote_id,
                    job.name,
                    job.status,
                    _ts(job.changed_at),
                    _ts(job.remote_created_at),
                    _ts(job.remote_updated_at),
                    _ts(job.remote_deleted_at),
                    json.dumps(stages),
                    _sha1(raw.encode()),
                    raw,
                )
            )
        with self._transaction() as conn:
            self._running(conn, run_id)
            conn.executemany(_STAGE_JOB, rows)

    def stage_applications(
        self, run_id: int, apps: Iterable[Application], unparsed_ids: Iterable[str] = ()
    ) -> None:
        """Stage one page (a repeated id keeps its last record).

        Every record is noted as seen, `unparsed_ids` too (records listed but unparseable, whose
        stored snapshot stays); only one whose hash the live snapshot does not hold is staged
        with its content. The others cannot change anything: no other run of the integration can
        commit while this one holds the lock.
        """
        latest: dict[str, Application | None] = {app.id: app for app in apps}
        latest.update(dict.fromkeys(unparsed_ids))
        if latest:
            encoded = _encode(app for app in latest.values() if app is not None)
            unparsed = [record_id for record_id, app in latest.items() if app is None]
            pairs = _pairs(encoded, unparsed)
            self._stage_encoded(self._conn, run_id, encoded, len(unparsed), pairs, None)

    def _stage_encoded(
        self,
        conn: sqlite3.Connection,
        run_id: int,
        encoded: list[tuple[Application, bytes, str]],
        unparsed: int,
        pairs: str,
        changed: list[int] | None,
    ) -> None:
        """Write one batch on `conn`: every record as seen (the `encoded` ones, then `unparsed`
        unparseable ones), and the content of those at the `changed` positions of `pairs` (looked
        up here when None: see `_changed_positions`)."""
        listed = len(encoded) + unparsed
        with self._transaction(conn):
            integration_id = self._running(conn, run_id)
            if changed is None:
                changed = _changed_positions(conn, integration_id, pairs)
            first = conn.execute(_RESERVE_SEQ, (listed, run_id)).fetchone()[0] - listed
            conn.execute(_STAGE_SEEN, (run_id, first, pairs))
            from_json, from_model = [], []
            for position in changed:
                app, raw, digest = encoded[position]
                seq = first + position
                if _ESCAPED_NUL in raw:
                    from_model.append(_row_from_model(run_id, seq, app, digest, raw))
                else:
                    from_json.append((seq, app.id, digest, raw.decode()))
            if from_json:
                conn.execute(_STAGE_CHANGED, (run_id, json.dumps(from_json)))
            if from_model:
                conn.executemany(_STAGE_CHANGED_FROM_MODEL, from_model)
        _crash_point("stage:after_insert")

    def _open_writer(self) -> sqlite3.Connection:
        """Another connection that writes like this one, usable from any one other thread. It
        opens the file with mode=rw: a file removed meanwhile is never created again."""
        uri = self.path.resolve().as_uri() + "?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._tune(conn)
        return conn

    def application_stager(
        self,
        run_id: int,
        *,
        batch_records: int = STAGING_BATCH_RECORDS,
        flush_seconds: float = STAGING_FLUSH_SECONDS,
    ) -> ApplicationStager:
        """A buffer that stages pages in batches (see `ApplicationStager`); flush it when the
        listing ends."""
        return ApplicationStager(self, run_id, batch_records, flush_seconds, self._monotonic)

    def absent_applications(self, run_id: int) -> list[str]:
        """Live applications of the run's integration that the run has not listed (yet): what a
        full listing would record as deleted."""
        integration_id = self.run(run_id)["integration_id"]
        rows = self._conn.execute(_ABSENT, (integration_id, run_id))
        return [row[0] for row in rows]

    def stale_job_ids(self, run_id: int) -> list[str]:
        """Jobs of the run's staged applications that neither this run listed nor the job snapshot
        holds with the application's stage: their stage order must be fetched before the diff."""
        integration_id = self.run(run_id)["integration_id"]
        rows = self._conn.execute(_STALE_JOBS, (integration_id, run_id))
        return [row[0] for row in rows]

    def quarantine(self, run_id: int, integration_id: str, items: Iterable[Quarantined]) -> None:
        now = format_ts(self._clock())
        rows = [
            (
                run_id,
                integration_id,
                item.model,
                item.record_id,
                item.reason,
                canonical_json(_scrub(item.raw)),
                now,
            )
            for item in items
        ]
        with self._transaction() as conn:
            owner = self._running(conn, run_id)
            if owner != integration_id:
                raise StoreError(f"sync run {run_id} belongs to {owner!r}, not {integration_id!r}")
            conn.executemany(
                "INSERT INTO quarantined (run_id, integration_id, model, record_id, reason, raw, "
                "quarantined_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    # -- finishing -----------------------------------------------------------------------------

    def commit_run(
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
        _crash_point("commit:start")
        with self._ending(run_id), self._checkpoint_in_background(), self._transaction() as conn:
            integration_id = self._running(conn, run_id)
            if not complete:
                counts = dict.fromkeys(EVENT_KINDS, 0)
                self._finish(
                    conn,
                    run_id,
                    integration_id,
                    "incomplete",
                    error=error or "listing ended early; staged records discarded",
                    stats=stats,
                    values={"observed_at": format_ts(observed_at), "events": 0, **counts},
                )
                return counts
            values = self._apply(conn, run_id, integration_id, observed_at)
            values["next_watermark"] = self._advance_watermark(
                conn, run_id, integration_id, _ts(next_watermark)
            )
            self._finish(
                conn,
                run_id,
                integration_id,
                "succeeded",
                error=None,
                stats=stats,
                values={**values, **(facts or {})},
            )
            _crash_point("commit:before_commit")
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
        diff.apply_jobs(conn, run_id=run_id, integration_id=integration_id, observed_at=observed)
        applied = diff.apply_applications(
            conn,
            run_id=run_id,
            integration_id=integration_id,
            observed_at=observed,
            previous_observed_at=previous,
            full=mode == "full",
        )
        _crash_point("commit:after_diff")
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
            (integration_id, proposed, run_id, format_ts(self._clock())),
        )
        return proposed

    def fail_run(
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
        with self._ending(run_id), self._transaction() as conn:
            integration_id = self._running(conn, run_id)
            self._finish(conn, run_id, integration_id, status, error=error, stats=stats)

    # -- publishing ----------------------------------------------------------------------------

    def mark_published(self, run_id: int, *, note: str | None = None) -> bool:
        """Record that a succeeded run's changes went out to Prefect, or with `note` how they were
        settled otherwise. The first mark stands: returns False when the run was marked already."""
        with self._transaction() as conn:
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
            if row["published_at"] is not None:
                return False
            conn.execute(
                "UPDATE sync_runs SET published_at = ?, publish_note = ? WHERE id = ?",
                (format_ts(self._clock()), note, run_id),
            )
            return True

    def unpublished_runs(self, integration_id: str) -> list[dict[str, Any]]:
        """Succeeded runs of the integration whose changes never went out and that no live process
        will still publish, oldest first.

        A run commits (releasing the lock) before it publishes, so a run whose process is alive on
        this machine (`_here`) is left to it. This very process's runs count (a flow run retried
        after its publish failed), and so does a run elsewhere, whose process cannot be checked,
        once it finished `OTHER_HOST_PUBLISH_GRACE` ago.
        """
        cutoff = format_ts(self._clock() - OTHER_HOST_PUBLISH_GRACE)
        rows = self._conn.execute(
            "SELECT * FROM sync_runs WHERE integration_id = ? AND status = 'succeeded' "
            "AND published_at IS NULL ORDER BY id",
            (integration_id,),
        )
        return [dict(row) for row in rows if self._publisher_gone(row, cutoff)]

    def _publisher_gone(self, run: sqlite3.Row, cutoff: str) -> bool:
        if not self._here(run):
            return run["finished_at"] <= cutoff
        return run["pid"] == os.getpid() or not pid_alive(run["pid"])

    # -- queries -------------------------------------------------------------------------------

    def run(self, run_id: int) -> dict[str, Any]:
        row = self._conn.execute("SELECT * FROM sync_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no sync run {run_id}")
        return dict(row)

    def is_baseline(self, run_id: int) -> bool:
        """Whether the run is the first of its integration that succeeded: its first sightings are
        everything that existed before stagewatch looked, not news."""
        row = self._conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM sync_runs AS p WHERE p.integration_id = r.integration_id"
            " AND p.status = 'succeeded' AND p.id < r.id) FROM sync_runs AS r WHERE r.id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise StoreError(f"no sync run {run_id}")
        return bool(row[0])

    def watermark(self, integration_id: str) -> datetime | None:
        return self._watermark(self._conn, integration_id)

    @staticmethod
    def _watermark(conn: sqlite3.Connection, integration_id: str) -> datetime | None:
        row = conn.execute(
            "SELECT watermark FROM watermarks WHERE integration_id = ?", (integration_id,)
        ).fetchone()
        return parse_ts(row[0]) if row else None

    def job_names(self, integration_id: str) -> dict[str, str]:
        """Job id -> name as last listed, for reports."""
        return dict(
            self._conn.execute(
                "SELECT job_id, name FROM jobs WHERE integration_id = ? AND name IS NOT NULL",
                (integration_id,),
            ).fetchall()
        )

    def candidate_names(
        self, integration_id: str, application_ids: Iterable[str]
    ) -> dict[str, str]:
        """Application id -> candidate name from the stored record (never contact data); reports
        call it only when candidate names may be shown."""
        rows = self._conn.execute(
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
        cursor = self._conn.execute(sql, params)
        return (dict(row) for row in cursor)

    def _kinds_run_wrote(self, run_id: int, kinds: list[str]) -> list[str]:
        """`kinds` minus those a finished run counted none of: its events need no scan for them
        (ruling out the listed kinds among a 1M first sync's first sightings took 0.46 s)."""
        row = self._conn.execute(
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
        return [dict(row) for row in self._conn.execute(sql, params)]

    def live_applications(self, integration_id: str) -> int:
        """How many applications of the integration the snapshot holds as live (not deleted)."""
        return self._conn.execute(
            "SELECT count(*) FROM applications WHERE integration_id = ? "
            "AND deleted_observed_at IS NULL",
            (integration_id,),
        ).fetchone()[0]

    def status(self) -> list[dict[str, Any]]:
        """Per integration: its last run, last success, watermark, lock and what the store holds."""
        conn = self._conn
        last_runs = {
            row["integration_id"]: row
            for row in conn.execute(
                "SELECT * FROM sync_runs WHERE id IN "
                "(SELECT max(id) FROM sync_runs GROUP BY integration_id)"
            )
        }
        last_success = dict(
            conn.execute(
                "SELECT integration_id, max(finished_at) FROM sync_runs "
                "WHERE status = 'succeeded' GROUP BY integration_id"
            ).fetchall()
        )
        watermarks = dict(conn.execute("SELECT integration_id, watermark FROM watermarks"))
        locks = {row["integration_id"]: row for row in conn.execute("SELECT * FROM run_locks")}
        applications = {
            row[0]: (row[1], row[2])
            for row in conn.execute(
                "SELECT integration_id, count(*) - count(deleted_observed_at), "
                "count(deleted_observed_at) FROM applications GROUP BY integration_id"
            )
        }
        jobs = dict(
            conn.execute("SELECT integration_id, count(*) FROM jobs GROUP BY integration_id")
        )
        events = dict(
            conn.execute("SELECT integration_id, count(*) FROM events GROUP BY integration_id")
        )
        result = []
        for integration_id in sorted(last_runs):
            run = last_runs[integration_id]
            lock = locks.get(integration_id) or dict.fromkeys(LOCK_STATUS_COLUMNS)
            live, deleted = applications.get(integration_id, (0, 0))
            result.append(
                {
                    "integration_id": integration_id,
                    "last_run_id": run["id"],
                    "last_run_mode": run["mode"],
                    "last_run_status": run["status"],
                    "last_run_started_at": run["started_at"],
                    "last_run_finished_at": run["finished_at"],
                    "last_run_events": run["events"],
                    "last_run_error": run["error"],
                    "last_success_at": last_success.get(integration_id),
                    "watermark": watermarks.get(integration_id),
                    **{field: lock[column] for column, field in LOCK_STATUS_COLUMNS.items()},
                    "jobs": jobs.get(integration_id, 0),
                    "applications": live,
                    "deleted_applications": deleted,
                    "events": events.get(integration_id, 0),
                }
            )
        return result

    def schema_markdown(self) -> str:
        return schema_markdown(self._conn)

    def schema_sql(self) -> str:
        rows = self._conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY rowid"
        )
        return "".join(f"{row[0]};\n" for row in rows)

    def integrity_check(self) -> str:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0]


# -- schema as markdown ------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNCOMMENTED = {"_sqlite_migrations": "Migrations applied to this database (kept by sqlite-utils)."}


def _comments(sql: str, is_view: bool) -> tuple[str, dict[str, str]]:
    """The table's own comment (first line) and each column's trailing `--` comment."""
    lines = sql.splitlines()
    head = lines[0].partition("--")[2].strip()
    columns: dict[str, str] = {}
    for line in lines[1:]:
        code, sep, comment = line.partition("--")
        names = _IDENTIFIER.findall(code.strip().rstrip(","))
        if not sep or not names:
            continue
        columns.setdefault(names[-1] if is_view else names[0], comment.strip())
    return head, columns


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def schema_markdown(conn: sqlite3.Connection) -> str:
    """Every table and view of the live database, with the comments its DDL carries."""
    objects = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    indexes: dict[str, list[str]] = {}
    triggers: dict[str, list[str]] = {}
    for kind, name, table, _sql in objects:
        if kind == "index":
            columns = [row[2] for row in conn.execute(f"PRAGMA index_info({name})")]
            unique = conn.execute(
                'SELECT "unique" FROM pragma_index_list(?) WHERE name = ?', (table, name)
            ).fetchone()[0]
            partial = " (partial)" if " WHERE " in _sql.upper() else ""
            label = "unique " if unique else ""
            indexes.setdefault(table, []).append(f"`{name}` {label}({', '.join(columns)}){partial}")
        elif kind == "trigger":
            triggers.setdefault(table, []).append(f"`{name}`")
    out: list[str] = []
    for kind, name, _table, sql in objects:
        if kind not in ("table", "view"):
            continue
        head, comments = _comments(sql, is_view=kind == "view")
        head = head or _UNCOMMENTED.get(name, "")
        out.append(f"### `{name}`{' (view)' if kind == 'view' else ''}")
        out.append("")
        if head:
            out.append(head)
            out.append("")
        out.append("| column | type | description |")
        out.append("| --- | --- | --- |")
        for row in conn.execute(f"PRAGMA table_info({name})"):
            decl = [row["type"] or "any"]
            if row["notnull"]:
                decl.append("NOT NULL")
            if row["pk"]:
                decl.append("PK")
            out.append(
                f"| `{row['name']}` | {' '.join(decl)} | {_cell(comments.get(row['name'], ''))} |"
            )
        out.append("")
        if name in indexes:
            out.append("Indexes: " + "; ".join(indexes[name]) + ".")
            out.append("")
        if name in triggers:
            out.append("Triggers: " + ", ".join(triggers[name]) + ".")
            out.append("")
    return "\n".join(out).rstrip() + "\n"
