"""The run lock as a lease: taken over once it runs out (from any host), at once only for a dead
process provably on this machine, renewed while its run lives, and lost for good once taken."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from datetime import timedelta

import pytest
from sqlite_utils import Database

from stagewatch.store import LeaseLostError, LockedError, Run, Store, StoreError, lease
from stagewatch.store.lease import LEASE_THREAD, machine_id
from stagewatch.store.schema import migrations
from tests.test_store import dead_pid, rows
from tests.test_store_fixtures import (
    FINISHED,
    INTEGRATION,
    OTHER_INTEGRATION,
    application,
    at,
    counts,
    job,
)

HOST = socket.gethostname()
T = FINISHED  # 2026-02-01T12:00:00Z
OTHER_MACHINE = "9b2f0c44-0000-4000-8000-000000000000/4026531836"


class Clock:
    """A clock the test moves, for the store's `clock=`."""

    def __init__(self, start=T) -> None:
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def path(db_url):
    """Where the store lives: a SQLite file, then a PostgreSQL schema."""
    return db_url


def move_holder(path, **columns) -> None:
    """Make the lock (and its run) look held by another process: the columns given change."""
    assignments = ", ".join(f"{name} = :{name}" for name in columns)
    rows(path, f"UPDATE run_locks SET {assignments}", columns)
    rows(path, f"UPDATE sync_runs SET {assignments} WHERE status = 'running'", columns)


def hold(path, clock: Clock) -> Run:
    """Begin a run that stages a job and an application, and leave it open (its store closes, so
    nothing renews its lease)."""
    with Store(path, clock=clock) as store:
        run = store.begin_run(INTEGRATION, "full")
        store.stage_jobs(run.id, [job()])
        store.stage_applications(run.id, [application("app-1")])
    return run


def taken_over(why: str, by: int = 2) -> str:
    return f"{why}; lock taken over by run {by} (pid {os.getpid()} on {HOST})"


EXPIRED_AT_FIVE = (
    "lease not renewed since 2026-02-01T12:00:00.000Z (expired 2026-02-01T12:05:00.000Z)"
)


def staged(path) -> list[int]:
    return [
        rows(path, f"SELECT count(*) FROM {table}")[0][0]
        for table in ("staged_jobs", "staged_seen", "staged_applications")
    ]


def test_a_lock_from_another_host_is_taken_over_once_its_lease_runs_out(path):
    clock = Clock()
    hold(path, clock)
    move_holder(path, hostname="worker-7", machine=OTHER_MACHINE, pid=os.getppid())
    clock.advance(300)
    with Store(path, clock=clock) as store:
        run = store.begin_run(INTEGRATION, "full")
        assert rows(path, "SELECT id, status, error FROM sync_runs ORDER BY id") == [
            (1, "abandoned", taken_over(EXPIRED_AT_FIVE)),
            (2, "running", None),
        ]
        assert rows(path, "SELECT * FROM run_locks") == [
            (
                INTEGRATION,
                run.id,
                os.getpid(),
                HOST,
                machine_id(),
                "2026-02-01T12:05:00.000Z",
                "2026-02-01T12:05:00.000Z",
                "2026-02-01T12:10:00.000Z",
            )
        ]
        assert staged(path) == [0, 0, 0]


def test_a_live_lease_from_another_host_is_refused_then_waited_for(path):
    clock = Clock()
    hold(path, clock)
    pid = dead_pid()  # dead here, but it ran elsewhere: that proves nothing
    move_holder(path, hostname="worker-7", machine=OTHER_MACHINE, pid=pid)
    clock.advance(299.9)
    with Store(path, clock=clock) as store, pytest.raises(LockedError) as caught:
        store.begin_run(INTEGRATION, "full")
    assert str(caught.value) == (
        f"integration '{INTEGRATION}' is locked by run 1 (pid {pid} on worker-7, started "
        "2026-02-01T12:00:00.000Z, lease expires 2026-02-01T12:05:00.000Z)"
    )
    assert (caught.value.hostname, caught.value.lease_expires_at) == (
        "worker-7",
        "2026-02-01T12:05:00.000Z",
    )
    assert staged(path) == [1, 1, 1]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock.advance(seconds)

    def monotonic():
        return (clock.now - T).total_seconds()

    with Store(path, clock=clock, sleep=sleep, monotonic=monotonic) as waiter:
        run = waiter.begin_run(INTEGRATION, "full", wait=60)
    assert (run.id, run.started_at, slept) == (2, T + timedelta(seconds=300.1), [0.2])


