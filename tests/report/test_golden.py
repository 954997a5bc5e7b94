"""Pins what the report builders print for a fixed set of literal inputs, byte for byte.

A regression guard for restructuring `stagewatch.report`: the expected outputs live in
`tests/data/report_golden.json`. Changing an output on purpose means regenerating that file
(`python -m tests.report.test_golden`) and reading its diff in review.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from stagewatch import report
from stagewatch.report import SyncOutcome

GOLDEN = Path(__file__).parent.parent / "data" / "report_golden.json"

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 1, 6, 9, 30, 15, 250000, tzinfo=UTC)
INTEGRATION = "greenhouse:AbC"


def change(kind: str, app: str = "app1", **fields: Any) -> dict[str, Any]:
    base = {
        "event_key": f"k-{kind}-{app}-{fields.get('to_stage_id', '')}",
        "integration_id": INTEGRATION,
        "application_id": app,
        "kind": kind,
        "observed_at": "2026-01-06T09:30:15.250Z",
        "previous_observed_at": "2026-01-05T09:00:00.000Z",
        "job_id": "job1",
        "sync_run_id": 7,
    }
    return base | fields


def move(app: str, src: str | None, dst: str | None, direction: str | None, **fields: Any):
    return change(
        "stage_changed",
        app=app,
        from_stage_id=src and f"id-{src}",
        from_stage_name=src,
        to_stage_id=dst and f"id-{dst}",
        to_stage_name=dst,
        direction=direction,
        **fields,
    )


def hired(app: str, **fields: Any):
    return change("outcome_changed", app=app, from_outcome="PENDING", to_outcome="HIRED", **fields)


def declined(app: str, reason: str | None = None, **fields: Any):
    return change(
        "outcome_changed",
        app=app,
        from_outcome="PENDING",
        to_outcome="DECLINED",
        rejection_reason_name=reason,
        **fields,
    )


def outcome(**fields: Any) -> SyncOutcome:
    base = dict(
        integration_id=INTEGRATION,
        status="synced",
        mode="incremental",
        run_id=7,
        window_start=T0,
        listed_at=T1,
        complete=True,
        requests=4,
        duration_seconds=1.25,
        pages=2,
        applications=3,
        jobs=1,
    )
    return SyncOutcome(**(base | fields))


JOB_NAMES = {"job1": "Backend *Engineer*", "job2": "Chef, mail jobs@example.org", "job3": ""}
CANDIDATES = {"a1": "Ada Lovelace", "a3": "Grace | <Hopper>", "a4": "Call +49 30 1234567"}

MIXED = [
    change("first_seen", app="a0", to_stage_id="s1", to_stage_name="Applied"),
    move("a1", "Applied", "Interview", "forward"),
    move("a2", "Interview", "Applied", "backward", job_id="job2"),
    move("a5", None, "Offer", None, job_id=None),
    move("a6", "Offer", None, "unknown", job_id="job3", previous_observed_at=None),
    hired("a3", observed_at=T1),
    declined("a4", "Salary | too <high>", job_id="job2"),
    declined("a7", None),
    change("outcome_changed", app="a8", from_outcome="PENDING", to_outcome="ON_HOLD"),
    change("deleted", app="a9"),
]
MIXED_COUNTS = {
    "hired": 1,
    "declined": 2,
    "stage moved": 4,
    "outcome changed": 1,
    "deleted": 1,
    "first seen": 1,
}

MANY = [
    *[hired(f"h{i}") for i in range(6)],
    *[declined(f"d{i}", f"reason {i}") for i in range(5)],
    *[
        move(f"m{i}", f"S{i % 5}", f"S{(i * 3) % 7}", "backward" if i % 4 == 0 else "forward")
        for i in range(40)
    ],
]

HOSTILE = [
    move(
        "x1",
        "Screen\nwith jane.doe@example.com",
        "Call (030) 123 45 67 \t now",
        "forward",
        observed_at="not a time",
        previous_observed_at=12345,
    ),
    declined("x2", "Zo\ud83d \x07bell " + "long " * 40, job_id="jobX"),
    move("x3|<b>", "`code`", "[link](http://e.com)", "sideways", job_id="job|1"),
]

RUN_ROW = {
    "id": 7,
    "integration_id": INTEGRATION,
    "mode": "incremental",
    "started_at": "2026-01-05T10:00:00.000Z",
    "finished_at": "2026-01-05T10:00:42.500Z",
    "window_start": "2026-01-05T08:50:00.000Z",
    "observed_at": "2026-01-05T10:00:01.000Z",
    "next_watermark": "2026-01-05T09:50:01.000Z",
    "jobs_seen": 12,
    "applications_seen": 340,
    "quarantined": 1,
    "first_seen": 2,
    "stage_changed": 1,
    "outcome_changed": 3,
    "job_changed": 0,
    "deleted": None,
    "restored": 0,
    "requests": 9,
    "retries": 2,
    "waited_seconds": 1.5,
    "absent_rescued": None,
    "absent_deleted": None,
    "jobs_refetched": 3,
    "jobs_unavailable": None,
}
RUN_OUTCOMES = [
    {"kind": "outcome_changed", "to_outcome": o} for o in ("HIRED", "HIRED", "DECLINED")
]
FULL_RUN_ROW = RUN_ROW | {
    "mode": "full",
    "window_start": None,
    "finished_at": None,
    "absent_rescued": 4,
    "absent_deleted": 2,
    "deleted": 2,
    "jobs_unavailable": "INTEGRATION.JOBS_NOT_SUPPORTED",
}


def md(outcome_: SyncOutcome, events=(), **kwargs: Any) -> Callable[[], Any]:
    return lambda: report.integration_markdown(outcome_, list(events), **kwargs)


CASES: dict[str, Callable[[], Any]] = {
    # integration_markdown
    "md/synced-mixed-with-names": md(
        outcome(counts=MIXED_COUNTS), MIXED, job_names=JOB_NAMES, candidate_names=CANDIDATES
    ),
    "md/synced-mixed-without-names": md(outcome(counts=MIXED_COUNTS), MIXED, job_names=JOB_NAMES),
    "md/synced-mixed-empty-names": md(outcome(counts=MIXED_COUNTS), MIXED, candidate_names={}),
    "md/no-changes": md(outcome()),
    "md/one-change": md(outcome(counts={"stage moved": 1}), [MIXED[1]]),
    "md/counts-without-listed-events": md(outcome(counts={"hired": 3, "stage moved": 2})),
    "md/unknown-label-order": md(
        outcome(counts={"zeta": 2, "first seen": 1, "alpha": 1, "nil": 0})
    ),
    "md/baseline": md(outcome(counts={"first seen": 3}), baseline=True),
    "md/baseline-empty": md(outcome(mode="full", window_start=None), baseline=True),
    "md/not-ready": md(
        outcome(status="not_ready", error_code="INTEGRATION.SETUP_PENDING", complete=False)
    ),
    "md/unsupported": md(outcome(status="unsupported", error_code=None, complete=False)),
    "md/failed": md(
        outcome(
            status="failed",
            complete=False,
            message="PLATFORM.X: bad *key* for ops@example.com\n" + "detail " * 60,
            counts={"hired": 1},
        )
    ),
    "md/failed-no-message-no-times": md(
        outcome(status="failed", complete=False, listed_at=None, window_start=None)
    ),
    "md/published-late": md(report.outcome_from_run(RUN_ROW, RUN_OUTCOMES, published_late_by=9)),
    "md/published-late-full": md(
        report.outcome_from_run(FULL_RUN_ROW, [], published_late_by=11), baseline=True
    ),
    "md/on-time-from-run": md(report.outcome_from_run(RUN_ROW, RUN_OUTCOMES)),
    "md/quarantine-retries-incomplete-cache": md(
        outcome(
            quarantined=2,
            retries=3,
            waited_seconds=4.55,
            task_retries=1,
            complete=False,
            jobs_from_cache=True,
        )
    ),
    "md/jobs-unavailable": md(
        outcome(jobs_unavailable="INTEGRATION.JOBS_NOT_SUPPORTED", counts={"stage moved": 1}),
        [move("a1", "Applied", "Interview", "unknown")],
    ),
    "md/absent-rescued-and-deleted": md(
        outcome(mode="full", window_start=None, absent_rescued=3, absent_deleted=2)
    ),
    "md/absent-rescued-only": md(outcome(mode="full", window_start=None, absent_rescued=1)),
    "md/jobs-refetched": md(outcome(jobs_refetched=4)),
    "md/every-note": md(
        outcome(
            complete=False,
            quarantined=1,
            retries=1,
            waited_seconds=0.04,
            task_retries=2,
            jobs_from_cache=True,
            jobs_unavailable="X.Y",
            absent_rescued=1,
            absent_deleted=1,
            jobs_refetched=1,
            published_late_by=8,
        ),
        baseline=True,
    ),
    "md/caps-hit": md(
        outcome(counts={"hired": 6, "declined": 5, "stage moved": 40}),
        MANY,
        job_names=JOB_NAMES,
        candidate_names={"h0": "First Hire", "m0": "First Mover"},
        cap=3,
    ),
    "md/caps-default": md(outcome(counts={"hired": 6, "declined": 5, "stage moved": 40}), MANY),
    "md/counts-exceed-listed": md(
        outcome(counts={"hired": 4, "declined": 1, "stage moved": 9}), MIXED[:4], cap=2
    ),
    "md/hostile-text": md(
        outcome(
            integration_id="lever:x|<y>\n#1 +49 30 1234567",
            counts={"stage moved": 2, "declined": 1},
        ),
        HOSTILE,
        job_names={"jobX": "Nurse <script>alert(1)</script> 0049 30 1234567"},
        candidate_names={"x2": "Ev\u0000e\r\nSmith", "x3|<b>": "Mallory"},
    ),
    "md/datetime-fields": md(
        outcome(
            counts={"hired": 1},
            listed_at=datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        ),
        [hired("a1", observed_at=T1, previous_observed_at=datetime(2026, 1, 1))],
    ),
    # summary_markdown
    "summary/empty": lambda: report.summary_markdown([]),
    "summary/one": lambda: report.summary_markdown([outcome(counts={"hired": 1})]),
    "summary/every-status": lambda: report.summary_markdown(
        [
            outcome(counts={"hired": 2, "declined": 1, "stage moved": 5, "first seen": 9}),
            outcome(integration_id="lever:X", status="not_ready", message="setup | pending"),
            outcome(integration_id="bamboo:Y", status="failed", message="PLATFORM.X: " + "z" * 200),
            outcome(integration_id="ashby:Z", status="unsupported", mode="full"),
            outcome(integration_id="teamtailor:W|1", status="synced", counts={}),
        ]
    ),
    # event_table
    "rows/mixed": lambda: report.event_table(MIXED),
    "rows/capped-iterator": lambda: report.event_table(
        iter([change("deleted", app=f"a{i}", deleted_at=T0) for i in range(4)]), cap=3
    ),
    "rows/hostile-stays-raw": lambda: report.event_table(HOSTILE),
    "rows/empty": lambda: report.event_table([]),
    # prefect_event
    **{
        f"event/{i}-{e['kind']}": (lambda e=e: report.prefect_event(e, job_names=JOB_NAMES))
        for i, e in enumerate(MIXED)
    },
    "event/with-candidate-names": lambda: report.prefect_event(
        MIXED[6], job_names=JOB_NAMES, candidate_names=CANDIDATES
    ),
    "event/candidate-not-in-names": lambda: report.prefect_event(
        MIXED[1], candidate_names={"other": "Nobody"}
    ),
    "event/no-job-names": lambda: report.prefect_event(MIXED[2]),
    "event/no-job": lambda: report.prefect_event(MIXED[3], job_names=JOB_NAMES),
    "event/empty-job-name": lambda: report.prefect_event(MIXED[4], job_names=JOB_NAMES),
    "event/hostile": lambda: report.prefect_event(
        HOSTILE[0], candidate_names={"x1": "Reach me at x@y.io"}
    ),
    "event/hostile-decline": lambda: report.prefect_event(HOSTILE[1]),
    "event/unknown-kind": lambda: report.prefect_event(
        change("merged", app="u1", sync_run_id=None)
    ),
    "event/datetimes-and-extra-fields": lambda: report.prefect_event(
        change("deleted", app="d1", deleted_at=T0, observed_at=T1, unrelated="dropped")
    ),
    # capped_event
    "capped/with-id": lambda: report.capped_event(
        INTEGRATION, 7, {"first seen": 3, "stage moved": 1}, observed_at=T1
    ),
    "capped/baseline": lambda: report.capped_event(
        INTEGRATION, 7, {"first seen": 300}, observed_at=T0, baseline=True
    ),
    "capped/no-observed-at": lambda: report.capped_event(INTEGRATION, 7, {"first seen": 3}),
    "capped/no-run": lambda: report.capped_event(INTEGRATION, None, {}, observed_at=T0),
    # the helpers other modules call
    "outcome/from-run": lambda: report.outcome_from_run(RUN_ROW, RUN_OUTCOMES).model_dump(
        mode="json"
    ),
    "outcome/from-full-run-late": lambda: report.outcome_from_run(
        FULL_RUN_ROW, [], published_late_by=11
    ).model_dump(mode="json"),
    "labels/counts": lambda: list(report.label_counts([*MIXED, change("merged")]).items()),
    "labels/from-kinds": lambda: list(
        report.labels_from_kinds(
            {"first_seen": 5, "stage_changed": 2, "outcome_changed": 3, "deleted": 0, "odd": 1},
            [e for e in MIXED if e["kind"] == "outcome_changed"],
        ).items()
    ),
    "labels/each": lambda: [report.event_label(e) for e in MIXED + HOSTILE + [{"kind": None}]],
    "text/escape": lambda: [
        report.escape_md(v)
        for v in (None, "", "  ", 0, 12.5, "a|b", HOSTILE[1]["rejection_reason_name"], "x" * 130)
    ],
    "text/escape-ids": lambda: [
        report.escape_md(v, limit=10, redact=False)
        for v in ("+49 30 1234567", "a\ud800b", "x" * 20)
    ],
    "text/redact": lambda: [
        report.redact_contacts(v)
        for v in ("jane.doe+cv@mail.example.org", "(030) 123 45 67", "2026-01-05", "12345678")
    ],
    "text/keys": lambda: [
        f(i)
        for f in (report.slug, report.artifact_key, report.events_table_key)
        for i in (INTEGRATION, "greenhouse:abc", "::", "Ünïcode:ID", "x" * 80)
    ],
}


def jsonable(value: Any) -> Any:
    """Uuids tagged and tuples as lists, so the value round-trips through the JSON data file."""
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def rendered(name: str) -> Any:
    """One case's output as stored; markdown as its lines, so the data file diffs readably."""
    value = CASES[name]()
    if isinstance(value, str):
        return {"lines": value.split("\n")}
    return jsonable(value)


def render_all() -> dict[str, Any]:
    return {name: rendered(name) for name in CASES}


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_every_golden_case_is_still_built(golden):
    assert sorted(golden) == sorted(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_report_output_is_unchanged(golden, name):
    actual = rendered(name)
    assert actual == golden[name]
    # Equal values can still differ in key order or in 1 against 1.0 and True: compare the text too.
    assert json.dumps(actual) == json.dumps(golden[name])


if __name__ == "__main__":
    text = json.dumps(render_all(), indent=1, ensure_ascii=False) + "\n"
    # Lone surrogates (raw table values keep them) cannot be UTF-8: write them as JSON escapes.
    text = re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m[0]):04x}", text)
    GOLDEN.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {len(CASES)} cases to {GOLDEN}\n")
