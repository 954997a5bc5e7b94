"""A sync killed (SIGKILL) while staging or committing loses nothing and half-applies nothing.

A child process applies a run and is killed at a named point through the store's test hook; the
parent then checks the file is intact and exactly as before the run, and that rerunning gives the
same events and snapshot as a run that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from stagewatch.store import CRASH_ENV, Store
from tests.builders import Runner, application, at, job

ROOT = Path(__file__).resolve().parents[2]

CHILD = (
    "import sys; from pathlib import Path; from tests.store.test_crash import apply_second; "
    "apply_second(Path(sys.argv[1]))"
)

SCREEN = ("st-screen", "Phone screen")


def apply_first(path: Path) -> None:
    listing = [application(f"app-{n}") for n in (1, 2, 3, 4)]
    with Store(path) as store:
        Runner(store).run(listing, hours=0, jobs=[job()], watermark=at(-1))


def apply_second(path: Path) -> None:
    """Two pages: a move, a decline, an unchanged record, a new one; app-4 is gone."""
    pages = [
        [application("app-1", SCREEN), application("app-2", outcome="DECLINED")],
        [application("app-3"), application("app-5")],
    ]
    with Store(path) as store:
        Runner(store).run(pages, hours=3, jobs=[job()], watermark=at(2))


STATE_QUERIES = {
    "applications": "SELECT integration_id, application_id, job_id, stage_id, stage_name, outcome, "
    "deleted_observed_at, deleted_reason, version, content_hash, raw FROM applications "
    "ORDER BY application_id",
    "events": "SELECT event_key, application_id, kind, observed_at, previous_observed_at, "
    "from_stage_id, to_stage_id, direction, from_outcome, to_outcome, deleted_reason "
    "FROM events ORDER BY id",
    "jobs": "SELECT job_id, name, last_seen_at FROM jobs",
    "job_stages": "SELECT job_id, stage_id, name, stage_index, last_seen_at FROM job_stages "
    "ORDER BY stage_id",
    "watermarks": "SELECT integration_id, watermark FROM watermarks",
}


def state(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in STATE_QUERIES.items()}


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[tuple]]:
    path = tmp_path_factory.mktemp("reference") / "sw.db"
    apply_first(path)
    apply_second(path)
    return state(path)


@pytest.mark.parametrize(
    "point", ["stage:after_insert", "commit:start", "commit:after_diff", "commit:before_commit"]
)
def test_a_killed_sync_leaves_the_store_as_before_and_a_rerun_completes_it(
    tmp_path, point, uninterrupted
):
    path = tmp_path / "sw.db"
    apply_first(path)
    before = state(path)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=ROOT,
        env={**os.environ, CRASH_ENV: point},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert integrity(path) == "ok"
    assert state(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id, status FROM sync_runs ORDER BY id").fetchall() == [
            (1, "succeeded"),
            (2, "running"),
        ]
        assert conn.execute("SELECT run_id FROM run_locks").fetchall() == [(2,)]

    apply_second(path)  # takes over the dead run's lock, drops its staging, applies anew

    assert integrity(path) == "ok"
    assert state(path) == uninterrupted
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id, status FROM sync_runs ORDER BY id").fetchall() == [
            (1, "succeeded"),
            (2, "abandoned"),
            (3, "succeeded"),
        ]
        for table in ("staged_seen", "staged_applications", "staged_jobs", "run_locks"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_the_reference_run_changes_every_aspect(uninterrupted):
    """Guards the crash test's data: the second listing must exercise every part of the commit."""
    assert [(e[1], e[2]) for e in uninterrupted["events"][4:]] == [
        ("app-5", "first_seen"),
        ("app-1", "stage_changed"),
        ("app-2", "outcome_changed"),
        ("app-4", "deleted"),
    ]
    assert uninterrupted["watermarks"] == [
        ("greenhouse:HWUTwvyx2wLoSUHphiWVrp28", "2026-01-05T11:00:00.000Z")
    ]
