"""Stage `status` and `custom_fields` as Kombo's live API serves them, on top of an unchanged world."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from stagewatch.simulator import World, render
from stagewatch.simulator.world import Integration

NEW_STAGE_FIELDS = ("status", "custom_fields")


def listed_records(integ: Integration) -> tuple[list[dict], list[dict]]:
    jobs = [render.job(integ, job) for job in integ.jobs]
    rows = [row for row in range(integ.application_count) if integ.app_log.listed(row)]
    return jobs, [render.application(integ, row) for row in rows]


def fingerprint(world: World) -> str:
    """Every record of every integration, without the stage fields added for issue 23."""
    records = []
    for integration_id in world.integrations:
        jobs, apps = listed_records(world.integration(integration_id))
        for stage in [s for job in jobs for s in job["stages"]]:
            for name in NEW_STAGE_FIELDS:
                del stage[name]  # job stages had `status` before, but never a null one
        for stage in [app["current_stage"] for app in apps if app["current_stage"]]:
            for name in NEW_STAGE_FIELDS:
                del stage[name]
        records += jobs + apps
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def test_the_new_stage_fields_leave_every_seeds_world_as_it_was():
    """The fingerprints were taken before the fields existed: ids, names, moves, outcomes and
    deletions, at the start and after three simulated days, are what the seed gave then."""
    # The scenarios of the time: an appended one adds its own records.
    scenarios = ("normal", "no-applications", "no-outcomes", "no-stages", "setup-pending")
    world = World(seed=1, applications=300, jobs=10, scenarios=(*scenarios, "permission-missing"))
    assert fingerprint(world) == "8989de74a013cd15de74cebf170b9bc1e1b0fd8089e4d00e1d90fff2a343543b"
    world.advance(hours=72)
    assert fingerprint(world) == "47b14dbcbaffded1f41d7f951d087fa12e4abf63f2f1b4e2b1e0a25dfd5ce71a"


def test_status_is_the_stages_own_and_null_for_a_whole_pipeline_or_not_at_all():
    world = World(seed=1)
    integ = world.integration(world.normal_integration_id)
    jobs, _ = listed_records(integ)
    for job, record in zip(integ.jobs, jobs, strict=True):
        statuses = [s["status"] for s in record["stages"]]
        expected = ["ACTIVE" if s.active else "INACTIVE" for s in job.stages]
        assert statuses in (expected, [None] * len(expected))
    assert Counter(s["status"] for job in jobs for s in job["stages"]) == {
        "ACTIVE": 288,
        "INACTIVE": 10,
        None: 52,
    }


def test_an_applications_current_stage_is_its_jobs_stage_record_inactive_ones_included():
    world = World(seed=1)
    world.advance(hours=48)
    integ = world.integration(world.normal_integration_id)
    jobs, apps = listed_records(integ)
    stages = {s["id"]: s for job in jobs for s in job["stages"]}
    for app in apps:
        stage = stages[app["current_stage"]["id"]]
        assert app["current_stage"] == {
            "id": stage["id"],
            "remote_id": stage["remote_id"],
            "name": stage["name"],
            "index": stage.get("index"),
            "status": stage["status"],
            "custom_fields": stage["custom_fields"],
        }
    # Applications sit in stages the ATS has retired since; a null status hides which ones.
    assert Counter(app["current_stage"]["status"] for app in apps) == {
        "ACTIVE": 1621,
        "INACTIVE": 43,
        None: 334,
    }
