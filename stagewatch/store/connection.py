"""The database a store keeps: opening, pragmas, migrations, transactions and checkpoints.

A `Database` is a SQLite file or, given a `postgresql://` URL, a schema of a PostgreSQL database
(`stagewatch.store.pg`); `postgres` says which, for the few statements the two spell differently.
It owns one connection and must stay in the thread that opened it (sqlite3 enforces this); it
opens more connections for the threads that need one (`open_writer`): a stager's worker, a lease
keeper, the background checkpoint after a big commit.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlite_utils import Database as SqliteUtilsDatabase

from stagewatch import diff
from stagewatch.store import pg
from stagewatch.store.errors import StoreError
from stagewatch.store.location import PostgresLocation, is_postgres
from stagewatch.store.schema import MIGRATION_NAMES, MIGRATION_SET, migrations, upgrade_notice
from stagewatch.timeutil import utcnow

log = logging.getLogger(__name__)


BUSY_TIMEOUT_MS = 60_000
WAL_SWITCH_POLL_SECONDS = 0.02
# The page cache, and also what SQLite's sorter holds in memory before it spills to a temporary
# file: the commit's sorts of a big run fill it (docs/performance.md).
CACHE_SIZE_KIB = 32 * 1024
TEMP_CACHE_SIZE_KIB = 16 * 1024
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file keeps after a checkpoint
WAL_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default
CHECKPOINT_THREAD = "stagewatch-checkpoint"
CRASH_ENV = "STAGEWATCH_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process at a named point, to prove a crash there loses nothing."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def wait_for_checkpoints() -> None:
    """Wait until every background checkpoint of this process (see `Store.commit_run`) is done:
    until then the WAL still holds pages the database file does not."""
    for thread in threading.enumerate():
        if thread.name == CHECKPOINT_THREAD:
            thread.join()


class Database:
    """Open (and create or migrate) a stagewatch database file; `readonly=True` never writes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.readonly = readonly
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_wanted = False
        self.location: PostgresLocation | None = None
        if is_postgres(path):
            self.location = PostgresLocation.parse(str(path))
            self.path = self.location.shown
            self.conn = pg.connect(self.location, readonly=readonly)
            try:
                pg.prepare(self.conn, self.location, readonly=readonly)
            except BaseException:
                self.conn.close()
                raise
            return
        self.path = Path(path)
        self.conn = self._connect()
        try:
            self._prepare()
        except BaseException:
            self.conn.close()
            raise

    def close(self, *, wait_for_checkpoint: bool = True) -> None:
        """Close the connection, once the background checkpoint, if one runs, is done.

        Without `wait_for_checkpoint` the checkpoint goes on in its own connection after this
        returns. Its thread is not a daemon, so the process waits for it before exiting;
        `wait_for_checkpoints` waits for it sooner (before copying or deleting the file)."""
        with self._checkpoint_lock:
            checkpointer = self._checkpointer
        if checkpointer is not None and wait_for_checkpoint:
            checkpointer.join()
        self.conn.close()

    @property
    def postgres(self) -> bool:
        return self.location is not None

    def lock_integration(self, conn, integration_id: str) -> None:
        """Inside a transaction: wait until no other transaction writes the integration's runs.
        SQLite's BEGIN IMMEDIATE already lets one writer in at a time; PostgreSQL holds an
        advisory lock until COMMIT, so lease checks and takeovers never interleave."""
        if self.location is not None:
            pg.advisory_lock(conn, self.location.schema, integration_id)

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
        if self.in_memory:
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
                for row in self.conn.execute(
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
            self._tune(self.conn)
            if pending:
                if applied:
                    log.warning(upgrade_notice(str(self.path), pending))
                self._migrate()
        # Bounded caches: scratch tables and sorts spill to temporary files rather than grow.
        self.conn.execute(f"PRAGMA cache_size = -{CACHE_SIZE_KIB}")
        self.conn.execute(f"PRAGMA temp.cache_size = -{TEMP_CACHE_SIZE_KIB}")
        diff.register_functions(self.conn)

    @staticmethod
    def _tune(conn: sqlite3.Connection) -> None:
        """The settings of a connection that writes (each connection keeps its own)."""
        # NORMAL in WAL mode survives any process crash; a power cut can lose the last
        # commits but never corrupts the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        # Debian's SQLite is built with SECURE_DELETE, which overwrites every freed page with
        # zeros: clearing a big run's staging wrote gigabytes through the WAL. FAST still purges
        # deleted rows from the pages a write touches, so only whole freed pages keep old bytes;
        # what this store deletes is staging and scratch rows, scrubbed like the snapshot's raw
        # (no remote_data, no contact data, never the key).
        conn.execute("PRAGMA secure_delete = FAST")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")

    def _enable_wal(self) -> None:
        """Switch to WAL, waiting like a write would: SQLite answers "database is locked" at once,
        without its busy handler, when several processes or threads open a new file together."""
        deadline = self.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or self.monotonic() >= deadline:
                    raise
            self.sleep(WAL_SWITCH_POLL_SECONDS)

    def _applied_migrations(self, tables: set[str]) -> list[str]:
        if migrations.migrations_table not in tables:
            return []
        rows = self.conn.execute(
            f"SELECT name FROM {migrations.migrations_table} WHERE migration_set = ? ORDER BY id",
            (MIGRATION_SET,),
        )
        return [row[0] for row in rows]

    def _migrate(self) -> None:
        """Apply pending migrations under the write lock, so concurrent openers apply them once."""
        db = SqliteUtilsDatabase(self.conn, execute_plugins=False)
        with self.transaction():
            migrations.apply(db)

    @property
    def in_memory(self) -> bool:
        """An in-memory database: no other connection can see it."""
        return self.location is None and str(self.path) == ":memory:"

    @contextmanager
    def checkpoint_in_background(self) -> Iterator[None]:
        """Around a big transaction: its COMMIT skips SQLite's automatic checkpoint, which copies
        every page the transaction wrote from the WAL into the database file before COMMIT returns
        (seconds, after a big run). A thread with
        its own connection runs that checkpoint after the commit instead, while the caller goes
        on (a flow publishes its report and ends). `close` waits for it unless told not to; a
        process killed meanwhile only leaves a longer WAL, which a later checkpoint copies.
        """
        if self.in_memory or self.postgres:
            yield
            return
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
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
            conn = self.open_writer()
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error:
            pass  # nothing is lost: the next checkpoint copies what this one did not

    @contextmanager
    def transaction(
        self, conn: sqlite3.Connection | None = None, *, write: bool = True
    ) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT on `conn` (the store's own by default); anything raised
        (COMMIT's own failure too) rolls back. `write=False` takes no write lock on SQLite: a
        read snapshot, beside the writer, whose writes may go to temporary tables only."""
        conn = conn or self.conn
        conn.execute("BEGIN" if self.postgres or not write else "BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def open_writer(self, busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        """Another connection that writes like this one, usable from any one other thread,
        waiting at most `busy_timeout_ms` for a lock. A SQLite file is opened with mode=rw: a
        file removed meanwhile is never created again."""
        if self.location is not None:
            conn = pg.connect(self.location)
            conn.execute(f"SET lock_timeout = {int(busy_timeout_ms)}")
            return conn
        uri = self.path.resolve().as_uri() + "?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._tune(conn)
        return conn
