"""The flows against the in-process simulator, under the one session-scoped Prefect harness.

Each test runs its own small scenario; the scenarios several tests share (three runs of one
integration, many integrations, late publishing) have files of their own with a module fixture.
"""

import os
import socket
import sqlite3
import threading
from datetime import timedelta
from functools import partial

import httpx
import pytest
from prefect import get_client
from prefect.states import Completed, Failed

import flows.sync
import tasks.steps
from stagewatch.kombo.errors import AuthenticationError, NotReadyError, TransientError
from stagewatch.simulator import World
from stagewatch.store import CHECKPOINT_THREAD, Store
from stagewatch.timeutil import format_ts, parse_ts, utcnow
from tests.flows.flowkit import (
    KEY,
    artifacts,
    markdown_of,
    params,
)


def test_retried_flow_run_reuses_what_its_fetch_tasks_staged(simulate, monkeypatch, tmp_path):
    world = World(seed=12, applications=100, jobs=5, api_key=KEY, scenarios=("normal",))
    transport = simulate(world)
    commits = []
    real_commit = Store.commit_run

    def commit_failing_once(self, *args, **kwargs):
        commits.append(args)
        if len(commits) == 1:
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(Store, "commit_run", commit_failing_once)
    db = tmp_path / "sw.db"
    state = flows.sync.sync_integration.with_options(retries=1)(
        params(world.normal_integration_id, db), return_state=True
    )

    assert state.is_completed(), state.message
    assert len(commits) == 2
    pages = -(-world.integration(world.normal_integration_id).application_count // 40)
    assert transport.stats()["requests"] == {"GET /ats/jobs": 1, "GET /ats/applications": pages}
    with Store(db) as store:
        (status,) = store.status()
        assert (status["last_run_id"], status["last_run_status"]) == (1, "succeeded")
        assert status["applications"] == len(list(store.events(run_id=1, kind="first_seen")))
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(state.state_details.flow_run_id).run_count == 2


class DownOnce(httpx.BaseTransport):
    """Kombo's load balancer failing the second application page once."""

    def __init__(self, inner):
        self.inner = inner
        self.pages = 0

    def handle_request(self, request):
        if request.url.path.endswith("/ats/applications"):
            self.pages += 1
            if self.pages == 2:
                return httpx.Response(503, text="upstream connect error")
        return self.inner.handle_request(request)


def test_a_flow_run_ends_without_waiting_for_its_commits_checkpoint(
    simulate, held_checkpoint, tmp_path
):
    world = World(seed=17, applications=50, jobs=3, api_key=KEY, scenarios=("normal",))
    simulate(world)
    db = tmp_path / "sw.db"
    state = flows.sync.sync_integration(params(world.normal_integration_id, db), return_state=True)
    assert state.is_completed(), state.message
    # The flow run is over, its commit visible, and the checkpoint still held back.
    assert not held_checkpoint.is_set()
    assert [t.is_alive() for t in threading.enumerate() if t.name == CHECKPOINT_THREAD] == [True]
    with Store(db, readonly=True) as store:
        assert store.live_applications(world.normal_integration_id) == 50


def test_listing_starts_again_once_the_client_gives_up(simulate, monkeypatch, tmp_path):
    world = World(seed=13, applications=100, jobs=5, api_key=KEY, scenarios=("normal",))
    monkeypatch.setenv("STAGEWATCH_MAX_ATTEMPTS", "1")  # the client gives up at once
    transport = simulate(world, wrap=DownOnce)
    db = tmp_path / "sw.db"
    normal = world.normal_integration_id
    state = flows.sync.sync_integration(params(normal, db), return_state=True)

    assert state.is_completed(), state.message
    (outcome,) = state.result()
    pages = -(-world.integration(normal).application_count // 40)
    assert transport.stats()["requests"] == {"GET /ats/jobs": 1, "GET /ats/applications": 1 + pages}
    assert (outcome["task_retries"], outcome["requests"], outcome["retries"]) == (
        1,
        1 + 2 + pages,
        0,
    )
    assert outcome["counts"] == {"first seen": world.integration(normal).application_count}
    assert "**Task retries:** 1 listing(s) started again." in markdown_of(state, normal)


def test_invalid_key_fails_fast_and_is_never_stored(simulate, monkeypatch, tmp_path):
    world = World(seed=6, applications=30, jobs=3, api_key=KEY, scenarios=("normal", "no-stages"))
    transport = simulate(world)
    wrong = "sk_wrong_key_must_not_leak_42"
    monkeypatch.setenv("KOMBO_API_KEY", wrong)
    db = tmp_path / "sw.db"
    ids = list(world.integrations)
    state = flows.sync.sync_many(
        flows.sync.SyncManyParams(integration_ids=ids, db=str(db)), return_state=True
    )

    assert state.is_failed()
    assert transport.stats()["requests_total"] == 2  # one per integration, no retry
    outcomes = state.result(raise_on_failure=False).outcomes
    assert [(o["status"], o["error_code"]) for o in outcomes] == [
        ("failed", "PLATFORM.AUTHENTICATION_INVALID")
    ] * 2
    texts = [
        state.message,
        *(a.data if isinstance(a.data, str) else str(a.data) for a in artifacts(state)),
    ]
    texts.append(db.read_bytes().decode("latin-1"))
    for text in texts:
        assert wrong not in text and KEY not in text


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (TransientError("HTTP 503 after 6 attempts"), True),
        (AuthenticationError("PLATFORM.AUTHENTICATION_INVALID"), False),
        (NotReadyError("INTEGRATION.SETUP_SYNC_PENDING"), False),
        (ValueError("bug"), False),
    ],
)
def test_listing_is_retried_only_after_transient_errors(error, retry):
    assert tasks.steps.retry_transient(None, None, Failed(data=error)) is retry
    assert tasks.steps.retry_transient(None, None, Completed(data={"pages": 1})) is False


