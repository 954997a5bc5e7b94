"""A stage's ACTIVE/INACTIVE status (issue 23): kept in the snapshot and the change log, marked in
the run's report, for the older response shape (no status) and the current one alike."""

from __future__ import annotations

from stagewatch.report.markdown import integration_markdown
from stagewatch.store import Store
from tests.builders import Runner, application, event, events_without_keys, job, snapshot
from tests.report.factories import event as change
from tests.report.factories import outcome

STAGES = (
    ("st-applied", "Applied", 0),
    ("st-screen", "Phone screen", 1),
    ("st-old", "Old screen", 2),
)


def _job_with_statuses(statuses: dict[str, str | None]):
    record = job().model_dump()
    record["stages"] = [
        {"id": sid, "name": name, "index": index, "status": statuses.get(sid)}
        for sid, name, index in STAGES
    ]
    return type(job()).model_validate(record)


def _app(app_id: str, stage: tuple[str, str], status: str | None, **fields):
    current = {"id": stage[0], "name": stage[1]}
    if status is not None:
        current["status"] = status
    return application(app_id, stage, current_stage=current, **fields)


def test_statuses_are_recorded_on_first_sightings_moves_and_the_snapshot(db_url):
    jobs = [
        _job_with_statuses({"st-applied": "ACTIVE", "st-screen": "ACTIVE", "st-old": "INACTIVE"})
    ]
    with Store(db_url) as store:
        runner = Runner(store)
        runner.run(
            [
                _app("a1", ("st-applied", "Applied"), "ACTIVE"),
                _app("a2", ("st-screen", "Phone screen"), None),
            ],
            hours=0,
            jobs=jobs,
        )
        runner.run(
            [
                _app("a1", ("st-old", "Old screen"), "INACTIVE"),
                # An ATS answering with a status Kombo's enum does not know yet: kept as given.
                _app("a2", ("st-applied", "Applied"), "ARCHIVED_STAGE"),
            ],
            hours=1,
        )
        moves = events_without_keys(store, kind="stage_changed")
        firsts = events_without_keys(store, kind="first_seen")
        rows = snapshot(store, "stage_id", "stage_status")

    assert [(e["application_id"], e["to_stage_status"]) for e in firsts] == [
        ("a1", "ACTIVE"),
        # The older shape says nothing on the application: the job's stage list does.
        ("a2", "ACTIVE"),
    ]
    _, second = runner.run_ids
    assert moves == [
        event(
            "stage_changed",
            "a1",
            "2026-01-05T10:00:00.000Z",
            "2026-01-05T09:00:00.000Z",
            second,
            from_stage_id="st-applied",
            from_stage_name="Applied",
            from_stage_status="ACTIVE",
            to_stage_id="st-old",
            to_stage_name="Old screen",
            to_stage_status="INACTIVE",
            direction="forward",
        ),
        event(
            "stage_changed",
            "a2",
            "2026-01-05T10:00:00.000Z",
            "2026-01-05T09:00:00.000Z",
            second,
            from_stage_id="st-screen",
            from_stage_name="Phone screen",
            from_stage_status="ACTIVE",
            to_stage_id="st-applied",
            to_stage_name="Applied",
            to_stage_status="ARCHIVED_STAGE",
            direction="backward",
        ),
    ]
    assert rows == [("a1", "st-old", "INACTIVE"), ("a2", "st-applied", "ARCHIVED_STAGE")]


def test_older_shape_without_any_status_records_none(db_url):
    with Store(db_url) as store:
        runner = Runner(store)
        runner.run([application("a1", ("st-applied", "Applied"))], hours=0, jobs=[job()])
        runner.run([application("a1", ("st-screen", "Phone screen"))], hours=1)
        (move,) = events_without_keys(store, kind="stage_changed")
        rows = snapshot(store, "stage_status")
    assert (move["from_stage_status"], move["to_stage_status"]) == (None, None)
    assert rows == [("a1", None)]


def test_report_marks_moves_into_and_out_of_inactive_stages():
    def move(app_id, from_status, to_status):
        return change(
            "stage_changed",
            app=app_id,
            from_stage_id="s1",
            from_stage_name="Screen",
            from_stage_status=from_status,
            to_stage_id="s2",
            to_stage_name="Interview",
            to_stage_status=to_status,
            direction="forward",
        )

    moves = [
        move("a1", "ACTIVE", "INACTIVE"),
        move("a2", "inactive", None),
        move("a3", None, "ACTIVE"),
    ]
    text = integration_markdown(outcome(counts={"stage moved": 3}), moves)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Screen" in line]
    assert any("| Screen → Interview \\(inactive\\) |" in row for row in rows), text
    assert any("| Screen \\(inactive\\) → Interview |" in row for row in rows), text
    assert any("| Screen → Interview |" in row for row in rows), text
    assert "ACTIVE" not in text
