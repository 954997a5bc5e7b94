"""The change log: every event kind and edge case, asserted as exact event rows."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewatch.diff import EVENT_KINDS, event_key
from stagewatch.store import Store
from tests.test_store_fixtures import (
    FINISHED,
    INTEGRATION,
    PIPELINE,
    Runner,
    application,
    at,
    counts,
    db_rows,
    event,
    events_without_keys,
    job,
)

H0 = "2026-01-05T09:00:00.000Z"
H2 = "2026-01-05T11:00:00.000Z"
H4 = "2026-01-05T13:00:00.000Z"
H6 = "2026-01-05T15:00:00.000Z"
H8 = "2026-01-05T17:00:00.000Z"

APPLIED = ("st-applied", "Applied")
SCREEN = ("st-screen", "Phone screen")
ONSITE = ("st-onsite", "Onsite")
OFFER = ("st-offer", "Offer")


@pytest.fixture
def store(db_url):
    with Store(db_url, clock=lambda: FINISHED) as store:
        yield store


@pytest.fixture
def runner(store):
    return Runner(store)


def rows(store: Store, sql: str) -> list[tuple]:
    return db_rows(store.path, sql)


def test_first_seen_carries_stage_outcome_and_job(store, runner):
    result = runner.run(
        [
            application("app-1", APPLIED),
            application(
                "app-2",
                SCREEN,
                outcome="DECLINED",
                rejection_reason_name="Not a fit",
                rejected_at="2026-01-04T10:00:00Z",
            ),
        ],
        hours=0,
        jobs=[job()],
    )
    assert result == counts(first_seen=2)
    assert events_without_keys(store) == [
        event(
            "first_seen",
            "app-1",
            H0,
            None,
            1,
            to_stage_id="st-applied",
            to_stage_name="Applied",
            to_outcome="PENDING",
            to_job_id="job-1",
        ),
        event(
            "first_seen",
            "app-2",
            H0,
            None,
            1,
            to_stage_id="st-screen",
            to_stage_name="Phone screen",
            to_outcome="DECLINED",
            to_job_id="job-1",
            rejection_reason_name="Not a fit",
            rejected_at="2026-01-04T10:00:00.000Z",
        ),
    ]


def test_stage_moves_forward_and_backward_by_the_stored_job_order(store, runner):
    runner.run(
        [application("app-1", APPLIED), application("app-2", ONSITE), application("app-3", OFFER)],
        hours=0,
        jobs=[job()],
    )
    # No jobs staged in this run: the stored job snapshot gives the order.
    result = runner.run(
        [application("app-1", SCREEN), application("app-2", APPLIED), application("app-3", OFFER)],
        hours=2,
    )
    assert result == counts(stage_changed=2)
    assert events_without_keys(store, run_id=2) == [
        event(
            "stage_changed",
            "app-1",
            H2,
            H0,
            2,
            from_stage_id="st-applied",
            from_stage_name="Applied",
            to_stage_id="st-screen",
            to_stage_name="Phone screen",
            direction="forward",
        ),
        event(
            "stage_changed",
            "app-2",
            H2,
            H0,
            2,
            from_stage_id="st-onsite",
            from_stage_name="Onsite",
            to_stage_id="st-applied",
            to_stage_name="Applied",
            direction="backward",
        ),
    ]


def test_a_renamed_stage_is_not_a_move_but_the_snapshot_takes_the_new_name(store, runner):
    runner.run([application("app-1", SCREEN)], hours=0, jobs=[job()])
    renamed = [(sid, "Phone interview" if sid == "st-screen" else n, i) for sid, n, i in PIPELINE]
    result = runner.run(
        [application("app-1", ("st-screen", "Phone interview"))],
        hours=2,
        jobs=[job(stages=renamed)],
    )
    assert result == counts()
    assert [e["kind"] for e in store.events()] == ["first_seen"]
    assert rows(store, "SELECT stage_id, stage_name, version FROM applications") == [
        ("st-screen", "Phone interview", 1)
    ]
    assert rows(store, "SELECT name FROM job_stages WHERE stage_id = 'st-screen'") == [
        ("Phone interview",)
    ]


def test_a_change_to_untracked_fields_emits_nothing_but_updates_the_snapshot(store, runner):
    runner.run([application("app-1", APPLIED)], hours=0, jobs=[job()])
    before = rows(store, "SELECT content_hash FROM applications")
    result = runner.run(
        [
            application(
                "app-1",
                APPLIED,
                remote_updated_at="2026-01-05T10:00:00Z",
                custom_fields={"source": "referral"},
            )
        ],
        hours=2,
    )
    assert result == counts()
    assert [e["kind"] for e in store.events()] == ["first_seen"]
    (raw, content_hash, version, remote_updated_at, version_observed_at, last_run_id) = rows(
        store,
        "SELECT raw, content_hash, version, remote_updated_at, version_observed_at, last_run_id "
        "FROM applications",
    )[0]
    assert content_hash != before[0][0]
    assert json.loads(raw)["custom_fields"] == {"source": "referral"}
    assert (version, remote_updated_at, version_observed_at, last_run_id) == (
        1,
        "2026-01-05T10:00:00.000Z",
        H0,
        2,
    )


def test_a_stage_unknown_to_the_job_is_named_from_the_application(store, runner):
    runner.run([application("app-1", APPLIED)], hours=0, jobs=[job()])
    runner.run([application("app-1", ("st-ghost", "Reference check"))], hours=2)
    assert events_without_keys(store, kind="stage_changed") == [
        event(
            "stage_changed",
            "app-1",
            H2,
            H0,
            2,
            from_stage_id="st-applied",
            from_stage_name="Applied",
            to_stage_id="st-ghost",
            to_stage_name="Reference check",
            direction="unknown",
        )
    ]


def test_tied_or_missing_indices_give_an_unknown_direction(store, runner):
    # Kombo's own example has two stages sharing index 0; some ATSs give no index at all.
    stages = [("s-a", "A", 0), ("s-b", "B", 0), ("s-c", "C", None), ("s-d", "D", 2)]
    runner.run(
        [
            application("app-1", ("s-a", "A")),
            application("app-2", ("s-a", "A")),
            application("app-3", ("s-d", "D")),
        ],
        hours=0,
        jobs=[job(stages=stages)],
    )
    runner.run(
        [
            application("app-1", ("s-b", "B")),
            application("app-2", ("s-c", "C")),
            application("app-3", ("s-a", "A")),
        ],
        hours=2,
    )
    assert [
        (e["application_id"], e["from_stage_id"], e["to_stage_id"], e["direction"])
        for e in store.events(kind="stage_changed")
    ] == [
        ("app-1", "s-a", "s-b", "unknown"),
        ("app-2", "s-a", "s-c", "unknown"),
        ("app-3", "s-d", "s-a", "backward"),
    ]


def test_a_move_to_another_job_is_a_job_change_and_a_stage_change_of_unknown_direction(
    store, runner
):
    other = job("job-2", stages=[("st-j2-applied", "Applied", 0), ("st-j2-final", "Final", 9)])
    runner.run([application("app-1", APPLIED)], hours=0, jobs=[job(), other])
    result = runner.run([application("app-1", ("st-j2-final", "Final"), job_id="job-2")], hours=2)
    assert result == counts(job_changed=1, stage_changed=1)
    assert events_without_keys(store, run_id=2) == [
        event(
            "job_changed",
            "app-1",
            H2,
            H0,
            2,
            job_id="job-2",
            from_job_id="job-1",
            to_job_id="job-2",
        ),
        event(
            "stage_changed",
            "app-1",
            H2,
            H0,
            2,
            job_id="job-2",
            from_stage_id="st-applied",
            from_stage_name="Applied",
            to_stage_id="st-j2-final",
            to_stage_name="Final",
            direction="unknown",
        ),
    ]


def test_an_outcome_reversal_declined_back_to_pending_is_recorded(store, runner):
    runner.run([application("app-1", SCREEN)], hours=0, jobs=[job()])
    runner.run(
        [
            application(
                "app-1",
                SCREEN,
                outcome="DECLINED",
                rejection_reason_name="Withdrew",
                rejected_at="2026-01-05T10:15:00Z",
            )
        ],
        hours=2,
    )
    runner.run([application("app-1", SCREEN, outcome="PENDING")], hours=4)
    assert events_without_keys(store, kind="outcome_changed") == [
        event(
            "outcome_changed",
            "app-1",
            H2,
            H0,
            2,
            from_outcome="PENDING",
            to_outcome="DECLINED",
            rejection_reason_name="Withdrew",
            rejected_at="2026-01-05T10:15:00.000Z",
        ),
        event("outcome_changed", "app-1", H4, H2, 3, from_outcome="DECLINED", to_outcome="PENDING"),
    ]


def test_vanishing_from_a_full_listing_deletes_but_not_from_an_incremental_one(store, runner):
    runner.run([application("app-1"), application("app-2")], hours=0, jobs=[job()])
    assert runner.run([application("app-1")], hours=2, mode="incremental") == counts()
    assert runner.run([application("app-1")], hours=4, mode="full") == counts(deleted=1)
    assert runner.run([application("app-1")], hours=6, mode="full") == counts()
    assert runner.run([application("app-2")], hours=8, mode="incremental") == counts(restored=1)
    assert events_without_keys(store, application_id="app-2") == [
        event(
            "first_seen",
            "app-2",
            H0,
            None,
            1,
            to_stage_id="st-applied",
            to_stage_name="Applied",
            to_outcome="PENDING",
            to_job_id="job-1",
        ),
        event("deleted", "app-2", H4, H2, 3, deleted_reason="missing_from_full_listing"),
        event(
            "restored",
            "app-2",
            H8,
            H6,
            5,
            to_stage_id="st-applied",
            to_stage_name="Applied",
            to_outcome="PENDING",
            to_job_id="job-1",
        ),
    ]
    assert rows(
        store,
        "SELECT application_id, deleted_observed_at, deleted_reason, version FROM applications",
    ) == [("app-1", None, None, 1), ("app-2", None, None, 3)]


def test_remote_deletion_and_restore(store, runner):
    runner.run([application("app-1")], hours=0, jobs=[job()])
    deleted = application("app-1", remote_deleted_at="2026-01-05T10:30:00Z")
    assert runner.run([deleted], hours=2, mode="incremental") == counts(deleted=1)
    assert rows(store, "SELECT deleted_observed_at, deleted_reason FROM applications") == [
        (H2, "remote_deleted")
    ]
    # Still deleted, in either mode: nothing new.
    assert runner.run([deleted], hours=4, mode="full") == counts()
    assert runner.run([application("app-1")], hours=6, mode="incremental") == counts(restored=1)
    assert events_without_keys(store, run_id=2) + events_without_keys(store, run_id=4) == [
        event(
            "deleted",
            "app-1",
            H2,
            H0,
            2,
            deleted_at="2026-01-05T10:30:00.000Z",
            deleted_reason="remote_deleted",
        ),
        event(
            "restored",
            "app-1",
            H6,
            H4,
            4,
            to_stage_id="st-applied",
            to_stage_name="Applied",
            to_outcome="PENDING",
            to_job_id="job-1",
        ),
    ]


def test_an_application_first_seen_deleted_gets_both_events(store, runner):
    runner.run(
        [application("app-1", remote_deleted_at="2026-01-04T08:00:00Z")], hours=0, jobs=[job()]
    )
    assert [(e["kind"], e["deleted_at"]) for e in store.events()] == [
        ("first_seen", None),
        ("deleted", "2026-01-04T08:00:00.000Z"),
    ]


def test_replaying_a_snapshot_adds_nothing_and_a_to_b_twice_gives_two_events(store, runner):
    listing = [application("app-1", APPLIED)]
    runner.run(listing, hours=0, jobs=[job()])
    assert runner.run(listing, hours=1) == counts()
    runner.run([application("app-1", SCREEN)], hours=2)
    assert runner.run([application("app-1", SCREEN)], hours=3) == counts()
    runner.run([application("app-1", APPLIED)], hours=4)
    runner.run([application("app-1", SCREEN)], hours=6)
    moves = list(store.events(kind="stage_changed"))
    assert [(e["from_stage_id"], e["to_stage_id"], e["observed_at"]) for e in moves] == [
        ("st-applied", "st-screen", H2),
        ("st-screen", "st-applied", H4),
        ("st-applied", "st-screen", H6),
    ]
    assert len({e["event_key"] for e in store.events()}) == 4
    assert rows(store, "SELECT snapshot_version, kind FROM events ORDER BY id") == [
        (0, "first_seen"),
        (1, "stage_changed"),
        (2, "stage_changed"),
        (3, "stage_changed"),
    ]


def test_event_keys_are_deterministic_across_stores(tmp_path):
    keys = []
    for name in ("a.db", "b.db"):
        with Store(tmp_path / name) as store:
            runner = Runner(store)
            runner.run([application("app-1", APPLIED)], hours=0, jobs=[job()])
            runner.run([application("app-1", SCREEN, outcome="HIRED")], hours=5)
            keys.append([e["event_key"] for e in store.events()])
    assert keys[0] == keys[1]
    assert len(set(keys[0])) == 3


def test_overlapping_incremental_windows_never_duplicate(store, runner):
    runner.run([application("app-1"), application("app-2")], hours=0, jobs=[job()])
    runner.run([application("app-1", SCREEN)], hours=2, mode="incremental")
    # The next window overlaps the last: app-1 comes again, unchanged, with app-2's move.
    result = runner.run(
        [application("app-1", SCREEN), application("app-2", ONSITE)], hours=4, mode="incremental"
    )
    assert result == counts(stage_changed=1)
    assert [
        (e["application_id"], e["to_stage_id"]) for e in store.events(kind="stage_changed")
    ] == [
        ("app-1", "st-screen"),
        ("app-2", "st-onsite"),
    ]


def test_a_record_staged_twice_keeps_the_last(store, runner):
    runner.run(
        [[application("app-1", APPLIED), application("app-1", SCREEN)], [application("app-2")]],
        hours=0,
        jobs=[job()],
    )
    assert [(e["application_id"], e["to_stage_id"]) for e in store.events()] == [
        ("app-1", "st-screen"),
        ("app-2", "st-applied"),
    ]
    # Changed on page 1, back to the stored state on page 2: nothing happened.
    assert (
        runner.run(
            [[application("app-1", ONSITE)], [application("app-1", SCREEN), application("app-2")]],
            hours=2,
            mode="incremental",
        )
        == counts()
    )
    # Stored state first, a move last: the move counts.
    assert runner.run(
        [[application("app-1", SCREEN)], [application("app-1", OFFER)]], hours=4, mode="incremental"
    ) == counts(stage_changed=1)
    assert rows(store, "SELECT stage_id FROM applications WHERE application_id = 'app-1'") == [
        ("st-offer",)
    ]


def test_an_incomplete_listing_changes_nothing_but_the_run_row(store, runner):
    runner.run([application("app-1"), application("app-2")], hours=0, jobs=[job()], watermark=at(0))
    store_rows = "SELECT * FROM applications ORDER BY application_id"
    before = (rows(store, store_rows), rows(store, "SELECT * FROM events"))
    result = runner.run(
        [application("app-1", OFFER), application("app-3")],
        hours=2,
        jobs=[job(stages=[("st-applied", "Renamed", 0)])],
        complete=False,
        watermark=at(2),
    )
    assert result == counts()
    assert (rows(store, store_rows), rows(store, "SELECT * FROM events")) == before
    assert rows(store, "SELECT name FROM job_stages WHERE stage_id = 'st-applied'") == [
        ("Applied",)
    ]
    assert store.watermark(INTEGRATION) == at(0)
    assert rows(
        store, "SELECT status, events, next_watermark, error FROM sync_runs WHERE id = 2"
    ) == [("incomplete", 0, None, "listing ended early; staged records discarded")]
    for table in ("staged_seen", "staged_applications", "staged_jobs", "run_locks"):
        assert rows(store, f"SELECT count(*) FROM {table}") == [(0,)]


def test_a_stage_without_a_name_of_its_own_takes_the_jobs(store, runner):
    runner.run(
        [application("app-1", stage=None, current_stage_id="st-onsite")], hours=0, jobs=[job()]
    )
    assert [(e["to_stage_id"], e["to_stage_name"]) for e in store.events()] == [
        ("st-onsite", "Onsite")
    ]


def test_stage_history_has_one_row_per_stay(store, runner):
    runner.run([application("app-1", APPLIED)], hours=0, jobs=[job()])
    runner.run([application("app-1", SCREEN, outcome="DECLINED")], hours=2)
    runner.run([application("app-1", ONSITE)], hours=26)
    assert store.history("app-1") == [
        {
            "integration_id": INTEGRATION,
            "application_id": "app-1",
            "job_id": "job-1",
            "stage_id": "st-applied",
            "stage_name": "Applied",
            "entered_at": H0,
            "entered_after": None,
            "left_at": H2,
            "left_by": "stage_changed",
            "seconds_in_stage": 7200.0,
            "is_current": 0,
            "sync_run_id": 1,
            "event_id": 1,
        },
        {
            "integration_id": INTEGRATION,
            "application_id": "app-1",
            "job_id": "job-1",
            "stage_id": "st-screen",
            "stage_name": "Phone screen",
            "entered_at": H2,
            "entered_after": H0,
            "left_at": "2026-01-06T11:00:00.000Z",
            "left_by": "stage_changed",
            "seconds_in_stage": 86400.0,
            "is_current": 0,
            "sync_run_id": 2,
            "event_id": 2,
        },
        {
            "integration_id": INTEGRATION,
            "application_id": "app-1",
            "job_id": "job-1",
            "stage_id": "st-onsite",
            "stage_name": "Onsite",
            "entered_at": "2026-01-06T11:00:00.000Z",
            "entered_after": H2,
            "left_at": None,
            "left_by": None,
            "seconds_in_stage": None,
            "is_current": 1,
            "sync_run_id": 3,
            "event_id": 4,
        },
    ]


@settings(max_examples=300, deadline=None)  # a loaded CI machine is no failure
@given(
    integration=st.text() | st.sampled_from(["acme:greenhouse", 'q"uote', "back\\slash", "tab\t"]),
    application=st.text() | st.from_regex(r"[1-9A-HJ-NP-Za-km-z]{24}", fullmatch=True),
    kind=st.sampled_from(EVENT_KINDS),
    version=st.integers(min_value=0, max_value=2**40),
)
def test_event_keys_are_the_documented_hash_for_any_ids(integration, application, kind, version):
    documented = json.dumps([integration, application, kind, version])
    expected = hashlib.sha256(documented.encode()).hexdigest()[:32]
    assert event_key(integration, application, kind, version) == expected