class Recording(httpx.BaseTransport):
    """Remembers the URL of every request it passes on."""

    def __init__(self, inner):
        self.inner = inner
        self.urls = []

    def handle_request(self, request):
        self.urls.append(request.url)
        return self.inner.handle_request(request)


def test_a_run_that_waits_for_the_lock_lists_from_where_the_holder_left_off(
    simulate, monkeypatch, tmp_path
):
    world = World(seed=14, applications=40, jobs=3, api_key=KEY, scenarios=("normal",))
    recording = []
    simulate(world, wrap=lambda inner: recording.append(Recording(inner)) or recording[0])
    normal = world.normal_integration_id
    db = tmp_path / "sw.db"
    first = flows.sync.sync_integration(params(normal, db), return_state=True).result()[0]
    with Store(db) as other:  # another process's run of the same integration holds the lock
        holder = other.begin_run(normal, from_watermark=True)
    world.advance(hours=2)
    holder_watermark = world.now - timedelta(minutes=10)
    released = []

    def sleep_until_released(seconds):
        """The waiting flow's first poll: meanwhile the holder commits and releases the lock."""
        with Store(db) as other:
            other.commit_run(holder.id, observed_at=world.now, next_watermark=holder_watermark)
        released.append(seconds)

    monkeypatch.setattr(flows.sync, "Store", partial(Store, sleep=sleep_until_released))
    recording[0].urls.clear()
    state = flows.sync.sync_integration(params(normal, db), return_state=True)

    assert state.is_completed(), state.message
    (outcome,) = state.result()
    assert released == [0.2]
    assert holder.window_start == parse_ts(first["next_watermark"])
    assert parse_ts(outcome["window_start"]) == holder_watermark
    listed = [u for u in recording[0].urls if u.path.endswith("/ats/applications")]
    assert [u.params.get("updated_after") for u in listed] == [format_ts(holder_watermark)]
    with Store(db) as store:
        run = store.run(outcome["run_id"])
    assert (run["id"], run["mode"], run["window_start"]) == (
        3,
        "incremental",
        format_ts(holder_watermark),
    )


class TakenOverMidListing(httpx.BaseTransport):
    """Before the second application page, another run takes the lock over, as one would once the
    listing run's lease ran out unrenewed (a frozen process, a host cut off)."""

    def __init__(self, inner, db):
        self.inner = inner
        self.db = db
        self.pages = 0
        self.taker = None

    def handle_request(self, request):
        if request.url.path.endswith("/ats/applications"):
            self.pages += 1
            if self.pages == 2:
                later = utcnow() + timedelta(minutes=6)
                with Store(self.db, clock=lambda: later) as store:
                    self.taker = store.begin_run(request.headers["X-Integration-Id"], "full")
        return self.inner.handle_request(request)


def test_a_flow_run_whose_lease_was_taken_over_reports_it_and_commits_nothing(simulate, tmp_path):
    world = World(seed=16, applications=100, jobs=3, api_key=KEY, scenarios=("normal",))
    db = tmp_path / "sw.db"
    wrapped = []
    simulate(world, wrap=lambda inner: wrapped.append(TakenOverMidListing(inner, db)) or wrapped[0])
    normal = world.normal_integration_id

    state = flows.sync.sync_integration(params(normal, db), return_state=True)

    assert state.is_failed()
    (outcome,) = state.result(raise_on_failure=False).outcomes
    taker = wrapped[0].taker.id
    assert (outcome["status"], outcome["run_id"]) == ("failed", 1)
    taken_by = f"lock taken over by run {taker} (pid {os.getpid()} on {socket.gethostname()})"
    assert outcome["message"].startswith(f"sync run 1 lost the lock of '{normal}': lease not ")
    assert outcome["message"].endswith(taken_by)
    with Store(db) as store:
        assert [(r["id"], r["status"]) for r in map(store.run, (1, taker))] == [
            (1, "abandoned"),
            (taker, "running"),
        ]
        assert list(store.events()) == []
