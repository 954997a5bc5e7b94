"""Stays from the scenario's known timeline: exact bounds, endings and durations, written by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stagewatch.analytics import STAY_FIELDS, stays
from stagewatch.analytics.stays import AnalyticsError
from tests.analytics.scenario import A_CREATED, AS_OF, D_CREATED, H0, H24, H48, H96, H120

# application, job, stage, entered_at, entered_after, entered_from, left_at, left_after, ended,
# days_in_stage, uncertainty_hours
EXPECTED = [
    (
        "app-a",
        "job-1",
        "st-applied",
        A_CREATED,
        A_CREATED,
        "created",
        H24,
        H0,
        "moved_forward",
        3.0,
        24.0,
    ),
    ("app-a", "job-1", "st-screen", H24, H0, "observed", H48, H24, "moved_backward", 1.0, 24.0),
    ("app-a", "job-1", "st-applied", H48, H24, "observed", H96, H48, "moved_forward", 2.0, 48.0),
    ("app-a", "job-1", "st-onsite", H96, H48, "observed", H120, H96, "hired", 1.0, 48.0),
    ("app-b", "job-1", "st-applied", H0, None, "observed", H48, H24, "moved_forward", 2.0, None),
    ("app-b", "job-1", "st-onsite", H48, H24, "observed", H96, H48, "deleted", 2.0, 48.0),
    # Declined before stagewatch first looked: the stay ends where it was first seen.
    ("app-c", "job-1", "st-screen", H0, None, "observed", H0, None, "declined", 0.0, None),
    ("app-d", "job-1", "st-applied", D_CREATED, D_CREATED, "created", H48, H24, "hired", 1.5, 24.0),
    ("app-e", "job-2", "st-x", H0, None, "observed", H24, H0, "moved_forward", 1.0, None),
    # Y and Z share an index: the move between them has no direction.
    ("app-e", "job-2", "st-y", H24, H0, "observed", H48, H24, "moved_unknown", 1.0, 24.0),
    ("app-e", "job-2", "st-z", H48, H24, "observed", None, None, "current", 3.5, 24.0),
    ("app-f", "job-2", "st-x", H0, None, "observed", H24, H0, "moved_unknown", 1.0, None),
    ("app-f", "job-2", "st-w", H24, H0, "observed", None, None, "current", 4.5, 24.0),
    ("app-g", "job-3", "st-free", H0, None, "observed", H24, H0, "moved_unknown", 1.0, None),
    ("app-g", "job-3", "st-next", H24, H0, "observed", None, None, "current", 4.5, 24.0),
    ("app-h", "job-1", "st-screen", H0, None, "observed", H48, H24, "job_changed", 2.0, None),
    ("app-h", "job-2", "st-x", H48, H24, "observed", None, None, "current", 3.5, 24.0),
]
COLUMNS = (
    "application_id",
    "job_id",
    "stage_id",
    "entered_at",
    "entered_after",
    "entered_from",
    "left_at",
    "left_after",
    "ended",
    "days_in_stage",
    "uncertainty_hours",
)


def _rows(found):
    return [tuple(stay[c] for c in COLUMNS) for stay in found]


def test_every_stay_with_its_bounds_ending_and_duration(scenario):
    assert _rows(stays(scenario._conn, as_of=AS_OF)) == EXPECTED


def test_a_stay_row_has_the_documented_fields(scenario):
    first = next(stays(scenario._conn, as_of=AS_OF))
    assert tuple(first) == STAY_FIELDS
    assert (first["stage_name"], first["stage_index"]) == ("Applied", 0)


def test_filters_by_job_and_since(scenario):
    found = _rows(
        stays(
            scenario._conn, as_of=AS_OF, job_id="job-2", since=datetime(2026, 1, 6, 9, tzinfo=UTC)
        )
    )
    assert found == [EXPECTED[9], EXPECTED[10], EXPECTED[12], EXPECTED[16]]


def test_other_integrations_are_left_out(scenario):
    assert list(stays(scenario._conn, as_of=AS_OF, integration_id="lever:nothing")) == []


def test_the_view_and_stage_history_agree_on_the_observed_stays(scenario):
    """stage_stays builds on stage_history: same stays, same opening events."""
    conn = scenario._conn
    history = conn.execute("SELECT event_id, stage_id FROM stage_history ORDER BY event_id")
    view = conn.execute("SELECT event_id, stage_id FROM stage_stays ORDER BY event_id")
    assert [tuple(r) for r in view] == [tuple(r) for r in history]


def test_a_store_without_the_views_is_a_clear_error(tmp_path):
    import sqlite3

    conn = sqlite3.connect(tmp_path / "empty.db")
    with pytest.raises(AnalyticsError, match="cannot read stays: no such table: stage_stays"):
        list(stays(conn, as_of=AS_OF))


def test_a_restore_opens_a_new_stay_and_a_late_decline_counts_from_a_later_sighting(store):
    from tests.test_store_fixtures import Runner, application, job

    runner = Runner(store)
    gone = {"remote_deleted_at": "2026-01-06T08:00:00Z"}
    runner.run([application("app-r", ("st-applied", "Applied"))], hours=0, jobs=[job()])
    runner.run([application("app-r", ("st-applied", "Applied"), **gone)], hours=24)
    runner.run(
        [application("app-r", ("st-onsite", "Onsite")), application("app-n", ("st-screen", "S"))],
        hours=48,
    )
    # A new application already declined when first seen after the baseline: decided on entry.
    runner.run(
        [
            application("app-r", ("st-onsite", "Onsite")),
            application("app-n", ("st-screen", "S")),
            application("app-x", ("st-offer", "Offer"), "DECLINED"),
        ],
        hours=96,
    )
    assert _rows(stays(store._conn, as_of=AS_OF)) == [
        ("app-n", "job-1", "st-screen", H48, H24, "observed", None, None, "current", 3.5, 24.0),
        ("app-r", "job-1", "st-applied", H0, None, "observed", H24, H0, "deleted", 1.0, None),
        ("app-r", "job-1", "st-onsite", H48, H24, "observed", None, None, "current", 3.5, 24.0),
        ("app-x", "job-1", "st-offer", H96, H48, "observed", H96, H48, "declined", 0.0, 48.0),
    ]
