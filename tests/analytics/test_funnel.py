"""Funnels per job from the scenario: counts, conversion, medians, ties, nulls, a job without stages."""

from __future__ import annotations

from datetime import UTC, datetime

from stagewatch.analytics import FUNNEL_FIELDS, funnel
from tests.test_store_fixtures import INTEGRATION

COLUMNS = (
    "job_id",
    "stage_order",
    "stage_id",
    "order_note",
    "reached",
    "currently_in",
    "reached_later",
    "conversion",
    "median_days",
    "p90_days",
    "backward_out",
    "hired_in",
    "declined_in",
)
JOB_1 = [
    # Applied: a, b, d; a and b went on to a higher stage. Durations 1.5, 2, 2, 3.
    ("job-1", 1, "st-applied", None, 3, 0, 2, 0.6667, 2.0, 3.0, 0, 1, 0),
    # Screen: a (moved back), c (declined at once), h (left for job-2). Durations 0, 1, 2.
    ("job-1", 2, "st-screen", None, 3, 0, 1, 0.3333, 1.0, 2.0, 1, 0, 1),
    ("job-1", 3, "st-onsite", None, 2, 0, 0, 0.0, 1.5, 2.0, 0, 1, 0),
    # The last stage: nothing to convert to.
    ("job-1", 4, "st-offer", None, 0, 0, 0, None, None, None, 0, 0, 0),
]
JOB_2 = [
    ("job-2", 1, "st-x", None, 3, 1, 1, 0.3333, 1.0, 1.0, 0, 0, 0),
    # Y and Z share index 1: listed order decides, and neither converts to the other.
    ("job-2", 2, "st-y", "index shared", 1, 0, 0, None, 1.0, 1.0, 0, 0, 0),
    ("job-2", 3, "st-z", "index shared", 1, 1, 0, None, None, None, 0, 0, 0),
    ("job-2", 4, "st-w", "no index", 1, 1, 0, None, None, None, 0, 0, 0),
]
JOB_3 = [
    # No stages listed for the job: the applications' own, by name.
    ("job-3", 1, "st-free", "not among the job's stages", 1, 0, 0, None, 1.0, 1.0, 0, 0, 0),
    ("job-3", 2, "st-next", "not among the job's stages", 1, 1, 0, None, None, None, 0, 0, 0),
]


def _rows(found):
    return [tuple(row[c] for c in COLUMNS) for row in found]


def test_funnel_of_every_job_in_stage_order(scenario):
    assert _rows(funnel(scenario._conn, INTEGRATION)) == JOB_1 + JOB_2 + JOB_3


def test_job_totals_hires_declines_and_median_days_to_hire(scenario):
    rows = funnel(scenario._conn, INTEGRATION, job_id="job-1")
    # a: 2026-01-03 09:00 (created) to its hire on 01-10 09:00 = 7 days; d: 1.5 days.
    assert {(r["job_hired"], r["job_declined"], r["job_median_days_to_hire"]) for r in rows} == {
        (2, 1, 4.25)
    }
    assert (rows[0]["job_name"], rows[0]["stage_name"], rows[0]["stage_index"]) == (
        "Engineer job-1",
        "Applied",
        0,
    )
    assert tuple(rows[0]) == FUNNEL_FIELDS


def test_since_counts_only_stays_entered_from_then(scenario):
    rows = funnel(
        scenario._conn, INTEGRATION, job_id="job-1", since=datetime(2026, 1, 7, 9, tzinfo=UTC)
    )
    assert _rows(rows) == [
        ("job-1", 1, "st-applied", None, 1, 0, 1, 1.0, 2.0, 2.0, 0, 0, 0),
        ("job-1", 2, "st-screen", None, 0, 0, 0, None, None, None, 0, 0, 0),
        ("job-1", 3, "st-onsite", None, 2, 0, 0, 0.0, 1.5, 2.0, 0, 1, 0),
        ("job-1", 4, "st-offer", None, 0, 0, 0, None, None, None, 0, 0, 0),
    ]
    # a's first stay in the window began 01-07 09:00; hired 01-10 09:00.
    assert rows[0]["job_hired"] == 1 and rows[0]["job_median_days_to_hire"] == 3.0


def test_the_view_holds_the_same_numbers(scenario):
    conn = scenario._conn
    view = conn.execute(
        "SELECT * FROM job_funnel WHERE integration_id = ? ORDER BY job_id, stage_order",
        (INTEGRATION,),
    )
    columns = [c[0] for c in view.description]
    assert [dict(zip(columns, r, strict=True)) for r in view] == funnel(conn, INTEGRATION)


def test_an_unknown_integration_has_no_funnel(scenario):
    assert funnel(scenario._conn, "lever:unknown") == []
