"""Stuck sets from the scenario, and one stuck event per stay, never two."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from stagewatch.analytics import STUCK_EVENT_NAME, announce, stuck
from stagewatch.analytics.stays import AnalyticsError
from tests.analytics.scenario import AS_OF, H24, H48, NEXT, ONSITE, X, _a, _c, _d, _e, _f, _g
from tests.builders import INTEGRATION, Runner, application

COLUMNS = (
    "application_id",
    "stage_id",
    "entered_at",
    "days_in_stage",
    "uncertainty_hours",
    "threshold_days",
)


def _rows(found):
    return [tuple(row[c] for c in COLUMNS) for row in found]


def test_current_stays_older_than_the_threshold(scenario):
    # Current at H132: e in Z 3.5 days, f in W 4.5, g in Next 4.5, h in X 3.5. Decided and
    # deleted applications are never stuck.
    assert _rows(stuck(scenario._conn, days=4, as_of=AS_OF)) == [
        ("app-f", "st-w", H24, 4.5, 24.0, 4),
        ("app-g", "st-next", H24, 4.5, 24.0, 4),
    ]
    assert len(list(stuck(scenario._conn, days=3, as_of=AS_OF))) == 4
    assert list(stuck(scenario._conn, days=5, as_of=AS_OF)) == []


def test_per_stage_thresholds_by_id_or_name(scenario):
    found = stuck(scenario._conn, days=4, as_of=AS_OF, overrides={"z": 3, "st-w": 5})
    assert _rows(found) == [
        ("app-g", "st-next", H24, 4.5, 24.0, 4),
        ("app-e", "st-z", H48, 3.5, 24.0, 3),
    ]


def test_a_negative_threshold_is_refused(scenario):
    with pytest.raises(AnalyticsError, match="stuck threshold st-w must be zero or more days"):
        stuck(scenario._conn, days=4, as_of=AS_OF, overrides={"st-w": -1})


def test_each_stuck_stay_is_announced_once(scenario):
    conn, sent = scenario._conn, []
    first = announce(conn, stuck(conn, days=4, as_of=AS_OF), sent.extend, at=AS_OF)
    assert [r["application_id"] for r in first] == ["app-f", "app-g"]
    # A day later the same stays are still stuck, and e and h (both in since H48) have crossed
    # too: only they are news.
    later = AS_OF + timedelta(days=1)
    second = announce(conn, stuck(conn, days=4, as_of=later), sent.extend, at=later)
    assert [r["application_id"] for r in second] == ["app-e", "app-h"]
    assert [
        (e["event"], e["resource"]["prefect.resource.id"], e["payload"]["stage_id"]) for e in sent
    ] == [
        (STUCK_EVENT_NAME, f"kombo.application.{INTEGRATION}.app-f", "st-w"),
        (STUCK_EVENT_NAME, f"kombo.application.{INTEGRATION}.app-g", "st-next"),
        (STUCK_EVENT_NAME, f"kombo.application.{INTEGRATION}.app-e", "st-z"),
        (STUCK_EVENT_NAME, f"kombo.application.{INTEGRATION}.app-h", "st-x"),
    ]
    assert len({e["id"] for e in sent}) == 4 and all(isinstance(e["id"], uuid.UUID) for e in sent)
    assert [
        tuple(r)
        for r in conn.execute(
            "SELECT application_id, stage_id, threshold_days, days_in_stage, announced_at "
            "FROM stuck_announcements ORDER BY application_id"
        )
    ] == [
        ("app-e", "st-z", 4.0, 4.5, "2026-01-11T21:00:00.000Z"),
        ("app-f", "st-w", 4.0, 4.5, "2026-01-10T21:00:00.000Z"),
        ("app-g", "st-next", 4.0, 4.5, "2026-01-10T21:00:00.000Z"),
        ("app-h", "st-x", 4.0, 4.5, "2026-01-11T21:00:00.000Z"),
    ]


def test_a_new_stay_in_the_same_stage_is_announced_again(scenario):
    conn, sent = scenario._conn, []
    announce(conn, stuck(conn, days=4, as_of=AS_OF, job_id="job-3"), sent.extend, at=AS_OF)
    # g moves away and back (H144, H168): a new stay in Next, stuck again five days on.
    runner = Runner(scenario)
    rest = [
        _a(ONSITE, "HIRED"),
        _c(),
        _d("HIRED"),
        _e(("st-z", "Z")),
        _f(("st-w", "W")),
        application("app-h", X, job_id="job-2"),
    ]
    runner.run([*rest, _g(("st-free", "Free stage"))], hours=144)
    runner.run([*rest, _g(NEXT)], hours=168)
    as_of = datetime(2026, 1, 17, 9, tzinfo=UTC)
    again = announce(conn, stuck(conn, days=4, as_of=as_of, job_id="job-3"), sent.extend, at=as_of)
    assert [(r["application_id"], r["entered_at"]) for r in again] == [
        ("app-g", "2026-01-12T09:00:00.000Z")
    ]
    assert len(sent) == 2 and sent[0]["id"] != sent[1]["id"]


def test_the_event_for_a_stay_is_the_same_event_when_sent_again(scenario):
    conn = scenario._conn
    rows = list(stuck(conn, days=4, as_of=AS_OF))
    first, second = [], []
    announce(conn, rows, first.extend, at=AS_OF)
    conn.execute("BEGIN")  # a crash before the record: as if never recorded
    conn.execute("DELETE FROM stuck_announcements")
    conn.execute("COMMIT")
    announce(conn, rows, second.extend, at=AS_OF)
    assert [e["id"] for e in first] == [e["id"] for e in second]
    assert first[0]["payload"] == {
        "application_id": "app-f",
        "job_id": "job-2",
        "stage_id": "st-w",
        "stage_name": "W",
        "entered_at": H24,
        "entered_after": "2026-01-05T09:00:00.000Z",
        "days_in_stage": 4.5,
        "uncertainty_hours": 24.0,
        "threshold_days": 4,
    }
