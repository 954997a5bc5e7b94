"""Import -> Kombo's next sync (a simulated advance) -> stagewatch's sync -> the application's
history starts with a first sighting tagged `imported`; and the simulator imports for each ATS
shape of the spec."""

from __future__ import annotations

import pytest

from stagewatch import pipeline
from stagewatch.importer import Importer, InputRow
from stagewatch.pipeline import PlainSteps, SyncOptions
from stagewatch.simulator import World
from stagewatch.store import Store
from tests.imports.conftest import KEY, client_for


def sync(world: World, db, integration_id: str):
    client, _, _, _ = client_for(world, integration_id)
    with client, Store(db) as store:
        return pipeline.run_integration(
            integration_id, SyncOptions(), client=client, store=store, steps=PlainSteps()
        )


def test_an_imported_applications_history_starts_at_its_first_sighting_tagged_imported(
    world, db_url
):
    db = db_url
    integ = world.integration(world.normal_integration_id)
    baseline = sync(world, db, integ.id)
    world.advance(hours=2)
    backlog = integ.backlog[:2]
    client, _, _, _ = client_for(world, integ.id)
    rows = [InputRow(n, {"application_id": u.remote_id}) for n, u in enumerate(backlog, 2)]
    with client, Store(db) as store:
        results = Importer(integ.id, "greenhouse", client, store.import_ledger()).run(rows)
    imported = [r.application_id for r in results]
    assert [r.status for r in results] == ["imported", "imported"]

    before_kombo_syncs = sync(world, db, integ.id)
    world.advance(hours=1)  # Kombo's next sync lists them
    after = sync(world, db, integ.id)

    with Store(db) as store:
        sightings = store.import_ledger().first_sightings(integ.id)
        ledger = store.import_ledger().entries(integ.id)
        histories = [store.history(i, integ.id) for i in imported]
        observed = store.run(after.run_id)["observed_at"]
        previous = store.run(before_kombo_syncs.run_id)["observed_at"]
    tagged = [(s["application_id"], s["sync_run_id"]) for s in sightings if s["origin"] == "imported"]
    assert tagged == sorted((i, after.run_id) for i in imported)
    tracked = {s["sync_run_id"] for s in sightings if s["origin"] == "tracked"}
    assert baseline.run_id in tracked and before_kombo_syncs.run_id not in {
        s["sync_run_id"] for s in sightings if s["application_id"] in imported
    }
    assert sorted((e["application_id"], e["first_seen_run_id"], e["first_seen_at"])
                  for e in ledger.values()) == sorted((i, after.run_id, observed) for i in imported)  # fmt: skip
    for untracked, history in zip(backlog, histories, strict=True):
        stage = integ.jobs[untracked.job].stages[untracked.stage]
        assert [(h["stage_id"], h["entered_at"], h["entered_after"]) for h in history] == [
            (stage.id, observed, previous)
        ]


SHAPES = [
    ("greenhouse", "application_id", ("application_id",)),
    ("greenhousev3", "application_id", ("application_id",)),
    ("onlyfy", "application_id", ("application_id",)),
    ("recruitee", "placement_id", ("placement_id",)),
    ("successfactors", "application_remote_id", ("application_remote_id",)),
    ("smartrecruiters", "candidate_and_job_remote_ids", ("candidate_remote_id", "job_remote_id")),
    ("erecruiter", "application_and_job_remote_ids", ("application_remote_id", "job_remote_id")),
    (
        "erecruiter",
        "application_and_candidate_remote_ids",
        ("candidate_remote_id", "application_remote_id"),
    ),
]


@pytest.mark.parametrize(("tool", "id_type", "fields"), SHAPES)
def test_the_simulator_imports_for_every_shape_and_lists_the_ats_ids(tool, id_type, fields):
    world = World(seed=4, applications=60, jobs=4, api_key=KEY, scenarios=("normal",),
                  tools={"normal": tool})  # fmt: skip
    integ = world.integration(world.normal_integration_id)
    assert integ.id.startswith(f"{tool}:")
    untracked = integ.backlog[3]
    known = untracked.ids(integ.jobs)
    client, _, _, _ = client_for(world, integ.id)
    with client:
        wrong = {f: "0" for f in fields}
        with pytest.raises(Exception, match="No application in the"):
            client.import_tracked_application({tool: {"id_type": id_type, **wrong}})
        answer = client.import_tracked_application(
            {tool: {"id_type": id_type, **{f: known[f] for f in fields}}}
        )
        world.advance(hours=0)
        raw = client._shared.http.get(
            "/ats/applications",
            params={"ids": answer.application_id},
            headers={"X-Integration-Id": integ.id},
        ).json()
    (record,) = raw["data"]["results"]
    assert (record["remote_id"], record["candidate"]["remote_id"], record["job"]["remote_id"]) == (
        untracked.remote_id,
        untracked.candidate_remote_id,
        integ.jobs[untracked.job].remote_id,
    )
    assert record["remote_created_at"] < "2026-01-05" <= record["changed_at"]
