"""The drills on PostgreSQL: the same cases with the store in a schema of the test server.

Each case gets a schema of its own (dropped after). Fault storms compare the faulty week on
PostgreSQL with the fault-free week on SQLite, so they also check that both backends write the
same history; the thread races sync one integration (or two) into one PostgreSQL store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from stagewatch.store.location import redact
from tests.reliability import concurrency, faults
from tests.reliability.harness import CaseResult, SecretScanner

URL_ENV = "STAGEWATCH_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def unavailable() -> str | None:
    """Why the drills cannot use the server, or None."""
    try:
        psycopg.connect(server_url(), connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL server answers at {redact(server_url())} ({type(exc).__name__})"
    return None


@contextmanager
def schema_url() -> Iterator[str]:
    schema = f"sw_drill_{uuid.uuid4().hex[:12]}"
    base = server_url()
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _in_schema(run: Callable[[str], CaseResult], name: str) -> CaseResult:
    with schema_url() as url:
        result = run(url)
    result.name = f"{name} (postgres)"
    return result


def cases(work: Path, key: str, scanner: SecretScanner, storms: int) -> list:
    """The drill's cases as thunks, each returning its CaseResult."""
    runs = [
        lambda c=c: _in_schema(
            lambda url: faults.run_storm_case(c, work / f"storm-{c.seed}", key, scanner, url),
            c.name,
        )
        for c in faults.storm_cases(storms)
    ]
    for same in (True, False):
        label = "same integration" if same else "two integrations"
        runs.append(
            lambda same=same, label=label: _in_schema(
                lambda url: concurrency.threads_case(
                    work / "threads", key, scanner, same_integration=same, store_at=url
                ),
                f"two threads, {label}",
            )
        )
    (work / "threads").mkdir(parents=True, exist_ok=True)
    return runs
