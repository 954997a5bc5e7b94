"""PostgreSQL behind the store's SQL: a connection that speaks the sqlite3 subset the store uses.

The store's statements are written once, with sqlite3's placeholders (`?`, `?1`, `:name`);
`PgConnection.execute` rewrites them for psycopg and rows answer by index and by name like
`sqlite3.Row`. Every connection works in autocommit mode with the store's schema as its
`search_path`; `Database.transaction` issues BEGIN and COMMIT itself, as on SQLite.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.types.numeric import FloatLoader

from stagewatch.store.errors import StoreError
from stagewatch.store.location import PostgresLocation, redact
from stagewatch.store.pg_schema import MIGRATIONS, MIGRATIONS_TABLE, pg_time
from stagewatch.store.schema import upgrade_notice

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_NUMBERED = re.compile(r"\?(\d+)")


class Row(tuple):
    """A result row: by position, by column name, and `dict(row)`, like sqlite3.Row."""

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            key = self._index[key]
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: psycopg.Cursor) -> Any:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


@lru_cache(maxsize=512)
def _translate(sql: str, named: bool) -> tuple[str, tuple[int, ...] | None]:
    """psycopg's form of a sqlite3 statement, and for `?N` placeholders the order of the values."""
    sql = pg_time(sql).replace("%", "%%")
    if named:
        return _NAMED.sub(r"%(\1)s", sql), None
    order = tuple(int(n) - 1 for n in _NUMBERED.findall(sql))
    if order:
        return _NUMBERED.sub("%s", sql), order
    return sql.replace("?", "%s"), None


class PgConnection:
    """One psycopg connection in autocommit mode, driven like a sqlite3 connection."""

    def __init__(self, raw: psycopg.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> psycopg.Cursor:
        if not params:  # psycopg reads no placeholders (and no %%) in a statement without values
            return self.raw.execute(pg_time(sql))
        named = isinstance(params, Mapping)
        text, order = _translate(sql, named)
        if order is not None:
            params = [params[i] for i in order]  # type: ignore[index]
        return self.raw.execute(text, params)  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        text, _ = _translate(sql, False)
        with self.raw.cursor() as cursor:
            cursor.executemany(text, list(rows))

    def copy(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """COPY the rows in: the fastest way into a table, as staging needs."""
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


def connect(location: PostgresLocation, *, readonly: bool = False) -> PgConnection:
    """A connection to the store's database with its schema first on the search path; a server
    that does not answer or refuses us is one StoreError line, the password never in it."""
    try:
        raw = psycopg.connect(
            location.conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            row_factory=_row_factory,
            application_name="stagewatch",
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {location.shown}: {_first_line(exc)}") from None
    # numeric (extract's epoch, averages) as float, as SQLite answers REAL: no Decimal leaks out.
    raw.adapters.register_loader("numeric", FloatLoader)
    raw.execute(f"SET search_path TO {location.schema}")
    if readonly:
        raw.execute("SET default_transaction_read_only = on")
    return PgConnection(raw)


def _first_line(exc: BaseException) -> str:
    """libpq's reason, without its preamble: `Connection refused`, `role "x" does not exist`."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return redact(line.rsplit("failed: ", 1)[-1].replace("FATAL:  ", ""))


def advisory_lock(conn: PgConnection, *names: str) -> None:
    """Hold a transaction-scoped lock named by `names` until COMMIT or ROLLBACK."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", ("\x1f".join(names),))


def prepare(conn: PgConnection, location: PostgresLocation, *, readonly: bool) -> None:
    """Check the schema's migrations and apply the pending ones, all in one transaction: a failure
    leaves the database as it was. Concurrent openers wait for one another's migrations."""
    schema, shown = location.schema, location.shown
    try:
        conn.execute("BEGIN")
        if not readonly:
            advisory_lock(conn, "stagewatch-migrate", schema)
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (schema,)).fetchone()
        applied = _applied(conn, schema) if exists else []
        known = [name for name, _ in MIGRATIONS]
        unknown = [name for name in applied if name not in known]
        if unknown:
            raise StoreError(
                f"schema {schema} of {shown} was written by a newer stagewatch (unknown "
                f"migrations: {', '.join(unknown)})"
            )
        pending = [(name, sql) for name, sql in MIGRATIONS if name not in applied]
        if readonly and pending:
            why = "does not exist" if not exists else f"needs migrations {pending[0][0]}.."
            raise StoreError(
                f"schema {schema} of {shown} {why}: open it once with a command that writes "
                "(a sync) to create or upgrade it"
            )
        if not exists:
            conn.execute(f"CREATE SCHEMA {schema}")
        if applied and pending:
            log.warning(upgrade_notice(f"schema {schema} of {shown}", [n for n, _ in pending]))
        for name, statements in pending:
            conn.execute(";\n".join(statements))  # one round trip per migration
            conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name) VALUES (?)", (name,))
        conn.execute("COMMIT")
    except BaseException as exc:
        if not conn.raw.closed and conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            raise StoreError(
                f"cannot set up schema {schema} of {shown}: {_first_line(exc)} (the role needs "
                f"CREATE on the database, or USAGE and CREATE on an existing schema {schema})"
            ) from None
        if isinstance(exc, psycopg.Error):
            raise StoreError(
                f"cannot open schema {schema} of {shown}: {_first_line(exc)}"
            ) from None
        raise


def _applied(conn: PgConnection, schema: str) -> list[str]:
    table = conn.execute("SELECT to_regclass(?)", (f"{schema}.{MIGRATIONS_TABLE}",)).fetchone()[0]
    if table is None:
        others = conn.execute(
            "SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ? AND c.relkind IN ('r', 'v')",
            (schema,),
        ).fetchone()[0]
        if others:
            raise StoreError(
                f"schema {schema} holds {others} tables or views but no stagewatch migrations: "
                "not a stagewatch store (choose another schema)"
            )
        return []
    return [row[0] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY id")]
