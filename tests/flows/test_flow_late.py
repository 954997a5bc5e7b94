"""Runs committed but never published (a sync killed between diff-stages and publish) are
published late by the next flow run. The runs happen once, in a module fixture; each test checks
one behaviour of them."""

import json
import uuid
from types import SimpleNamespace

import pytest

import flows.sync
import stagewatch.publishing
from stagewatch import report
from stagewatch.simulator import World
from stagewatch.store import Store
from tests.flows.flowkit import (
    KEY,
    artifacts,
    expected_counts,
    params,
    record_events,
    route_to_simulator,
    table_counts,
)
from tests.reliability.harness import sync_in_process

# The namespace of Prefect event ids: uuid5 of a change's event_key, so one change is always one
# event id, whichever run (on time or late) sends it.
EVENT_ID_NAMESPACE = uuid.UUID("6f1b0a52-4c1e-4d8a-9a51-3c0a2f5f9e10")


def commit_without_publishing(world, transport, db, integration_id, change):
    """A sync killed between diff-stages and publish: the library steps, no Prefect."""
    world.advance(hours=1)
    change()
    return sync_in_process(db, transport, integration_id, KEY, page_size=40).outcome.run_id


@pytest.fixture(scope="module")
def late(prefect_harness, tmp_path_factory):
    """Runs 1-3 commit changes without publishing, run 4 finds nothing; then flow run 5 (late
    limit 2) declines one application, and flow run 6 finds nothing."""
    world = World(seed=15, applications=30, jobs=3, api_key=KEY, scenarios=("normal",))
    normal = world.normal_integration_id
    integ = world.integration(normal)
    job = next(j for j in integ.jobs if j.accepts_applications and len(j.active_positions()) >= 2)
    second = job.stages[job.active_positions()[1]]
    hired, declined = (
        integ.application_ids.encode(integ.create_application(job.id, "A", "B", email, None))
        for email in ("hired@example.org", "declined@example.org")
    )
    db = tmp_path_factory.mktemp("late") / "sw.db"
    with pytest.MonkeyPatch.context() as mp:
        transport = route_to_simulator(mp)(world)
        drain = record_events(mp)
        unpublished = [
            commit_without_publishing(world, transport, db, normal, change)
            for change in (
                lambda: None,  # 1: every application first seen
                lambda: integ.hire(hired),
                lambda: integ.set_stage(declined, second.id),
            )
        ] + [sync_in_process(db, transport, normal, KEY).outcome.run_id]  # 4: nothing new
        integ.decline(declined)
        mp.setattr(stagewatch.publishing, "LATE_RUNS_LIMIT", 2)
        state = flows.sync.sync_integration(params(normal, db), return_state=True)
        again = flows.sync.sync_integration(params(normal, db), return_state=True)
        emitted = drain("stagewatch.application.")
    with Store(db) as store:
        runs = {run_id: store.run(run_id) for run_id in range(1, 7)}
        events = {run_id: list(store.events(run_id=run_id)) for run_id in range(1, 7)}
    yield SimpleNamespace(
        normal=normal, unpublished=unpublished, state=state, again=again, runs=runs,
        events=events, emitted=emitted,
    )  # fmt: skip


def test_the_next_flow_run_marks_every_unpublished_run_with_what_became_of_it(late):
    assert late.unpublished == [1, 2, 3, 4]
    assert late.state.is_completed(), late.state.message
    assert late.state.result()[0]["run_id"] == 5
    marks = {
        run_id: (late.runs[run_id]["published_at"] is not None, late.runs[run_id]["publish_note"])
        for run_id in range(1, 6)
    }
    assert marks == {
        1: (
            True,
            "not published: only the newest 2 unpublished runs with changes are published late; "
            "`stagewatch changes` has its changes",
        ),
        2: (True, "published late by run 5"),
        3: (True, "published late by run 5"),
        4: (True, "no changes, so nothing to publish late"),
        5: (True, None),
    }
    assert [len(late.events[run_id]) for run_id in range(1, 6)] == [32, 1, 1, 0, 1]


def test_late_runs_are_published_oldest_first_each_saying_so_then_the_runs_own(late):
    normal = late.normal
    published = sorted(artifacts(late.state, report.artifact_key(normal)), key=lambda a: a.created)
    assert [a.description for a in published] == [
        f"Stage changes of {normal}, run 2, published late by run 5",
        f"Stage changes of {normal}, run 3, published late by run 5",
        f"Stage changes of {normal}, run 5",
    ]
    for artifact, run_id in zip(published, (2, 3, 5), strict=True):
        observed = late.events[run_id][0]["observed_at"]
        lines = artifact.data.splitlines()
        assert (
            lines[0] == f"# {report.escape_md(report.short_id(normal))}: incremental sync, 1 change"
        )
        said = (
            f"**Published late**, run {run_id} observed at {observed}: the process that "
            f"committed it stopped before publishing; run 5 published it."
        )
        assert (lines[2] == said) is (run_id != 5)
        assert table_counts(artifact.data) == expected_counts(late.events[run_id])


def test_each_published_run_tables_its_own_changes(late):
    key = report.events_table_key(late.normal)
    tables = sorted(artifacts(late.state, key), key=lambda a: a.created)
    assert [[row["event_key"] for row in json.loads(t.data)] for t in tables] == [
        [e["event_key"] for e in late.events[run_id]] for run_id in (2, 3, 5)
    ]


def test_every_published_change_is_one_event_whose_id_comes_from_its_key(late):
    # Run 1, too old to publish late, sent none.
    assert sorted((e.payload["sync_run_id"], e.event, e.id) for e in late.emitted) == sorted(
        (e["sync_run_id"], name, uuid.uuid5(EVENT_ID_NAMESPACE, e["event_key"]))
        for run_id, name in (
            (2, "stagewatch.application.hired"),
            (3, "stagewatch.application.stage-changed"),
            (5, "stagewatch.application.declined"),
        )
        for e in late.events[run_id]
    )


def test_once_all_is_published_the_next_run_publishes_only_itself(late):
    assert [a.description for a in artifacts(late.again, report.artifact_key(late.normal))] == [
        f"Stage changes of {late.normal}, run 6"
    ]
