"""The receiver's ledger and its worker: durable dedupe, side effects with retries and backoff,
pending deliveries resent after a restart. The side effects are a recording fake: it stands for
Prefect, not for our code."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest

from stagewatch.webhooks import Delivery, Ledger, SideEffects, Worker, event_id
from stagewatch.webhooks.worker import MAX_DELAY_SECONDS, backoff_seconds

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
INTEGRATION = "greenhouse:CBNMt7dSNCzBdnRTx87dev4E"
DATA_CHANGED = Delivery(
    id="d-1",
    type="data-changed",
    integration_id=INTEGRATION,
    data={
        "integration_id": INTEGRATION,
        "integration_tool": "greenhouse",
        "integration_category": "ATS",
        "changed_models": [{"name": "ats_applications"}],
    },
)
CREATED = Delivery(
    id="d-2",
    type="integration-created",
    integration_id=INTEGRATION,
    data={"id": INTEGRATION, "tool": "greenhouse", "category": "ATS", "end_user": {}},
)
STATE = {
    "state": "INVALID",
    "setup_status": "COMPLETED",
    "qa_status": "PASSED",
    "updated_at": "2026-12-01T08:59:00.000Z",
}


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Recorder:
    """Prefect's side, recorded; `fail` makes the next N calls raise."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail = 0
        self.called = threading.Event()

    def _call(self, *record) -> None:
        self.called.set()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("Prefect API unreachable")
        self.calls.append(record)

    def effects(self) -> SideEffects:
        return SideEffects(
            emit_event=lambda **kw: self._call("emit", kw),
            add_integration=lambda i: self._call("add", i),
            remove_integration=lambda i: self._call("remove", i),
        )


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "stagewatch-webhooks.db") as ledger:
        yield ledger


def test_record_dedupes_by_id_and_keeps_the_first(ledger):
    assert ledger.record(DATA_CHANGED, status="pending", received_at=T0) is True
    again = Delivery(DATA_CHANGED.id, "data-changed", "other:1", {"changed": True})
    assert ledger.record(again, status="ignored", received_at=T0 + timedelta(seconds=1)) is False
    assert ledger.deliveries() == [
        {
            "id": "d-1",
            "type": "data-changed",
            "integration_id": INTEGRATION,
            "payload": (
                '{"changed_models": [{"name": "ats_applications"}], "integration_category": "ATS",'
                ' "integration_id": "greenhouse:CBNMt7dSNCzBdnRTx87dev4E",'
                ' "integration_tool": "greenhouse"}'
            ),
            "received_at": "2026-12-01T09:00:00.000Z",
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": "2026-12-01T09:00:00.000Z",
            "last_error": None,
            "finished_at": None,
        }
    ]


