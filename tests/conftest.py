"""Shared fixtures. The Prefect harness is session-scoped and lazy: only flow tests request it, so the
rest of the suite never starts a Prefect server."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server for the session (about 8 s to start, 2 s to stop).

    Heartbeats are off (each flow run would otherwise wait about 1 s for the heartbeat thread at
    exit) and results, which hold the task cache records, go to a temporary directory: they would
    otherwise land in `$PREFECT_HOME/storage` and outlive the harness's fresh database.
    """
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    results = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings(
            {
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(results),
            }
        ),
        # Generous: under load (helpers, pytest-xdist) the server has taken over 30 s to answer.
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield results


@pytest.fixture
def held_checkpoint(monkeypatch):
    """Every store's background checkpoint, held back until the test sets the event it yields; the
    real checkpoint runs then. Other tests' checkpoints are waited for first, so any checkpoint
    thread the test finds is its own; on teardown the hold is released and waited for."""
    from stagewatch.store.connection import Database, wait_for_checkpoints

    release = threading.Event()
    checkpoint = Database._checkpoint

    def held(self):
        release.wait(30)
        checkpoint(self)

    wait_for_checkpoints()
    monkeypatch.setattr(Database, "_checkpoint", held)
    yield release
    release.set()
    wait_for_checkpoints()


@pytest.fixture
def recorded_events(monkeypatch):
    """Prefect's own recording events client, passing every event on to the test server. The
    value drains it and returns the events whose name starts with `prefix`."""
    from tests.flows.flowkit import record_events

    drain = record_events(monkeypatch)
    yield drain
    drain()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads the groups set here
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, tests that share one expensive session fixture run on one worker:
    the browser tests share one Prefect server and its runs; the others one Prefect harness.
    (pytest 9.2 broke this grouping for pytest-xdist 3.8: pyproject.toml keeps pytest below it.)"""
    for item in items:
        if "browser" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.xdist_group("browser"))
        elif "prefect_harness" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("prefect"))


# -- PostgreSQL: the store tests run on both backends ---------------------------------------------

POSTGRES_URL_ENV = "STAGEWATCH_TEST_POSTGRES_URL"
POSTGRES_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
# Set (say in CI) to fail rather than skip the PostgreSQL tests when no server answers.
POSTGRES_REQUIRED_ENV = "STAGEWATCH_TEST_REQUIRE_POSTGRES"


def postgres_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV) or POSTGRES_DEFAULT_URL


def _postgres_unavailable() -> str | None:
    """Why the test server cannot be used, or None; asked once per session."""
    if not hasattr(_postgres_unavailable, "reason"):
        import psycopg

        from stagewatch.store.location import redact

        try:
            psycopg.connect(postgres_url(), connect_timeout=3).close()
            _postgres_unavailable.reason = None
        except psycopg.Error as exc:
            line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            _postgres_unavailable.reason = f"{redact(postgres_url())}: {redact(line)}"
    return _postgres_unavailable.reason


@contextlib.contextmanager
def postgres_schema():
    """A URL of the test server naming a schema of its own, dropped afterwards; skips (or fails,
    see POSTGRES_REQUIRED_ENV) when no server answers."""
    import uuid

    import psycopg

    reason = _postgres_unavailable()
    if reason is not None:
        if os.environ.get(POSTGRES_REQUIRED_ENV):
            pytest.fail(f"PostgreSQL is required ({POSTGRES_REQUIRED_ENV}) but {reason}")
        pytest.skip(f"no PostgreSQL server answers at {reason}")
    schema = f"sw_test_{uuid.uuid4().hex[:12]}"
    base = postgres_url()
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def pg_url():
    """A store URL on the test server, in a schema of the test's own."""
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """Where a test's store lives: a SQLite file, then a PostgreSQL schema (`pg_url`)."""
    if request.param == "sqlite":
        return str(tmp_path / "sw.db")
    return request.getfixturevalue("pg_url")


def pytest_terminal_summary(terminalreporter):
    """One loud line when the PostgreSQL tests were skipped. Read from the skip reports, which
    pytest-xdist's workers send here, not from this process's own list."""
    marker = "no PostgreSQL server answers at "
    reasons = [
        str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for report in terminalreporter.stats.get("skipped", [])
    ]
    skipped = [reason for reason in reasons if marker in reason]
    if skipped:
        where = skipped[0].split(marker, 1)[1]
        terminalreporter.write_sep(
            "!",
            f"POSTGRESQL TESTS SKIPPED ({len(skipped)}): no server answers at {where}; "
            f"set {POSTGRES_URL_ENV} to run them",
            red=True,
            bold=True,
        )
