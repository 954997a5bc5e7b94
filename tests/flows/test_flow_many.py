"""`sync-many` over the simulator's seven scenario integrations, with injected faults: each
integration gets its own status and artifact, and one failure stops none. The runs happen once,
in a module fixture; each test checks one behaviour of them."""

from types import SimpleNamespace

import pytest

import flows.sync
import tasks.steps
from stagewatch import report
from stagewatch.simulator import FaultConfig, World
from stagewatch.store import Store
from tests.flows.flowkit import (
    KEY,
    artifacts,
    markdown_of,
    params,
    record_events,
    route_to_simulator,
)

EXPECTED = {
    "normal": "synced",
    "no-applications": "unsupported",
    "no-outcomes": "synced",
    "no-stages": "synced",
    "setup-pending": "not_ready",
    "permission-missing": "failed",
    "no-jobs": "synced",
}


@pytest.fixture(scope="module")
def many(prefect_harness, tmp_path_factory):
    """One `sync_many` of every scenario (30% faults, at most 5 events per run), then a later
    incremental run of the normal integration that declines 12 applications."""
    world = World(seed=5, applications=60, jobs=4, api_key=KEY)
    normal = world.normal_integration_id
    integ = world.integration(normal)
    gone = integ.application_ids.encode(40)  # deleted in the ATS before stagewatch first looks
    integ.delete_application(gone)
    db = tmp_path_factory.mktemp("many") / "sw.db"
    with pytest.MonkeyPatch.context() as mp:
        faults = FaultConfig(rate=0.3, kinds=("rate-limit", "html-500"), seed=2)
        transport = route_to_simulator(mp)(world, faults)
        drain = record_events(mp)
        mp.setattr(tasks.steps, "PROGRESS_EVERY_PAGES", 2)
        state = flows.sync.sync_many(
            flows.sync.SyncManyParams(
                integration_ids=list(world.integrations), db=str(db), page_size=10,
                max_concurrency=3, max_events=5,
            ),
            return_state=True,
        )  # fmt: skip
        world.advance(hours=1)
        for row in range(12):
            integ.decline(integ.application_ids.encode(row))
        later = flows.sync.sync_integration(params(normal, db, max_events=5))[0]
        emitted = drain()  # drains Prefect's events worker: once, at the end
    outcomes = {o["integration_id"]: o for o in state.result(raise_on_failure=False).outcomes}
    yield SimpleNamespace(
        world=world, normal=normal, gone=gone, db=db, transport=transport, state=state,
        outcomes=outcomes, later=later, emitted=emitted,
    )  # fmt: skip


def test_each_integration_ends_with_its_own_status_and_the_failure_names_itself(many):
    assert many.state.is_failed()
    lever = many.world.integration_for("permission-missing")
    assert many.state.message.startswith(f"1 of 7 failed: {lever} (INTEGRATION.PERMISSION_MISSING")
    statuses = {many.world.integrations[i]: o["status"] for i, o in many.outcomes.items()}
    assert statuses == EXPECTED
    with Store(many.db) as store:
        recorded = {
            many.world.integrations[r["integration_id"]]: r["last_run_status"]
            for r in store.status()
        }
    assert recorded == {s: {"synced": "succeeded"}.get(v, v) for s, v in EXPECTED.items()}


def test_the_summary_artifact_lists_every_integration_with_its_status(many):
    summary = artifacts(many.state, "stagewatch-sync-summary")[0].data
    assert summary.startswith(
        "# stagewatch sync: 7 integrations (4 synced, 1 not ready, 1 unsupported, 1 failed)"
    )
    for integration_id, outcome in many.outcomes.items():
        status = report.STATUS_LABELS[outcome["status"]]
        assert f"| {report.escape_md(integration_id)} | {status}" in summary


def test_every_injected_fault_is_retried_and_said_in_its_integrations_artifact(many):
    assert many.transport.stats()["faults_total"] == sum(
        o["retries"] for o in many.outcomes.values()
    )
    retried = [o for o in many.outcomes.values() if o["retries"]]
    assert retried, "a 30% fault rate over ~25 requests hits some"
    note = f"**Retries:** {retried[0]['retries']} request(s) retried after transient errors"
    assert note in markdown_of(many.state, retried[0]["integration_id"])


def test_an_integration_still_being_set_up_is_not_ready_and_asked_once(many):
    setup_pending = many.world.integration_for("setup-pending")
    not_ready = markdown_of(many.state, setup_pending)
    assert "**Not ready:** Kombo has not finished setting up this integration" in not_ready
    pending = many.outcomes[setup_pending]
    assert pending["requests"] == 1 + pending["retries"]  # 409 is not retried, faults are


def test_every_progress_artifact_reaches_100(many):
    progress = [a for a in artifacts(many.state) if a.type == "progress"]
    assert progress and all(a.data == 100.0 for a in progress)


def test_an_application_deleted_before_the_first_sync_is_recorded_deleted(many):
    outcome = many.outcomes[many.normal]
    assert outcome["counts"]["deleted"] == 1
    with Store(many.db) as store:
        (deleted,) = store.events(run_id=outcome["run_id"], kind="deleted")
    assert deleted["application_id"] == many.gone


def test_a_baseline_sends_no_change_events_only_a_capped_note_with_its_counts(many):
    for integration_id, outcome in many.outcomes.items():
        own = [e for e in many.emitted if e.payload.get("sync_run_id") == outcome.get("run_id")]
        if outcome["status"] != "synced":
            assert [e for e in many.emitted if integration_id in e.resource.id] == []
            continue
        assert [e for e in own if e.event.startswith("stagewatch.application.")] == []
        (capped,) = [e for e in own if e.event == "stagewatch.sync.events-capped"]
        assert capped.payload["baseline"] is True
        counted = {label: count for label, count in outcome["counts"].items() if count}
        assert capped.payload["not_emitted"] == counted
        assert counted["first seen"] > 5


def test_a_later_run_sends_at_most_max_events_declines_first_and_counts_the_rest(many):
    later = many.later
    assert later["counts"]["declined"] > 5
    own = [e for e in many.emitted if e.payload.get("sync_run_id") == later["run_id"]]
    changes = [e for e in own if e.event.startswith("stagewatch.application.")]
    assert [e.event for e in changes] == ["stagewatch.application.declined"] * 5
    (capped,) = [e for e in own if e.event == "stagewatch.sync.events-capped"]
    assert capped.payload["baseline"] is False
    assert sum(capped.payload["not_emitted"].values()) == sum(later["counts"].values()) - 5
