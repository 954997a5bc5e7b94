"""Copying a whole store to another backend: `stagewatch migrate-store`.

Everything a store remembers goes over unchanged, ids and event keys included, so the history
keeps its identity: runs, watermarks, the job and application snapshots, the change log and the
stays kept from it, the quarantine and the import ledger. Staging and locks do not (a store with a run in progress is refused). The copy is one
transaction of the target, checked before it commits: the same row count and the same digest
(an order-free sum of each row's sha256) per table, or nothing is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from stagewatch.store import Store
from stagewatch.store.errors import StoreError

TABLES = (
    "sync_runs",
    "watermarks",
    "jobs",
    "job_stages",
    "applications",
    "events",
    "stage_stays_kept",
    "job_funnel_kept",
    "funnel_stale",
    "quarantined",
    "imports",
)
_IDENTITY = ("sync_runs", "events", "quarantined")
BATCH_ROWS = 5000
_MOD = 1 << 128


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    digest: str


def _row_hash(row) -> int:
    # A whole number is one value whether a backend keeps it as an integer or a float
    # (PostgreSQL's stage_index is double precision).
    values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in row]
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")


@contextmanager
def _rows(store: Store, sql: str) -> Iterator[Iterator[tuple]]:
    """The query's rows, streamed (a server-side cursor on PostgreSQL)."""
    conn = store._db.conn
    if not store._db.postgres:
        yield iter(conn.execute(sql))
        return
    with conn.raw.transaction(), conn.raw.cursor(name="stagewatch_copy") as cursor:
        cursor.itersize = BATCH_ROWS
        cursor.execute(sql)
        yield iter(cursor)


def _columns(store: Store, table: str) -> list[str]:
    cursor = store._db.conn.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    return [column[0] for column in cursor.description]


def _digest(store: Store, table: str, columns: list[str]) -> tuple[int, str]:
    count, total = 0, 0
    with _rows(store, f"SELECT {', '.join(columns)} FROM {table}") as rows:
        for row in rows:
            count += 1
            total = (total + _row_hash(row)) % _MOD
    return count, f"{total:032x}"


def _write(target: Store, table: str, columns: list[str], rows: Iterator[tuple]) -> None:
    conn = target._db.conn
    if target._db.postgres:
        conn.copy(table, columns, rows)
        return
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    batch: list[tuple] = []
    for row in rows:
        batch.append(tuple(row))
        if len(batch) >= BATCH_ROWS:
            conn.executemany(sql, batch)
            batch = []
    conn.executemany(sql, batch)


def _check_movable(source: Store, target: Store) -> None:
    busy = source._db.conn.execute("SELECT count(*) FROM run_locks").fetchone()[0]
    if busy:
        raise StoreError(
            f"{source.path} has {busy} run(s) in progress: let them finish (or `stagewatch "
            "unlock` them) before copying"
        )
    held = target._db.conn.execute("SELECT count(*) FROM sync_runs").fetchone()[0]
    if held:
        raise StoreError(f"{target.path} already holds {held} runs: copy only into a new store")


def copy_store(source: Store, target: Store) -> list[TableCopy]:
    """Copy `source` into the empty `target` in one transaction; raises StoreError, writing
    nothing, when the copy does not read back the same."""
    _check_movable(source, target)
    copied = []
    with target._db.transaction() as conn:
        for table in TABLES:
            columns = _columns(source, table)
            with _rows(source, f"SELECT {', '.join(columns)} FROM {table}") as rows:
                _write(target, table, columns, rows)
            expected = _digest(source, table, columns)
            found = _digest(target, table, columns)
            if found != expected:
                raise StoreError(
                    f"copy of {table} does not read back the same ({expected[0]} rows, digest "
                    f"{expected[1]}; the copy: {found[0]} rows, digest {found[1]}): nothing written"
                )
            if target._db.postgres and table in _IDENTITY:
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"coalesce(max(id), 0) + 1, false) FROM {table}"
                )
            copied.append(TableCopy(table, *expected))
    return copied
