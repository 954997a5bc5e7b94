"""Where a store lives: a SQLite file path, or a PostgreSQL URL and the schema its tables live in.

`postgresql://user@host:5432/dbname?schema=name` (or `postgres://`); any other text is a file
path. The schema defaults to `STAGEWATCH_PG_SCHEMA`, else `stagewatch`. A password in the URL is
used to connect and shown nowhere: `redact` replaces it wherever a URL is printed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from stagewatch.store.errors import StoreError

POSTGRES_SCHEMES = ("postgresql", "postgres")
SCHEMA_ENV = "STAGEWATCH_PG_SCHEMA"
DEFAULT_SCHEMA = "stagewatch"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PASSWORD = re.compile(r"(://[^:/?#@\s]*:)[^@/?#\s]*@")


def is_postgres(db: str | os.PathLike[str]) -> bool:
    return isinstance(db, str) and db.lower().startswith(
        tuple(f"{scheme}://" for scheme in POSTGRES_SCHEMES)
    )


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`."""
    return _PASSWORD.sub(r"\1***@", text)


def resolve(db: str | os.PathLike[str]) -> str:
    """A PostgreSQL URL as given; a file path made absolute (a flow's tasks may run elsewhere)."""
    return str(db) if is_postgres(str(db)) else str(Path(db).resolve())


@dataclass(frozen=True)
class PostgresLocation:
    """A PostgreSQL store: libpq's connection URL (without our `schema` parameter) and schema."""

    conninfo: str
    schema: str
    shown: str  # the URL as printed: password redacted

    @classmethod
    def parse(cls, url: str) -> PostgresLocation:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for key, value in query if key == "schema"]
        schema = schemas[-1] if schemas else os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA
        if not _SCHEMA_NAME.fullmatch(schema):
            raise StoreError(
                f"schema {schema!r} is not a plain lower-case SQL name (a-z, 0-9, _; at most 63)"
            )
        rest = urlencode([(key, value) for key, value in query if key != "schema"])
        conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
        return cls(conninfo, schema, redact(url))
