"""The `sync-on-change` flow on the Prefect test harness: it syncs the integration it is given, and
ends Completed as "Coalesced", without syncing, when another triggered run already waits."""

from __future__ import annotations

import sqlite3

from flows.sync import SyncIntegrationParams, sync_on_change
from stagewatch.simulator import World
from stagewatch.store import Store
from tests.flows.flowkit import KEY


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
