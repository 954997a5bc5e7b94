"""Webhook-triggered syncs coalesce (`stagewatch.coalesce`): a burst of triggers for one
integration gives one running sync and one waiting, the rest end Coalesced, and what the store
holds afterwards is what Kombo held at the last webhook; only a trigger that syncs holds a slot of
the limit all integrations share, so a waiter never keeps another integration from syncing. Real
stores, the simulator in process, one thread per trigger as Prefect would run one flow run per
event, and `Limit` standing for Prefect's global concurrency limit."""

from __future__ import annotations

import subprocess
import sys
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from benchmarks.webhook_latency import holds_the_listing
from stagewatch import coalesce, pipeline
from stagewatch.kombo.client import KomboClient
from stagewatch.pipeline import PlainSteps, SyncOptions
from stagewatch.simulator import SimulatorTransport, World
from stagewatch.store import Store
from tests.reliability.harness import KOMBO_URL, Sleeps

KEY = "sk_trigger_tests"
OPTIONS = SyncOptions(jobs_cache_hours=0)
SNAPSHOT = (
    "SELECT application_id, job_id, stage_id, outcome, remote_deleted_at FROM applications "
    "WHERE integration_id = ? ORDER BY application_id"
)


class HeldAfterListing(PlainSteps):
    """Plain steps whose listing, once done, waits for `go`: a sync that is running and has
    listed, so it cannot see what changes after."""

    def __init__(self) -> None:
        super().__init__(lock_wait=0.0)
        self.listed = threading.Event()
        self.go = threading.Event()

    def fetch_applications(self, *args, **kwargs):
        found = super().fetch_applications(*args, **kwargs)
        self.listed.set()
        assert self.go.wait(30), "the test never let the held sync go on"
        return found


def sync(
    world: World, db: Path, integration_id: str, steps: PlainSteps, mode="incremental", key=KEY
):
    client = KomboClient(
        key,
        integration_id,
        base_url=KOMBO_URL,
        transport=SimulatorTransport(world),
        sleep=Sleeps(),
    )
    with client, Store(db) as store:
        options = OPTIONS.model_copy(update={"mode": mode})
        return pipeline.run_integration(
            integration_id, options, client=client, store=store, steps=steps
        )


class Limit:
    """Prefect's global concurrency limit as `coalesce.Slot` sees it: `slots` held at once, a
    TimeoutError when none came free in time. Counts what it granted and the waits that timed
    out, and wakes whoever waits for either."""

    def __init__(self, slots: int) -> None:
        self._free = threading.Semaphore(slots)
        self.changed = threading.Condition()
        self.holders: list[str] = []
        self.granted: list[str] = []
        self.timeouts = 0

    @contextmanager
    def slot(self, seconds: float, holder: str = "test"):
        if not self._free.acquire(timeout=seconds):
            with self.changed:
                self.timeouts += 1
                self.changed.notify_all()
            raise TimeoutError(f"no slot within {seconds} s")
        with self.changed:
            self.holders.append(holder)
            self.granted.append(holder)
        try:
            yield
        finally:
            with self.changed:
                self.holders.remove(holder)
            self._free.release()

    def for_(self, holder: str):
        return lambda seconds: self.slot(seconds, holder)

    def wait_for(self, predicate, what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, 20), f"timed out waiting for {what}"


def trigger(world: World, db: Path, integration_id: str, token: str, steps=None, limit=None):
    """One triggered sync, as `flows.sync.sync_on_change` runs it, with plain steps."""
    steps = steps or PlainSteps(lock_wait=0.0)  # only the coalescing waits for the lock
    with Store(db) as store:
        return coalesce.sync_coalesced(
            store,
            integration_id,
            token,
            lambda wrap: sync(world, db, integration_id, wrap(steps)),
            slot=limit.for_(token) if limit else coalesce.no_slot,
            slot_wait=0.01,
            poll=0.01,
        )


