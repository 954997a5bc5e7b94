"""Publishing a committed run late: its outcome rebuilt from the run row, the artifact saying it is
late, deterministic event ids, and which unpublished runs one sync publishes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from stagewatch import report
from stagewatch.publishing import plan_late
from stagewatch.report import SyncOutcome

INTEGRATION = "greenhouse:HWUTwvyx2wLoSUHphiWVrp28"
NAMESPACE = uuid.UUID("6f1b0a52-4c1e-4d8a-9a51-3c0a2f5f9e10")

RUN = {
    "id": 7,
    "integration_id": INTEGRATION,
    "mode": "incremental",
    "status": "succeeded",
    "started_at": "2026-01-05T10:00:00.000Z",
    "finished_at": "2026-01-05T10:00:42.500Z",
    "window_start": "2026-01-05T08:50:00.000Z",
    "observed_at": "2026-01-05T10:00:01.000Z",
    "next_watermark": "2026-01-05T09:50:01.000Z",
    "pid": 4242,
    "hostname": "worker-1",
    "jobs_seen": 12,
    "applications_seen": 340,
    "quarantined": 1,
    "events": 6,
    "first_seen": 2,
    "stage_changed": 1,
    "outcome_changed": 3,
    "job_changed": 0,
    "deleted": 0,
    "restored": 0,
    "requests": 9,
    "retries": 2,
    "waited_seconds": 1.5,
    "staged_records": 350,
    "error": None,
    "published_at": None,
    "publish_note": None,
    "absent_rescued": None,
    "absent_deleted": None,
    "jobs_refetched": 3,
    "jobs_unavailable": None,
}
OUTCOMES = [{"kind": "outcome_changed", "to_outcome": o} for o in ("HIRED", "HIRED", "DECLINED")]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_committed_runs_outcome_is_rebuilt_from_its_row():
    outcome = report.outcome_from_run(RUN, OUTCOMES, published_late_by=9)
    assert outcome == SyncOutcome(
        integration_id=INTEGRATION,
        status="synced",
        mode="incremental",
        run_id=7,
        window_start=at("2026-01-05T08:50:00"),
        listed_at=at("2026-01-05T10:00:01"),
        next_watermark=at("2026-01-05T09:50:01"),
        complete=True,
        counts={"hired": 2, "declined": 1, "stage moved": 1, "first seen": 2},
        jobs=12,
        applications=340,
        quarantined=1,
        jobs_refetched=3,
        requests=9,
        retries=2,
        waited_seconds=1.5,
        duration_seconds=42.5,
        published_late_by=9,
    )


def test_a_full_run_without_a_window_or_watermark():
    full = RUN | {"mode": "full", "window_start": None, "next_watermark": None, "events": 0}
    full |= dict.fromkeys(("first_seen", "stage_changed", "outcome_changed"), 0)
    outcome = report.outcome_from_run(full, [])
    assert (outcome.mode, outcome.window_start, outcome.next_watermark, outcome.counts) == (
        "full",
        None,
        None,
        {},
    )
    assert outcome.published_late_by is None


def test_the_artifact_of_a_late_run_says_so_under_its_title():
    outcome = report.outcome_from_run(RUN, OUTCOMES, published_late_by=9)
    lines = report.integration_markdown(outcome, []).splitlines()
    assert lines[:7] == [
        f"# {report.escape_md(report.short_id(INTEGRATION))}: incremental sync, 6 changes",
        "",
        "**Published late**, run 7 observed at 2026-01-05T10:00:01.000Z: the process that "
        "committed it stopped before publishing; run 9 published it.",
        "",
        f"**Integration:** {report.escape_md(INTEGRATION)}",
        "",
        "**Window:** changes after 2026-01-05T08:50:00.000Z, listing started "
        "2026-01-05T10:00:01.000Z",
    ]
    on_time = report.integration_markdown(report.outcome_from_run(RUN, OUTCOMES), [])
    assert "Published late" not in on_time


def test_event_ids_come_from_what_they_stand_for():
    change = {
        "event_key": "a" * 64,
        "integration_id": INTEGRATION,
        "application_id": "app-1",
        "kind": "outcome_changed",
        "to_outcome": "HIRED",
    }
    assert report.prefect_event(change)["id"] == uuid.uuid5(NAMESPACE, "a" * 64)
    observed = at("2026-01-05T10:00:01")
    capped = report.capped_event(INTEGRATION, 7, {"first seen": 3}, observed_at=observed)
    assert capped == {
        "event": "stagewatch.sync.events-capped",
        "resource": {
            "prefect.resource.id": f"kombo.integration.{INTEGRATION}",
            "prefect.resource.name": INTEGRATION,
        },
        "payload": {"sync_run_id": 7, "not_emitted": {"first seen": 3}, "baseline": False},
        "id": uuid.uuid5(NAMESPACE, f"events-capped:{INTEGRATION}:7:2026-01-05T10:00:01.000Z"),
    }
    # The same run sent again gets the same id; another run (or a recreated database's run 7,
    # observed at another time) another one; without the observation time Prefect picks one.
    again = report.capped_event(INTEGRATION, 7, {"first seen": 1}, observed_at=observed)
    assert again["id"] == capped["id"]
    later = report.capped_event(INTEGRATION, 7, {"first seen": 3}, observed_at=at("2026-02-01"))
    assert later["id"] != capped["id"]
    assert "id" not in report.capped_event(INTEGRATION, 7, {"first seen": 3})


def _runs(*events: int) -> list[dict]:
    return [{"id": n, "events": count} for n, count in enumerate(events, 1)]


def test_only_the_newest_unpublished_runs_with_changes_are_published_late():
    runs = _runs(5, 0, 3, 8, 0, 1)
    publish, settle = plan_late(runs, limit=2)
    assert [run["id"] for run in publish] == [4, 6]
    too_old = (
        "not published: only the newest 2 unpublished runs with changes are published late; "
        "`stagewatch changes` has its changes"
    )
    nothing = "no changes, so nothing to publish late"
    assert [(run["id"], note) for run, note in settle] == [
        (1, too_old),
        (2, nothing),
        (3, too_old),
        (5, nothing),
    ]


def test_within_the_limit_every_run_with_changes_is_published():
    publish, settle = plan_late(_runs(2, 4), limit=5)
    assert ([run["id"] for run in publish], settle) == ([1, 2], [])
    assert plan_late([], limit=5) == ([], [])