@pytest.mark.parametrize(
    "machine",
    [OTHER_MACHINE, "same boot, another pid namespace", None],
    ids=["another-boot", "another-pid-namespace", "not-recorded"],
)
def test_a_dead_pid_under_this_host_name_on_another_machine_waits_for_the_lease(path, machine):
    """Two containers on different hosts can share a host name; a restarted container keeps its
    name and reuses pids (in a new pid namespace): none of them is this machine."""
    if machine == "same boot, another pid namespace":
        machine = machine_id().split("/")[0] + "/1"
    clock = Clock()
    hold(path, clock)
    move_holder(path, pid=dead_pid(), machine=machine)
    clock.advance(299)
    with Store(path, clock=clock) as store:
        with pytest.raises(LockedError, match=f"on {HOST}, started"):
            store.begin_run(INTEGRATION, "full")
        clock.advance(1)
        assert store.begin_run(INTEGRATION, "full").id == 2
    assert rows(path, "SELECT error FROM sync_runs WHERE id = 1") == [
        (taken_over(EXPIRED_AT_FIVE),)
    ]


def test_a_dead_process_on_this_machine_frees_its_lock_before_its_lease_runs_out(path):
    clock = Clock()
    hold(path, clock)
    pid = dead_pid()
    move_holder(path, pid=pid)
    with Store(path, clock=clock) as store:
        assert store.begin_run(INTEGRATION, "full").id == 2
    assert rows(path, "SELECT id, status, error FROM sync_runs ORDER BY id") == [
        (1, "abandoned", taken_over(f"process died before committing (pid {pid} on {HOST})")),
        (2, "running", None),
    ]
    assert staged(path) == [0, 0, 0]


def test_without_a_readable_machine_identity_no_holder_is_provably_here(
    path, tmp_path, monkeypatch
):
    machine_id.cache_clear()
    monkeypatch.setattr(lease, "BOOT_ID", str(tmp_path / "no-boot-id"))
    try:
        assert machine_id() is None
        clock = Clock()
        hold(path, clock)
        move_holder(path, pid=dead_pid())
        assert rows(path, "SELECT machine FROM run_locks") == [(None,)]
        with Store(path, clock=clock) as store, pytest.raises(LockedError):
            store.begin_run(INTEGRATION, "full")
    finally:
        machine_id.cache_clear()


def test_renewing_keeps_a_long_runs_lease_alive_past_its_length(path):
    clock = Clock()
    with Store(path, clock=clock) as holder, Store(path, clock=clock) as other:
        run = holder.begin_run(INTEGRATION, "full")
        keeper = holder.lease_keeper(run.id)
        for _ in range(40):  # twenty minutes, a renewal every thirty seconds
            clock.advance(30)
            assert keeper.renew() is True
        assert rows(path, "SELECT renewed_at, lease_expires_at FROM run_locks") == [
            ("2026-02-01T12:20:00.000Z", "2026-02-01T12:25:00.000Z")
        ]
        clock.advance(299)
        with pytest.raises(LockedError, match=r"lease expires 2026-02-01T12:25:00\.000Z"):
            other.begin_run(INTEGRATION, "full")
        holder.stage_applications(run.id, [application("app-1")])
        assert holder.commit_run(run.id, observed_at=at(0)) == counts(first_seen=1)
        assert holder.lease_keeper(run.id) is None


def _lease_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(LEASE_THREAD)}


def test_a_held_run_has_a_renewing_thread_until_it_ends_or_its_store_closes(path):
    before = _lease_threads()

    def names() -> set[str]:
        return {t.name for t in _lease_threads() - before}

    with Store(path) as store:
        committed = store.begin_run(INTEGRATION, "full")
        failed = store.begin_run(OTHER_INTEGRATION, "full")
        assert names() == {f"{LEASE_THREAD}-{committed.id}", f"{LEASE_THREAD}-{failed.id}"}
        store.commit_run(committed.id, observed_at=at(0))
        assert names() == {f"{LEASE_THREAD}-{failed.id}"}
        store.fail_run(failed.id, error="HTTP 500")
        assert names() == set()
        left_open = store.begin_run(INTEGRATION, "full")
        assert names() == {f"{LEASE_THREAD}-{left_open.id}"}
    assert names() == set()