class Threads:
    def __init__(self) -> None:
        self.results: dict[str, object] = {}
        self._threads: list[threading.Thread] = []
        self._finished = threading.Condition()

    def start(self, name: str, work) -> None:
        def run():
            result = work()
            with self._finished:
                self.results[name] = result
                self._finished.notify_all()

        thread = threading.Thread(target=run, name=f"trigger-{name}")
        self._threads.append(thread)
        thread.start()

    def wait_for_results(self, count: int, what: str, timeout: float = 20.0) -> None:
        """Until `count` threads have finished (woken by each, no polling)."""
        with self._finished:
            done = self._finished.wait_for(lambda: len(self.results) >= count, timeout)
        assert done, f"timed out waiting for {what}"

    def join(self) -> None:
        for thread in self._threads:
            thread.join(30)
            assert not thread.is_alive(), f"{thread.name} never finished"


def rows(db: Path, sql: str, *args) -> list[tuple]:
    with Store(db, readonly=True) as store:
        return [tuple(row) for row in store._conn.execute(sql, args)]


@pytest.fixture
def world() -> World:
    return World(seed=18, applications=400, jobs=8, api_key=KEY, scenarios=("normal", "normal"))


def test_a_burst_runs_one_sync_queues_one_and_records_every_change(world, db_url, tmp_path):
    db = db_url  # a SQLite file, then a PostgreSQL schema
    busy, other = world.integrations
    assert sync(world, db, busy, PlainSteps()).status == "synced"  # the baseline
    held = HeldAfterListing()
    threads = Threads()
    limit = Limit(2)  # max_concurrency 2: t0 takes one slot, and the waiter must not take the other

    world.advance(hours=3)
    threads.start("t0", lambda: trigger(world, db, busy, "t0", held, limit))
    assert held.listed.wait(20)
    # Kombo changes more while t0 runs, and 8 webhooks for those changes arrive at once.
    world.advance(hours=3)
    burst = [f"t{i}" for i in range(1, 9)]
    for token in burst:
        threads.start(token, lambda token=token: trigger(world, db, busy, token, limit=limit))
    threads.wait_for_results(len(burst) - 1, "the burst to coalesce")
    # Different integrations do not wait: another one syncs (with the second slot) while `busy`
    # is held and its waiter waits for the lock.
    threads.start("elsewhere", lambda: trigger(world, db, other, "elsewhere", limit=limit))
    threads.wait_for_results(len(burst), "the other integration, which waited for busy's waiter")
    assert threads.results.pop("elsewhere").status == "synced"
    # The last webhook, for one more change, arrives while t0 still runs.
    world.advance(hours=3)
    assert isinstance(trigger(world, db, busy, "t9", limit=limit), coalesce.Coalesced)

    (waiter,) = set(burst) - set(threads.results)
    assert rows(db, "SELECT status, count(*) FROM sync_runs WHERE integration_id = ? "
                "GROUP BY status ORDER BY status", busy) == [("running", 1), ("succeeded", 1)]  # fmt: skip
    assert rows(db, "SELECT token, coalesced FROM sync_waiters") == [(waiter, 8)]
    assert {token: result for token, result in threads.results.items()} == {
        token: coalesce.Coalesced(busy, waiter) for token in burst if token != waiter
    }

    held.go.set()
    threads.join()
    assert threads.results["t0"].status == "synced"
    assert threads.results[waiter].status == "synced"
    assert rows(db, "SELECT * FROM sync_waiters") == []
    assert limit.granted == ["t0", "elsewhere", waiter]  # no coalesced trigger took a slot
    runs = rows(
        db, "SELECT status, events FROM sync_runs WHERE integration_id = ? ORDER BY id", busy
    )
    assert [status for status, _ in runs] == ["succeeded"] * 3
    assert runs[2][1] > 0, "the waiter found nothing t0 had not: the test proves nothing"

    # The truth at the last webhook: a fresh database's full listing of the same Kombo.
    truth = tmp_path / "truth.db"
    assert sync(world, truth, busy, PlainSteps(), mode="full").status == "synced"
    assert holds_the_listing(rows(db, SNAPSHOT, busy), rows(truth, SNAPSHOT, busy))


def test_with_nothing_running_a_trigger_syncs_at_once_and_leaves_no_place(world, tmp_path):
    db = tmp_path / "stagewatch.db"
    busy = world.normal_integration_id
    outcome = trigger(world, db, busy, "only")
    assert (outcome.status, outcome.integration_id) == ("synced", busy)
    assert rows(db, "SELECT * FROM sync_waiters") == []


