"""Shared fixtures. The Prefect harness is session-scoped and lazy: only flow tests request it, so the
rest of the suite never starts a Prefect server."""

from __future__ import annotations

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


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, tests that share one expensive session fixture run on one worker:
    the browser tests share one Prefect server and its runs; the others one Prefect harness."""
    for item in items:
        if "browser" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.xdist_group("browser"))
        elif "prefect_harness" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("prefect"))
