"""Random sequences of listings: the change log always tells the same story as a plain model.

For any sequence of full and incremental listings (with repeated records whose last copy is the
real one), the events equal what a straightforward per-application loop predicts, folding the
events rebuilds the stored snapshot, and applying every listing twice adds no event and no key.
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewatch.store import Store
from tests.test_store_fixtures import Runner, application, job

APPS = ("app-0", "app-1", "app-2", "app-3")
JOBS = {
    "job-1": [("s1", "One", 0), ("s2", "Two", 1), ("s3", "Three", 2)],
    "job-2": [("t1", "Tee one", 0), ("t2", "Tee two", 0)],
}
OUTCOMES = (None, "PENDING", "DECLINED", "HIRED")


@dataclass(frozen=True)
class State:
    job_id: str
    stage_id: str | None
    outcome: str | None
    remote_deleted: bool


@st.composite
def states(draw) -> State:
    job_id = draw(st.sampled_from(sorted(JOBS)))
    stages = [sid for sid, _, _ in JOBS[job_id]] + ["unlisted", None]
    return State(
        job_id,
        draw(st.sampled_from(stages)),
        draw(st.sampled_from(OUTCOMES)),
        draw(st.booleans()),
    )


@st.composite
def listings(draw) -> tuple[str, list[tuple[str, State]]]:
    """One listing: its mode and the (application, state) records in order, repeats included."""
    mode = draw(st.sampled_from(["full", "incremental"]))
    present = draw(st.dictionaries(st.sampled_from(APPS), states()))
    if mode == "full" or not present:
        listed = sorted(present)
    else:
        listed = draw(st.sets(st.sampled_from(sorted(present))))
    records = []
    for app_id in sorted(listed):
        if draw(st.booleans()):  # an older copy of the record arrives first in the same run
            records.append((app_id, draw(states())))
        records.append((app_id, present[app_id]))
    return mode, records


def model(listing_seq):
    """The expected events per run, by a loop over applications that anyone can check by eye."""
    stored: dict[str, dict] = {}
    per_run = []
    for mode, records in listing_seq:
        last = dict(records)
        events = []
        for app_id, new in sorted(last.items()):
            old = stored.get(app_id)
            if old is None:
                events.append(("first_seen", app_id, None, new.stage_id))
                if new.remote_deleted:
                    events.append(("deleted", app_id, None, None))
                stored[app_id] = {**vars(new), "deleted": new.remote_deleted}
                continue
            if old["deleted"] and not new.remote_deleted:
                events.append(("restored", app_id, None, None))
            if old["job_id"] != new.job_id:
                events.append(("job_changed", app_id, old["job_id"], new.job_id))
            if old["stage_id"] != new.stage_id:
                events.append(("stage_changed", app_id, old["stage_id"], new.stage_id))
            if old["outcome"] != new.outcome:
                events.append(("outcome_changed", app_id, old["outcome"], new.outcome))
            if new.remote_deleted and not old["deleted"]:
                events.append(("deleted", app_id, None, None))
            stored[app_id] = {**vars(new), "deleted": new.remote_deleted}
        if mode == "full":
            for app_id, old in sorted(stored.items()):
                if app_id not in last and not old["deleted"]:
                    events.append(("deleted", app_id, None, None))
                    old["deleted"] = True
        per_run.append(sorted(events, key=lambda e: (e[0], e[1])))
    return per_run, stored


def as_application(app_id: str, state: State):
    names = {sid: name for sid, name, _ in JOBS[state.job_id]}
    stage = (state.stage_id, names.get(state.stage_id, "Unlisted")) if state.stage_id else None
    return application(
        app_id,
        stage,
        outcome=state.outcome,
        job_id=state.job_id,
        remote_deleted_at="2026-01-01T00:00:00Z" if state.remote_deleted else None,
    )


def apply(path: Path, listing_seq, repeat: int) -> list[list[tuple]]:
    jobs = [job(job_id, stages) for job_id, stages in JOBS.items()]
    per_run = []
    with Store(path) as store:
        runner = Runner(store)
        hours = 0
        for mode, records in listing_seq:
            for _ in range(repeat):
                pages = [[as_application(a, s)] for a, s in records] or [[]]
                runner.run(pages, hours=hours, mode=mode, jobs=jobs if hours == 0 else ())
                per_run.append(
                    sorted(
                        (e["kind"], e["application_id"], *_aspect(e), e["event_key"])
                        for e in store.events(run_id=runner.run_ids[-1])
                    )
                )
                hours += 1
    return per_run


def _aspect(event) -> tuple:
    kind = event["kind"]
    if kind == "first_seen":
        return (None, event["to_stage_id"])
    if kind == "stage_changed":
        return (event["from_stage_id"], event["to_stage_id"])
    if kind == "outcome_changed":
        return (event["from_outcome"], event["to_outcome"])
    if kind == "job_changed":
        return (event["from_job_id"], event["to_job_id"])
    return (None, None)


def replay_events(path: Path) -> dict[str, dict]:
    """Fold the change log into a state per application."""
    state: dict[str, dict] = {}
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        for e in conn.execute("SELECT * FROM events ORDER BY id"):
            app = state.setdefault(e["application_id"], {})
            if e["kind"] == "first_seen":
                app.update(
                    job_id=e["to_job_id"],
                    stage_id=e["to_stage_id"],
                    outcome=e["to_outcome"],
                    deleted=False,
                )
            elif e["kind"] == "stage_changed":
                app["stage_id"] = e["to_stage_id"]
            elif e["kind"] == "outcome_changed":
                app["outcome"] = e["to_outcome"]
            elif e["kind"] == "job_changed":
                app["job_id"] = e["to_job_id"]
            else:
                app["deleted"] = e["kind"] == "deleted"
    return state


def stored_snapshot(path: Path) -> dict[str, dict]:
    with sqlite3.connect(path) as conn:
        return {
            app_id: {
                "job_id": job_id,
                "stage_id": stage_id,
                "outcome": outcome,
                "deleted": deleted is not None,
            }
            for app_id, job_id, stage_id, outcome, deleted in conn.execute(
                "SELECT application_id, job_id, stage_id, outcome, deleted_observed_at "
                "FROM applications"
            )
        }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(listings(), min_size=1, max_size=6))
def test_events_match_the_model_rebuild_the_snapshot_and_replays_add_nothing(listing_seq):
    expected, final = model(listing_seq)
    with tempfile.TemporaryDirectory() as directory:
        once = Path(directory) / "once.db"
        twice = Path(directory) / "twice.db"
        applied = apply(once, listing_seq, repeat=1)
        assert [[event[:4] for event in run] for run in applied] == expected

        replayed = apply(twice, listing_seq, repeat=2)
        assert replayed[0::2] == applied
        assert replayed[1::2] == [[] for _ in applied]

        rebuilt = replay_events(once)
        snapshot = stored_snapshot(once)
        assert rebuilt == snapshot
        assert snapshot == {
            app_id: {k: v for k, v in s.items() if k != "remote_deleted"}
            for app_id, s in final.items()
        }
