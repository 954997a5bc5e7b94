"""Random sequences of listings: the change log always tells the same story as a plain model.

For any sequence of full and incremental listings (with repeated records whose last copy is the
real one, records Kombo returned unparseable, and records a full listing skipped that the lookup
by id still finds), the events equal what a straightforward per-application loop predicts, folding
the events rebuilds the stored snapshot of every live application, and applying every listing
twice adds no event and no key.
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewatch.store import Store
from tests.builders import application, at, job

APPS = ("app-0", "app-1", "app-2", "app-3")
JOBS = {
    "job-1": [("s1", "One", 0), ("s2", "Two", 1), ("s3", "Three", 2)],
    "job-2": [("t1", "Tee one", 0), ("t2", "Tee two", 0)],
}
OUTCOMES = (None, "PENDING", "DECLINED", "HIRED")
# How a listed record reaches stagewatch: intact, unparseable (quarantined, id known), or not at
# all (a full listing skipped it; the lookup by id finds it).
DELIVERIES = ("ok", "ok", "ok", "unparseable", "skipped")


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


@dataclass(frozen=True)
class Listing:
    mode: str
    present: dict[str, State]  # what Kombo holds (the lookup by id answers from it)
    records: list[tuple[str, State, str]]  # what the listing delivered, in order


@st.composite
def listings(draw) -> Listing:
    """One listing: its mode, Kombo's state, and the records in order, repeats included."""
    mode = draw(st.sampled_from(["full", "incremental"]))
    present = draw(st.dictionaries(st.sampled_from(APPS), states()))
    if mode == "full" or not present:
        listed = sorted(present)
    else:
        listed = draw(st.sets(st.sampled_from(sorted(present))))
    records = []
    for app_id in sorted(listed):
        delivery = draw(st.sampled_from(DELIVERIES))
        if delivery == "skipped" and mode != "full":
            delivery = "ok"
        if draw(st.booleans()):  # an older copy of the record arrives first in the same run
            records.append((app_id, draw(states()), "ok"))
        records.append((app_id, present[app_id], delivery))
    return Listing(mode, present, records)


def _changes(app_id: str, old: dict, new: State) -> list[tuple]:
    """The events one listed record adds to an application stored before."""
    if old["deleted"]:  # only a return is news; what changed while deleted is not
        return [] if new.remote_deleted else [("restored", app_id, None, None)]
    events = []
    if old["job_id"] != new.job_id:
        events.append(("job_changed", app_id, old["job_id"], new.job_id))
    if old["stage_id"] != new.stage_id:
        events.append(("stage_changed", app_id, old["stage_id"], new.stage_id))
    if old["outcome"] != new.outcome:
        events.append(("outcome_changed", app_id, old["outcome"], new.outcome))
    if new.remote_deleted:
        events.append(("deleted", app_id, None, None))
    return events


def model(listing_seq: list[Listing]):
    """The expected events per run, by a loop over applications that anyone can check by eye."""
    stored: dict[str, dict] = {}
    per_run = []
    for number, listing in enumerate(listing_seq):
        last = {app_id: (s, how) for app_id, s, how in listing.records if how != "skipped"}
        if listing.mode == "full":  # the lookup by id finds what is live here and in Kombo
            for app_id, old in stored.items():
                if app_id not in last and not old["deleted"] and app_id in listing.present:
                    last[app_id] = (listing.present[app_id], "ok")
        events = []
        for app_id, (new, how) in sorted(last.items()):
            old = stored.get(app_id)
            if how == "unparseable":
                continue  # listed, so not deleted, but nothing can be read from it
            if old is None:
                events.append(("first_seen", app_id, None, new.stage_id))
                if number > 0 and new.outcome in ("HIRED", "DECLINED"):
                    events.append(("outcome_changed", app_id, None, new.outcome))
                if new.remote_deleted:
                    events.append(("deleted", app_id, None, None))
            else:
                events.extend(_changes(app_id, old, new))
            stored[app_id] = {**vars(new), "deleted": new.remote_deleted}
        if listing.mode == "full":
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


def _run(store: Store, listing: Listing, hours: int, jobs: list) -> int:
    """One run of `listing`, with a full listing's missing applications looked up by id in
    Kombo's state, as the sync does before it records a deletion."""
    run = store.begin_run("greenhouse:x", listing.mode, started_at=at(hours))
    if jobs:
        store.stage_jobs(run.id, jobs)
    for app_id, state, how in listing.records:
        if how == "ok":
            store.stage_applications(run.id, [as_application(app_id, state)])
        elif how == "unparseable":
            store.stage_applications(run.id, [], unparsed_ids=[app_id])
    if listing.mode == "full":
        found = [a for a in store.absent_applications(run.id) if a in listing.present]
        store.stage_applications(run.id, [as_application(a, listing.present[a]) for a in found])
    store.commit_run(run.id, observed_at=at(hours))
    return run.id


def apply(path: Path, listing_seq: list[Listing], repeat: int) -> list[list[tuple]]:
    jobs = [job(job_id, stages) for job_id, stages in JOBS.items()]
    per_run = []
    with Store(path) as store:
        hours = 0
        for listing in listing_seq:
            for _ in range(repeat):
                run_id = _run(store, listing, hours, jobs if hours == 0 else [])
                per_run.append(
                    sorted(
                        (e["kind"], e["application_id"], *_aspect(e), e["event_key"])
                        for e in store.events(run_id=run_id)
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
            elif e["kind"] == "restored":
                app.update(
                    job_id=e["to_job_id"],
                    stage_id=e["to_stage_id"],
                    outcome=e["to_outcome"],
                    deleted=False,
                )
            else:
                app["deleted"] = True
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

        # A deleted application's fields may change without events (Kombo anonymises them), so
        # the fold rebuilds every live application and knows which are deleted.
        rebuilt = replay_events(once)
        snapshot = stored_snapshot(once)
        assert rebuilt == {
            app_id: state if not state["deleted"] else {**rebuilt[app_id], "deleted": True}
            for app_id, state in snapshot.items()
        }
        assert {a: s["deleted"] for a, s in rebuilt.items()} == {
            a: s["deleted"] for a, s in snapshot.items()
        }
        assert snapshot == {
            app_id: {k: v for k, v in s.items() if k != "remote_deleted"}
            for app_id, s in final.items()
        }
