"""The receiver's ledger and its worker: durable dedupe, side effects with retries and backoff,
pending deliveries resent after a restart. The side effects are a recording fake: it stands for
Prefect, not for our code."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest

from stagewatch.webhooks import Delivery, Ledger, SideEffects, Worker, event_id, merged_event_id
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


# -- a burst: one event per integration for all its pending data-changed deliveries --------------

OTHER = "lever:8eTZkF3xMDd3o5mWUvYgJxQy"


def changed(delivery_id: str, integration_id: str = INTEGRATION, *models: str) -> Delivery:
    tool = integration_id.split(":")[0]
    data = {
        "integration_id": integration_id,
        "integration_tool": tool,
        "integration_category": "ATS",
        "changed_models": [{"name": name} for name in models or ("ats_applications",)],
    }
    return Delivery(delivery_id, "data-changed", integration_id, data)


def data_changed_event(integration_id: str, ids: list[str], models: list[str]) -> tuple:
    return (
        "emit",
        {
            "event": "kombo.data-changed",
            "resource": {"prefect.resource.id": f"kombo.integration.{integration_id}"},
            "payload": {
                "delivery_id": ids[-1],
                "integration_id": integration_id,
                "integration_tool": integration_id.split(":")[0],
                "integration_category": "ATS",
                "changed_models": models,
                "delivery_ids": ids,
            },
            "id": merged_event_id(ids),
        },
    )


def statuses(ledger: Ledger) -> dict[str, tuple]:
    return {
        row["id"]: (row["status"], row["attempts"], row["next_attempt_at"], row["last_error"])
        for row in ledger.deliveries()
    }


def test_a_burst_is_one_event_per_integration_and_all_done_together(ledger):
    recorder, clock = Recorder(), Clock()
    burst = [
        changed("a-1"),
        changed("b-1", OTHER, "ats_jobs"),
        changed("a-2", INTEGRATION, "ats_application_stages", "ats_applications"),
        CREATED,  # not a data change: its own event, in its turn
        changed("b-2", OTHER, "ats_applications"),
        changed("a-3"),
    ]
    for n, delivery in enumerate(burst):
        ledger.record(delivery, status="pending", received_at=T0 + timedelta(milliseconds=n))
    clock.advance(1)
    assert Worker(ledger, recorder.effects(), clock=clock).run_pending() == 6
    assert recorder.calls == [
        data_changed_event(
            INTEGRATION,
            ["a-1", "a-2", "a-3"],
            ["ats_applications", "ats_application_stages"],
        ),
        data_changed_event(OTHER, ["b-1", "b-2"], ["ats_jobs", "ats_applications"]),
        ("add", INTEGRATION),
        recorder.calls[3],  # integration-created, as in the test above
    ]
    assert recorder.calls[3][1]["event"] == "kombo.integration-created"
    done = ("done", 1, None, None)
    assert statuses(ledger) == {delivery.id: done for delivery in burst}


def test_a_lone_data_change_keeps_its_own_event_id(ledger):
    recorder = Recorder()
    ledger.record(changed("d-1"), status="pending", received_at=T0)
    Worker(ledger, recorder.effects(), clock=Clock()).run_pending()
    assert recorder.calls == [data_changed_event(INTEGRATION, ["d-1"], ["ats_applications"])]
    assert merged_event_id(["d-1"]) == event_id("d-1")
    assert merged_event_id(["a", "b"]) == merged_event_id(["b", "a"]) != event_id("a")


def test_more_than_a_batch_of_one_integration_is_still_one_event(ledger):
    recorder = Recorder()
    ids = [f"d-{n:03}" for n in range(120)]  # the worker reads 50 due deliveries at a time
    for n, delivery_id in enumerate(ids):
        ledger.record(
            changed(delivery_id), status="pending", received_at=T0 + timedelta(milliseconds=n)
        )
    assert (
        Worker(ledger, recorder.effects(), clock=Clock(T0 + timedelta(seconds=1))).run_pending()
        == 120
    )
    assert recorder.calls == [data_changed_event(INTEGRATION, ids, ["ats_applications"])]
    assert ledger.counts() == {"done": 120}


def test_a_failed_emit_leaves_every_merged_delivery_pending(ledger):
    recorder, clock = Recorder(), Clock()
    recorder.fail = 1
    worker = Worker(ledger, recorder.effects(), clock=clock, rand=lambda: 0.5)  # no jitter
    for delivery_id in ("a-1", "a-2", "a-3"):
        ledger.record(changed(delivery_id), status="pending", received_at=T0)
    assert worker.run_pending() == 3
    retry = ("pending", 1, "2026-12-01T09:00:01.000Z", "ConnectionError: Prefect API unreachable")
    assert statuses(ledger) == {"a-1": retry, "a-2": retry, "a-3": retry}
    assert recorder.calls == []

    # A webhook arriving meanwhile goes out with them at their retry, not on its own before.
    ledger.record(changed("a-4", INTEGRATION, "ats_jobs"), status="pending", received_at=T0)
    clock.advance(1)
    assert worker.run_pending() == 4
    assert recorder.calls == [
        data_changed_event(
            INTEGRATION, ["a-1", "a-2", "a-3", "a-4"], ["ats_applications", "ats_jobs"]
        )
    ]
    rows = statuses(ledger)
    assert {i: row[:3] for i, row in rows.items()} == {
        "a-1": ("done", 2, None),
        "a-2": ("done", 2, None),
        "a-3": ("done", 2, None),
        "a-4": ("done", 1, None),
    }


def test_each_merged_delivery_gives_up_after_its_own_attempts(ledger):
    recorder, clock = Recorder(), Clock()
    recorder.fail = 100
    worker = Worker(ledger, recorder.effects(), clock=clock, rand=lambda: 0.5, max_attempts=2)
    ledger.record(changed("old"), status="pending", received_at=T0)
    assert worker.run_pending() == 1
    ledger.record(changed("new"), status="pending", received_at=T0)
    clock.advance(1)
    assert worker.run_pending() == 2
    error = "ConnectionError: Prefect API unreachable"
    assert statuses(ledger) == {
        "old": ("failed", 2, None, error),
        "new": ("pending", 1, "2026-12-01T09:00:02.000Z", error),
    }