def test_a_run_whose_lease_was_taken_over_stops_and_the_takers_commit_stands(path):
    clock = Clock()
    listing = [application("app-1"), application("app-2")]
    with Store(path, clock=clock) as stale, Store(path, clock=clock) as taker:
        lost = stale.begin_run(INTEGRATION, "full")
        stale.stage_jobs(lost.id, [job()])
        stale.stage_applications(lost.id, listing[:1])
        clock.advance(301)  # its process froze, or its host was cut off: no renewal
        run = taker.begin_run(INTEGRATION, "full")
        assert stale.lease_keeper(lost.id).renew() is False
        message = f"sync run 1 lost the lock of '{INTEGRATION}': {taken_over(EXPIRED_AT_FIVE)}"
        with stale.application_stager(lost.id) as stager:
            stager(lost.id, listing)
            with pytest.raises(LeaseLostError) as caught:
                stager.flush()
        assert str(caught.value) == message
        for write in (
            lambda: stale.stage_applications(lost.id, listing[1:]),
            lambda: stale.stage_jobs(lost.id, [job()]),
            lambda: stale.commit_run(lost.id, observed_at=at(0)),
            lambda: stale.fail_run(lost.id, error="HTTP 500"),
        ):
            with pytest.raises(LeaseLostError) as caught:
                write()
            assert str(caught.value) == message
        assert stale.lease_keeper(lost.id) is None
        assert staged(path) == [0, 0, 0]
        taker.stage_jobs(run.id, [job()])
        taker.stage_applications(run.id, listing)
        assert taker.commit_run(run.id, observed_at=at(1)) == counts(first_seen=2)
        assert [(e["application_id"], e["kind"], e["sync_run_id"]) for e in taker.events()] == [
            ("app-1", "first_seen", 2),
            ("app-2", "first_seen", 2),
        ]
    assert rows(path, "SELECT id, status FROM sync_runs ORDER BY id") == [
        (1, "abandoned"),
        (2, "succeeded"),
    ]


def test_a_resumed_run_holds_and_renews_its_lease_again_unless_it_lost_it(path):
    clock = Clock()
    first = hold(path, clock)
    # The first attempt's process is gone, on another machine: its lease still holds.
    move_holder(path, hostname="worker-7", machine=OTHER_MACHINE, pid=dead_pid())
    clock.advance(100)
    with Store(path, clock=clock) as retry:
        assert retry.resume_run(first) is True
        assert retry.lease_keeper(first.id) is not None
        assert rows(path, "SELECT pid, hostname, machine, renewed_at FROM run_locks") == [
            (os.getpid(), HOST, machine_id(), "2026-02-01T12:01:40.000Z")
        ]
        assert rows(path, "SELECT lease_expires_at FROM run_locks") == [
            ("2026-02-01T12:06:40.000Z",)
        ]
        assert rows(path, "SELECT pid, hostname, machine FROM sync_runs") == [
            (os.getpid(), HOST, machine_id())
        ]
        assert retry.commit_run(first.id, observed_at=at(0)) == counts(first_seen=1)
        assert retry.resume_run(first) is False  # it succeeded: a retry begins a new run
    second = hold(path, clock)
    clock.advance(301)
    with Store(path, clock=clock) as taker:
        taker.begin_run(INTEGRATION, "full")
    with Store(path, clock=clock) as late:
        assert late.resume_run(second) is False
        assert late.lease_keeper(second.id) is None


def test_a_run_finished_under_this_host_name_on_another_machine_waits_the_grace_period(path):
    """Publishing late judges a run's process with the same identity as the lock does."""
    clock = Clock()
    with Store(path, clock=clock) as store:
        store.commit_run(store.begin_run(INTEGRATION, "full").id, observed_at=at(0))
        rows(path, "UPDATE sync_runs SET pid = ?, machine = ?", (dead_pid(), OTHER_MACHINE))
        assert store.unpublished_runs(INTEGRATION) == []
        clock.advance(30 * 60)
        assert [run["id"] for run in store.unpublished_runs(INTEGRATION)] == [1]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the upgrade of a SQLite file
def test_upgrading_turns_a_held_lock_into_a_lease_from_when_it_was_taken(path):
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrations.apply(db, stop_before="0004_run_leases")
    pid = dead_pid()
    db.conn.execute(
        "INSERT INTO sync_runs (id, integration_id, mode, status, started_at, pid, hostname) "
        "VALUES (1, ?, 'full', 'running', '2026-02-01T12:00:00.000Z', ?, ?)",
        (INTEGRATION, pid, HOST),
    )
    db.conn.execute(
        "INSERT INTO run_locks VALUES (?, 1, ?, ?, '2026-02-01T12:00:00.000Z')",
        (INTEGRATION, pid, HOST),
    )
    db.conn.close()
    clock = Clock(T + timedelta(seconds=299))
    with Store(path, clock=clock) as store:
        assert rows(path, "SELECT * FROM run_locks") == [
            (
                INTEGRATION,
                1,
                pid,
                HOST,
                None,
                "2026-02-01T12:00:00.000Z",
                "2026-02-01T12:00:00.000Z",
                "2026-02-01T12:05:00.000Z",
            )
        ]
        assert rows(path, "SELECT id, pid, machine FROM sync_runs") == [(1, pid, None)]
        with pytest.raises(LockedError):  # a dead pid, but not recorded as this machine's
            store.begin_run(INTEGRATION, "full")
        clock.advance(1)
        assert store.begin_run(INTEGRATION, "full").id == 2
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_a_lease_must_have_a_length(path):
    with pytest.raises(StoreError, match=r"^lease_seconds must be positive, not 0$"):
        Store(path, lease_seconds=0)
