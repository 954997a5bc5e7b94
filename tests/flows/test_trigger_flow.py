"""The `sync-on-change` flow on the Prefect test harness: it syncs the integration it is given, and
ends Completed as "Coalesced", without syncing, when another triggered run already waits; a burst
of runs in threads (as a runner starts one per event) syncs once more, holding a slot of the real
global concurrency limit, and records every change."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from flows.limits import ACCOUNT_LIMIT, ensure_limit
from flows.sync import ON_CHANGE_LIMIT, SyncIntegrationParams, sync_on_change
from stagewatch.pipeline import PlainSteps
from stagewatch.simulator import World
from stagewatch.store import Store
from tests.flows.flowkit import KEY
from tests.flows.test_trigger_coalesce import SNAPSHOT, Threads, holds_the_listing, rows, sync


def sync_runs(db) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT integration_id, status FROM sync_runs ORDER BY id").fetchall()


def test_a_triggered_run_syncs_or_coalesces_into_the_one_waiting(simulate, tmp_path):
    world = World(seed=23, applications=60, jobs=4, api_key=KEY, scenarios=("normal",))
    simulate(world)
    (integration_id,) = world.integrations
    db = tmp_path / "stagewatch.db"
    params = SyncIntegrationParams(integration_id=integration_id, db=str(db), jobs_cache_hours=0)
    with Store(db) as store:
        assert store.take_waiting_place(integration_id, "a-run-that-waits") is None

        coalesced = sync_on_change(params, return_state=True)
        assert (coalesced.type.value, coalesced.name) == ("COMPLETED", "Coalesced")
        assert coalesced.message == (
            f"{integration_id} already has a sync waiting (a-run-that-waits); it lists this "
            "change, so this run does not sync"
        )
        assert sync_runs(db) == []
        assert store.leave_waiting_place(integration_id, "a-run-that-waits") == 1

    synced = sync_on_change(params, return_state=True)
    assert (synced.type.value, synced.name) == ("COMPLETED", "Completed")
    assert sync_runs(db) == [(integration_id, "succeeded")]
    with Store(db) as store:
        changes = store.run(1)["events"]
        assert changes > 0 and synced.message == f"{changes} changes"
        assert store._conn.execute("SELECT count(*) FROM sync_waiters").fetchone()[0] == 0


@pytest.fixture
def one_slot(prefect_harness):
    """The triggered syncs' global limit with one slot, put back to missing afterwards (the
    first run of another test then creates it at its default)."""
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectNotFound):
            client.delete_global_concurrency_limit_by_name(ON_CHANGE_LIMIT)
        assert ensure_limit(client, ON_CHANGE_LIMIT, 1)  # each run's ensure_limit keeps it so
        yield
        client.delete_global_concurrency_limit_by_name(ON_CHANGE_LIMIT)


def slots_taken(recorded_events) -> list[str]:
    """The limits whose slots flow runs took, one entry per slot."""
    events = recorded_events("prefect.concurrency-limit.acquired")
    return [event.resource["prefect.resource.name"] for event in events]


def test_a_burst_of_runs_syncs_once_with_a_slot_and_the_rest_coalesce(
    simulate,
    one_slot,
    recorded_events,
    tmp_path,
):
    """A sync of `busy` is running (the test holds its lock); five triggered runs arrive: one
    waits, four end Coalesced. With the only slot free, another integration syncs meanwhile: the
    waiter holds none. One more change and trigger while the lock is held coalesce too; then the
    waiter syncs every change made before the last trigger."""
    world = World(seed=29, applications=60, jobs=4, api_key=KEY, scenarios=("normal", "normal"))
    simulate(world)
    busy, other = world.integrations
    db = tmp_path / "stagewatch.db"

    def run(integration_id: str):
        params = SyncIntegrationParams(
            integration_id=integration_id, db=str(db), jobs_cache_hours=0
        )
        return sync_on_change(params, return_state=True)

    assert run(busy).name == "Completed"  # the baseline
    threads = Threads()
    with Store(db) as store:
        running = store.begin_run(busy)
        world.advance(hours=3)
        for n in range(5):
            threads.start(f"r{n}", lambda: run(busy))
        threads.wait_for_results(4, "four runs to coalesce", timeout=120)
        threads.start("elsewhere", lambda: run(other))
        threads.wait_for_results(5, "the other integration, which no waiter may hold up", 120)
        assert threads.results.pop("elsewhere").name == "Completed"
        world.advance(hours=3)
        assert run(busy).name == "Coalesced"  # the last trigger
        store.fail_run(running.id, error="the test's sync is over")
    threads.wait_for_results(5, "the waiter's sync", timeout=120)
    threads.join()

    states = sorted(state.name for state in threads.results.values())
    assert states == ["Coalesced"] * 4 + ["Completed"]
    (waiter,) = (s for s in threads.results.values() if s.name == "Completed")
    assert sync_runs(db) == [
        (busy, "succeeded"),
        (busy, "failed"),
        (other, "succeeded"),
        (busy, "succeeded"),
    ]
    with Store(db) as store:
        changes = store.run(4)["events"]
    assert changes > 0 and waiter.message == f"{changes} changes"
    # One slot of each limit per sync (baseline, elsewhere, waiter), none for a run that
    # coalesced: the account's is the one the fan-out's syncs share.
    assert Counter(slots_taken(recorded_events)) == {ON_CHANGE_LIMIT: 3, ACCOUNT_LIMIT: 3}
    truth = tmp_path / "truth.db"
    assert sync(world, truth, busy, PlainSteps(), mode="full", key=KEY).status == "synced"
    assert holds_the_listing(rows(db, SNAPSHOT, busy), rows(truth, SNAPSHOT, busy))