def test_a_sync_that_fails_before_its_run_begins_frees_the_place(world, tmp_path):
    db = tmp_path / "stagewatch.db"
    busy = world.normal_integration_id

    def broken(wrap):
        raise RuntimeError("the Kombo key could not be read")

    with Store(db) as store, pytest.raises(RuntimeError, match=r"^the Kombo key could not"):
        coalesce.sync_coalesced(store, busy, "broken", broken)
    assert rows(db, "SELECT * FROM sync_waiters") == []
    assert trigger(world, db, busy, "next").status == "synced"


def test_the_place_of_a_waiter_that_died_is_taken_over(world, tmp_path):
    db = tmp_path / "stagewatch.db"
    busy = world.normal_integration_id
    Store(db).close()
    code = (
        "import sys\nfrom stagewatch.store import Store\n"
        "with Store(sys.argv[1]) as s:\n    assert s.take_waiting_place(sys.argv[2], 'dead') is None\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db), busy], check=True, timeout=60)
    assert rows(db, "SELECT token FROM sync_waiters") == [("dead",)]
    with Store(db) as store:
        assert store.take_waiting_place(busy, "alive") is None
        assert store.take_waiting_place(busy, "later") == "alive"
        assert store.leave_waiting_place(busy, "alive") == 1
        assert store.leave_waiting_place(busy, "alive") is None


def test_holding_the_listing_allows_only_purged_deletions():
    listed = [("a1", "j1", "s2", "PENDING", None)]
    assert holds_the_listing(listed, listed)
    purged = ("a2", "j1", "s1", "PENDING", "2026-01-05T10:00:00.000Z")
    assert holds_the_listing([*listed, purged], listed)
    assert not holds_the_listing([*listed, ("a2", "j1", "s1", "PENDING", None)], listed)
    assert not holds_the_listing([("a1", "j1", "s1", "PENDING", None)], listed)
    assert not holds_the_listing([], listed)


def test_the_waiting_place_on_both_backends(db_url):
    busy = "greenhouse:WaitingPlace0000000000000"
    with Store(db_url) as store:
        assert not store.lock_held(busy)
        assert store.take_waiting_place(busy, "first") is None
        assert store.take_waiting_place(busy, "second") == "first"
        assert store.take_waiting_place(busy, "first") is None  # its own place still
        assert store.renew_waiting_place(busy, "first")
        assert not store.renew_waiting_place(busy, "second")
        run = store.begin_run(busy)
        assert store.lock_held(busy)
        assert store.leave_waiting_place(busy, "first") == 1
        assert store.take_waiting_place(busy, "third") is None
        assert store.leave_waiting_place(busy, "third") == 0
        store.fail_run(run.id, error="the test is over")
        assert not store.lock_held(busy)


def test_a_waiter_keeps_its_place_while_no_slot_is_free(world, tmp_path):
    """Every slot is taken (other integrations syncing): the waiter asks again and again, renews
    its place each time, later triggers coalesce into it, and once a slot is free it syncs what
    all of them announced."""
    db = tmp_path / "stagewatch.db"
    busy = world.normal_integration_id
    assert sync(world, db, busy, PlainSteps()).status == "synced"
    limit, threads = Limit(1), Threads()
    with ExitStack() as others:
        others.enter_context(limit.slot(1, "another integration"))
        world.advance(hours=3)
        threads.start("w", lambda: trigger(world, db, busy, "w", limit=limit))
        limit.wait_for(lambda: limit.timeouts >= 2, "the waiter to ask for a slot twice")
        world.advance(hours=3)  # a change, and its webhook, while the waiter has no slot
        assert trigger(world, db, busy, "late", limit=limit) == coalesce.Coalesced(busy, "w")
        assert rows(db, "SELECT token, coalesced FROM sync_waiters") == [("w", 1)]
        assert rows(db, "SELECT count(*) FROM sync_runs WHERE integration_id = ?", busy) == [(1,)]
    threads.wait_for_results(1, "the waiter's sync")
    threads.join()
    assert threads.results["w"].status == "synced"
    assert limit.granted == ["another integration", "w"]
    assert rows(db, "SELECT * FROM sync_waiters") == []
    truth = tmp_path / "truth.db"
    assert sync(world, truth, busy, PlainSteps(), mode="full").status == "synced"
    assert holds_the_listing(rows(db, SNAPSHOT, busy), rows(truth, SNAPSHOT, busy))
