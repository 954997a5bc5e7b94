"""The one INFO line each pipeline step logs."""

from datetime import UTC, datetime

from stagewatch.report import logs

T = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_listing_lines_say_pages_counts_and_waits():
    jobs = {"jobs": 8, "pages": 1, "quarantined": 0, "unavailable": None}
    assert logs.jobs_line(jobs, 0.0) == "listed 8 jobs in 1 page"
    applications = {
        "applications": 300,
        "pages": 30,
        "quarantined": 2,
        "absent": 5,
        "rescued": 1,
        "jobs_refetched": 3,
    }
    assert logs.applications_line(applications, 4.25) == (
        "listed 300 applications in 30 pages, 2 quarantined; 5 missing from the full listing, "
        "1 of them still there; 3 jobs fetched again by id; waited 4.2 s on retries"
    )


def test_commit_and_publish_lines_count_by_kind():
    committed = {
        "run_id": 4,
        "counts": {"stage_changed": 12, "outcome_changed": 2, "deleted": 1, "first_seen": 0},
        "next_watermark": T,
    }
    assert logs.committed_line(committed) == (
        "committed run 4: 12 stage moved, 2 outcome changed, 1 deleted; "
        "next run lists after 2026-01-05T09:00:00.000Z"
    )
    assert logs.committed_line({"run_id": 5, "counts": {}}) == "committed run 5: no changes"
    sent = {"artifacts": ["a", "b"], "events_emitted": 5, "events_not_emitted": {"hired": 3}}
    assert logs.published_line(sent) == (
        "published 2 artifacts and 5 events; 3 changes counted in one capped event"
    )
    assert logs.opened_line(3, "incremental", T) == (
        "run 3 opened: incremental, changes after 2026-01-05T09:00:00.000Z"
    )