def test_dedupe_survives_a_restart(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger(path) as first:
        assert first.record(DATA_CHANGED, status="pending", received_at=T0)
    with Ledger(path) as second:
        assert not second.record(DATA_CHANGED, status="pending", received_at=T0)
        assert second.counts() == {"pending": 1}


def test_the_ledger_is_wal_and_synchronous_full(ledger):
    conn = sqlite3.connect(ledger.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn.close()


def test_integration_states_keep_history_and_report_the_latest(ledger):
    for n, (state, updated) in enumerate(
        [("INVALID", "2026-12-01T08:00:00.000Z"), ("ACTIVE", "2026-12-01T08:30:00.000Z")]
    ):
        delivery = Delivery(f"s-{n}", "integration-state-changed", INTEGRATION, {})
        fields = STATE | {"state": state, "updated_at": updated}
        ledger.record(delivery, status="pending", received_at=T0, state=fields)
    # A redelivery of the first adds nothing, though it arrives last.
    delivery = Delivery("s-0", "integration-state-changed", INTEGRATION, {})
    ledger.record(delivery, status="pending", received_at=T0, state=STATE)
    assert ledger.integration_states() == [
        {
            "integration_id": INTEGRATION,
            "state": "ACTIVE",
            "setup_status": "COMPLETED",
            "qa_status": "PASSED",
            "updated_at": "2026-12-01T08:30:00.000Z",
            "received_at": "2026-12-01T09:00:00.000Z",
            "delivery_id": "s-1",
        }
    ]
    rows = sqlite3.connect(ledger.path).execute("SELECT count(*) FROM integration_states")
    assert rows.fetchone()[0] == 2


def test_worker_performs_a_delivery_and_marks_it_done(ledger):
    recorder, clock = Recorder(), Clock()
    worker = Worker(ledger, recorder.effects(), clock=clock)
    ledger.record(DATA_CHANGED, status="pending", received_at=T0)
    ledger.record(CREATED, status="pending", received_at=T0)
    clock.advance(0.2)
    assert worker.run_pending() == 2
    assert recorder.calls == [
        (
            "emit",
            {
                "event": "kombo.data-changed",
                "resource": {"prefect.resource.id": f"kombo.integration.{INTEGRATION}"},
                "payload": {
                    "delivery_id": "d-1",
                    "integration_id": INTEGRATION,
                    "integration_tool": "greenhouse",
                    "integration_category": "ATS",
                    "changed_models": ["ats_applications"],
                    "delivery_ids": ["d-1"],
                },
                "id": event_id("d-1"),
            },
        ),
        ("add", INTEGRATION),  # before its event: an automation on it finds the integration listed
        (
            "emit",
            {
                "event": "kombo.integration-created",
                "resource": {"prefect.resource.id": f"kombo.integration.{INTEGRATION}"},
                "payload": {
                    "delivery_id": "d-2",
                    "integration_id": INTEGRATION,
                    "integration_tool": "greenhouse",
                    "integration_category": "ATS",
                },
                "id": event_id("d-2"),
            },
        ),
    ]
    rows = {row["id"]: row for row in ledger.deliveries()}
    assert {
        k: rows["d-1"][k] for k in ("status", "attempts", "next_attempt_at", "finished_at")
    } == {
        "status": "done",
        "attempts": 1,
        "next_attempt_at": None,
        "finished_at": "2026-12-01T09:00:00.200Z",
    }
    assert worker.run_pending() == 0


def test_ignored_deliveries_are_never_acted_on(ledger):
    recorder = Recorder()
    ledger.record(DATA_CHANGED, status="ignored", received_at=T0)
    assert Worker(ledger, recorder.effects(), clock=Clock()).run_pending() == 0
    assert recorder.calls == []


def test_worker_retries_with_backoff_until_done(ledger):
    recorder, clock = Recorder(), Clock()
    recorder.fail = 2
    worker = Worker(ledger, recorder.effects(), clock=clock, rand=lambda: 0.5)  # no jitter
    ledger.record(DATA_CHANGED, status="pending", received_at=T0)

    assert worker.run_pending() == 1
    (row,) = ledger.deliveries()
    assert (row["status"], row["attempts"], row["next_attempt_at"], row["last_error"]) == (
        "pending",
        1,
        "2026-12-01T09:00:01.000Z",
        "ConnectionError: Prefect API unreachable",
    )
    clock.advance(0.999)
    assert worker.run_pending() == 0  # not due yet
    clock.advance(0.001)
    assert worker.run_pending() == 1
    assert ledger.deliveries()[0]["next_attempt_at"] == "2026-12-01T09:00:03.000Z"  # +2 s
    clock.advance(2)
    assert worker.run_pending() == 1
    (row,) = ledger.deliveries()
    assert (row["status"], row["attempts"], row["last_error"]) == ("done", 3, None)
    assert [call[0] for call in recorder.calls] == ["emit"]


def test_worker_gives_up_after_max_attempts(ledger):
    recorder, clock = Recorder(), Clock()
    recorder.fail = 100
    worker = Worker(ledger, recorder.effects(), clock=clock, rand=lambda: 0.5, max_attempts=3)
    ledger.record(DATA_CHANGED, status="pending", received_at=T0)
    for _ in range(3):
        assert worker.run_pending() == 1
        clock.advance(MAX_DELAY_SECONDS)
    assert worker.run_pending() == 0
    (row,) = ledger.deliveries()
    assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("failed", 3, None)
    assert ledger.counts() == {"failed": 1}


def test_backoff_doubles_up_to_a_cap_with_bounded_jitter():
    assert [backoff_seconds(n, lambda: 0.5) for n in range(1, 12)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        300,
        300,
    ]
    assert backoff_seconds(3, lambda: 0.0) == pytest.approx(3.2)
    assert backoff_seconds(3, lambda: 1.0) == pytest.approx(4.8)


def test_pending_deliveries_are_resent_after_a_restart(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger(path) as before_crash:
        before_crash.record(DATA_CHANGED, status="pending", received_at=T0)
    recorder = Recorder()
    with Ledger(path) as after_restart:
        assert Worker(after_restart, recorder.effects(), clock=Clock()).run_pending() == 1
        assert after_restart.counts() == {"done": 1}
    assert [call[1]["id"] for call in recorder.calls] == [event_id("d-1")]


def test_the_worker_thread_acts_when_woken(ledger):
    recorder = Recorder()
    worker = Worker(ledger, recorder.effects())
    worker.start()
    try:
        ledger.record(DATA_CHANGED, status="pending", received_at=datetime.now(UTC))
        worker.wake()
        assert recorder.called.wait(5)
    finally:
        worker.stop()
    assert ledger.counts() == {"done": 1}
