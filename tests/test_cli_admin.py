"""`stagewatch unlock` and what `stagewatch status` shows of a held lock, through typer's CliRunner."""

from __future__ import annotations

import json
import os
import re
import socket

import pytest
from typer.testing import CliRunner

from stagewatch.cli import app
from stagewatch.store import LeaseLostError, Store
from tests.test_store_fixtures import INTEGRATION, application, db_rows

HOST = socket.gethostname()
STARTED = "2026-01-05T09:00:00.000Z"
LIVE_UNTIL = "2999-01-01T00:00:00.000Z"
RAN_OUT = "2026-01-05T09:05:00.000Z"
OTHER_MACHINE = "9b2f0c44-0000-4000-8000-000000000000/4026531836"


def invoke(*args: str, columns: int = 200):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


def rows(db, sql: str, params=()) -> list[tuple]:
    return db_rows(db, sql, params)


@pytest.fixture
def db(db_url):
    """The store: a SQLite file, then a PostgreSQL schema."""
    return db_url


def held_elsewhere(db, expires: str) -> None:
    """A run of INTEGRATION holding its lock from worker-7, another machine, until `expires`."""
    with Store(db) as store:
        run = store.begin_run(INTEGRATION, "full")
        store.stage_applications(run.id, [application("app-1")])
    rows(
        db,
        "UPDATE run_locks SET pid = 4242, hostname = 'worker-7', machine = ?, "
        "acquired_at = ?, renewed_at = ?, lease_expires_at = ?",
        (OTHER_MACHINE, STARTED, STARTED, expires),
    )


def test_unlock_refuses_a_live_lease_from_another_host_and_changes_nothing(db):
    held_elsewhere(db, LIVE_UNTIL)
    result = invoke("unlock", "--integration", INTEGRATION, "--db", str(db))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: integration '{INTEGRATION}' is locked by run 1 (pid 4242 on worker-7, started "
        f"{STARTED}, lease expires {LIVE_UNTIL}): its lease is live; stop that run, wait for the "
        "lease to run out, or pass --force to release it anyway\n",
    )
    assert rows(db, "SELECT run_id, hostname FROM run_locks") == [(1, "worker-7")]
    assert rows(db, "SELECT status FROM sync_runs") == [("running",)]
    assert rows(db, "SELECT count(*) FROM staged_seen") == [(1,)]


def test_unlock_releases_a_lease_that_ran_out_and_abandons_its_run(db):
    held_elsewhere(db, RAN_OUT)
    result = invoke("unlock", "-i", INTEGRATION, "--db", str(db))
    assert (result.exit_code, result.output) == (
        0,
        f"Released the lock of {INTEGRATION}: run 1 (pid 4242 on worker-7, lease expired "
        "2026-01-05 09:05:00 UTC). Run 1 is marked abandoned and its staging discarded.\n",
    )
    assert rows(db, "SELECT count(*) FROM run_locks") == [(0,)]
    ((status, error),) = rows(db, "SELECT status, error FROM sync_runs")
    assert status == "abandoned"
    assert re.fullmatch(r"lock released by an operator at \d{4}-\d\d-\d\dT[\d:.]+Z", error)
    for table in ("staged_seen", "staged_applications", "staged_jobs"):
        assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)]


def test_unlock_refuses_a_live_process_here_and_force_releases_it(db):
    """This process holds the lock, so it is live whatever its lease says; --force releases it,
    and the run finds out at its next write."""
    with Store(db) as holder:
        run = holder.begin_run(INTEGRATION, "full")
        (expires,) = rows(db, "SELECT lease_expires_at FROM run_locks")[0]
        refused = invoke("unlock", "-i", INTEGRATION, "--db", str(db))
        assert refused.exit_code == 1
        assert f"locked by run 1 (pid {os.getpid()} on {HOST}" in refused.output
        assert "pass --force to release it anyway" in refused.output

        forced = invoke("unlock", "-i", INTEGRATION, "--force", "--db", str(db))
        assert (forced.exit_code, forced.output) == (
            0,
            f"Released the lock of {INTEGRATION}: run 1 (pid {os.getpid()} on {HOST}, lease "
            f"expires {expires[:19].replace('T', ' ')} UTC). Run 1 is marked abandoned and its "
            "staging discarded.\n",
        )
        with pytest.raises(LeaseLostError, match=r"lock released by an operator at .* while live"):
            holder.stage_applications(run.id, [application("app-1")])
    assert rows(db, "SELECT id, status FROM sync_runs") == [(1, "abandoned")]


def test_unlock_with_nothing_to_release_is_an_error(db, tmp_path):
    Store(db).close()
    result = invoke("unlock", "-i", INTEGRATION, "--db", str(db))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: integration '{INTEGRATION}' holds no lock: nothing to release\n",
    )
    missing = tmp_path / "nowhere.db"
    result = invoke("unlock", "-i", INTEGRATION, "--db", str(missing))
    assert (result.exit_code, result.output) == (1, f"Error: no stagewatch database at {missing}\n")
    assert not missing.exists()


def test_status_shows_who_holds_a_lock_and_until_when(db):
    held_elsewhere(db, LIVE_UNTIL)
    jsonl = invoke("status", "--db", str(db), "--format", "jsonl")
    (row,) = [json.loads(line) for line in jsonl.output.splitlines()]
    assert {k: v for k, v in row.items() if "lock" in k} == {
        "locked_by_run_id": 1,
        "locked_by_pid": 4242,
        "locked_by_hostname": "worker-7",
        "lock_renewed_at": STARTED,
        "lock_expires_at": LIVE_UNTIL,
    }
    note = (
        f"[1] {INTEGRATION}: locked by run 1 (pid 4242 on worker-7), lease expires "
        "2999-01-01 00:00:00 UTC, renewed 2026-01-05 09:00:00"
    )
    wide = invoke("status", "--db", str(db)).output.splitlines()
    assert any("│ running [1] │" in line for line in wide)
    assert wide[-1] == note
    narrow = invoke("status", "--db", str(db), columns=80).output.splitlines()
    assert max(map(len, narrow)) <= 80
    assert " ".join(narrow[-2:]) == note  # the note wraps below the table, not inside it
