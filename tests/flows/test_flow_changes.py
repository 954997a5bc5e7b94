"""Three syncs of one integration through the flow: what each run's artifacts and events say
about its changes, checked against the change log. The runs happen once, in a module fixture;
each test checks one behaviour of them."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import flows.sync
from stagewatch import report
from stagewatch.simulator import World
from stagewatch.store import Store, wait_for_checkpoints
from tests.flows.flowkit import (
    KEY,
    artifacts,
    expected_counts,
    markdown_of,
    params,
    record_events,
    route_to_simulator,
    table_counts,
)

NASTY_STAGE = "Tech *Interview* | [win](http://e.vil) <script>x</script>\nround `2`"
ESCAPED_STAGE = (
    r"Tech \*Interview\* \| \[win\]\(http\://e\.vil\) &lt;script&gt;x&lt;/script&gt; round \`2\`"
)
CANDIDATE = ("Ada | <b>", "Love_lace")
EMAIL = "ada.lovelace@example.org"
PHONE = "+44 20 7946 0958"


@pytest.fixture(scope="module")
def three_runs(prefect_harness, tmp_path_factory):
    """Run 1 is the baseline; run 2 moves an application to a stage with a hostile name and
    declines it; run 3 moves it back, with candidate names shown."""
    world = World(seed=11, applications=120, jobs=6, api_key=KEY, scenarios=("normal",))
    normal = world.normal_integration_id
    integ = world.integration(normal)
    job = next(j for j in integ.jobs if j.accepts_applications and len(j.active_positions()) >= 3)
    first, second = (job.stages[p] for p in job.active_positions()[:2])
    app_id = integ.application_ids.encode(
        integ.create_application(job.id, *CANDIDATE, EMAIL, PHONE, stage_id=first.id)
    )
    db = tmp_path_factory.mktemp("three-runs") / "sw.db"
    with pytest.MonkeyPatch.context() as mp:
        route_to_simulator(mp)(world)
        drain = record_events(mp)
        states = [flows.sync.sync_integration(params(normal, db), return_state=True)]
        world.advance(hours=1)
        integ.rename_stage(second.id, NASTY_STAGE)
        integ.set_stage(app_id, second.id)
        integ.decline(app_id, "Position filled")
        states.append(flows.sync.sync_integration(params(normal, db), return_state=True))
        world.advance(hours=1)
        integ.set_stage(app_id, first.id)
        shown = params(normal, db, show_candidate_names=True)
        states.append(flows.sync.sync_integration(shown, return_state=True))
        emitted = drain()
    outcomes = [state.result()[0] for state in states]
    with Store(db) as store:
        events = [list(store.events(run_id=o["run_id"])) for o in outcomes]
    yield SimpleNamespace(
        normal=normal, job=job, first=first, app_id=app_id, states=states,
        outcomes=outcomes, events=events, emitted=emitted,
    )  # fmt: skip


def test_every_run_syncs_and_its_artifact_counts_what_its_change_log_holds(three_runs):
    assert [o["status"] for o in three_runs.outcomes] == ["synced"] * 3
    for state, outcome, events in zip(
        three_runs.states, three_runs.outcomes, three_runs.events, strict=True
    ):
        markdown = markdown_of(state, three_runs.normal)
        assert table_counts(markdown) == expected_counts(events), markdown
        assert outcome["counts"] == expected_counts(events)
    assert three_runs.outcomes[0]["counts"]["first seen"] == 121


def test_the_baseline_is_counted_but_not_tabled(three_runs):
    baseline = three_runs.states[0]
    assert artifacts(baseline, report.events_table_key(three_runs.normal)) == []
    assert "**Baseline:** the first sync of this integration" in markdown_of(
        baseline, three_runs.normal
    )


def test_later_runs_table_every_change_in_change_log_order(three_runs):
    for state, events in zip(three_runs.states[1:], three_runs.events[1:], strict=True):
        (table,) = artifacts(state, report.events_table_key(three_runs.normal))
        assert [row["event_key"] for row in json.loads(table.data)] == [
            e["event_key"] for e in events
        ]
        assert "Baseline" not in markdown_of(state, three_runs.normal)


def test_no_artifact_or_event_holds_contact_data_or_the_api_key(three_runs):
    for state in three_runs.states:
        for artifact in artifacts(state):
            text = artifact.data if isinstance(artifact.data, str) else json.dumps(artifact.data)
            assert "@" not in text and "7946" not in text and KEY not in text
    for event in three_runs.emitted:
        assert EMAIL not in event.model_dump_json() and KEY not in event.model_dump_json()


def test_a_move_to_a_hostile_stage_name_and_a_decline_read_escaped_without_names(three_runs):
    t = three_runs
    markdown = markdown_of(t.states[1], t.normal)
    job, first = report.escape_md(t.job.name), report.escape_md(t.first.name)
    assert f"| {t.app_id} | {job} | {first} → {ESCAPED_STAGE} |" in markdown
    assert f"- **Declined**: {t.app_id}, job {job}, reason Position filled" in markdown
    assert "Ada" not in markdown and "Love" not in markdown


def test_candidate_names_and_backward_moves_show_when_asked(three_runs):
    t = three_runs
    markdown = markdown_of(t.states[2], t.normal)
    assert (
        rf"| {t.app_id} (Ada \| &lt;b&gt; Love\_lace) | {report.escape_md(t.job.name)} | "
        rf"{ESCAPED_STAGE} → {report.escape_md(t.first.name)} | **⚠ backward** |"
    ) in markdown
    named = [
        e.resource.name
        for e in three_runs.emitted
        if e.resource.id.endswith(t.app_id) and e.event.endswith("stage-changed")
    ]
    assert named == [str(t.app_id), "Ada | <b> Love_lace"]


def test_a_decline_is_one_event_on_the_application_related_to_its_integration_and_job(three_runs):
    t = three_runs
    (declined,) = [
        e
        for e in t.emitted
        if e.event == "stagewatch.application.declined" and e.resource.id.endswith(t.app_id)
    ]
    assert declined.resource.id == f"kombo.application.{t.normal}.{t.app_id}"
    assert {(r.role, r.id) for r in declined.related if r.role in ("integration", "job")} == {
        ("integration", f"kombo.integration.{t.normal}"),
        ("job", f"kombo.job.{t.normal}.{t.job.id}"),
    }
    assert declined.payload["to_outcome"] == "DECLINED"
    assert "Ada" not in declined.model_dump_json()


def jobs_listed(transport):
    return transport.stats()["requests"]["GET /ats/jobs"]


def sync(integration_id, db, **extra):
    return flows.sync.sync_integration(params(integration_id, db, **extra))[0]


def test_jobs_are_listed_once_per_integration_until_a_full_sync_lists_them_afresh(
    simulate, tmp_path
):
    world = World(
        seed=11, applications=40, jobs=4, api_key=KEY, scenarios=("normal", "no-outcomes")
    )
    transport = simulate(world)
    normal, other = world.normal_integration_id, world.integration_for("no-outcomes")
    db = tmp_path / "sw.db"

    assert [sync(normal, db)["jobs_from_cache"] for _ in range(3)] == [False, True, True]
    assert jobs_listed(transport) == 1
    assert sync(other, db)["jobs_from_cache"] is False
    assert sync(normal, db, mode="full")["jobs_from_cache"] is False
    assert jobs_listed(transport) == 3
    after_full = sync(normal, db)
    assert (after_full["jobs_from_cache"], after_full["status"]) == (True, "synced")
    assert jobs_listed(transport) == 3


def test_a_database_recreated_at_the_same_path_does_not_reuse_the_old_files_jobs(
    simulate, tmp_path
):
    world = World(seed=12, applications=30, jobs=3, api_key=KEY, scenarios=("normal",))
    transport = simulate(world)
    normal = world.normal_integration_id
    db = tmp_path / "sw.db"
    assert sync(normal, db)["run_id"] == 1
    # Run ids start over in the new file: the cached listing of the old file's run 1 must not
    # pass for the new one's. The flow runs leave their checkpoints running: wait for them.
    wait_for_checkpoints()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    fresh = sync(normal, db)
    assert (fresh["run_id"], fresh["jobs_from_cache"]) == (1, False)
    assert jobs_listed(transport) == 2
