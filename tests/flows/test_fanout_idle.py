"""The fan-out's idle hour under the Prefect test harness: every integration checked with one
request from the fan-out's own process, none synced, so no task run, batch or per-integration
artifact; the summary artifact and the store say each one was checked. (Changed integrations go on
to batch deployments, which need workers: tests/flows/test_stack.py drives those.)
"""

from __future__ import annotations

from collections import Counter
from functools import partial

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

import flows.fanout
import flows.sync
from stagewatch import pipeline
from stagewatch.pipeline import PlainSteps, SyncOptions
from stagewatch.simulator import SimulatorTransport, World
from stagewatch.store import Store

KEY = "sk_fanout_idle_0123456789abcdef"


def no_sleep(seconds):
    return None


class Counting(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests[request.headers.get("X-Integration-Id", "")] += 1
        return self.inner.handle_request(request)


@pytest.fixture
def idle_world(monkeypatch, prefect_harness, tmp_path):
    """Three integrations synced once (the normal path, plain steps); the flows' client routed
    to the simulator through a transport that counts requests per integration."""
    for name in ("KOMBO_BASE_URL", "KOMBO_REGION", "STAGEWATCH_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KOMBO_API_KEY", KEY)
    world = World(seed=5, applications=30, jobs=2, api_key=KEY, scenarios=("normal",) * 3)
    db = str(tmp_path / "sw.db")
    for integration_id in world.integrations:
        with (
            flows.sync.open_client(KEY, integration_id, "https://kombo.test/v1", _settings(),
                                   transport=SimulatorTransport(world)) as client,
            Store(db) as store,
        ):  # fmt: skip
            outcome = pipeline.run_integration(
                integration_id, SyncOptions(), client=client, store=store, steps=PlainSteps()
            )
            assert outcome.status == "synced"
    counting = Counting(SimulatorTransport(world, sleep=no_sleep))
    opened = partial(flows.sync.open_client, transport=counting, sleep=no_sleep)
    monkeypatch.setattr(flows.fanout, "open_client", opened)
    return world, db, counting


def _settings():
    from stagewatch.settings import Settings

    return Settings()


def _task_runs(flow_run_id) -> int:
    with get_client(sync_client=True) as client:
        return len(
            client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        )


def test_an_idle_hour_costs_one_request_per_integration_and_no_task_run(idle_world):
    world, db, counting = idle_world
    ids = list(world.integrations)
    with Store(db, readonly=True) as store:
        runs_before = store._conn.execute("SELECT count(*) FROM sync_runs").fetchone()[0]

    params = flows.fanout.FanoutParams(integration_ids=ids, db=db, max_concurrency=2)
    state = flows.fanout.sync_fanout(params, return_state=True)

    assert (state.type.value, state.message) == ("COMPLETED", "3 of 3 idle (checked, no run)")
    assert counting.requests == dict.fromkeys(ids, 1)
    flow_run_id = state.state_details.flow_run_id
    assert _task_runs(flow_run_id) == 0
    with Store(db, readonly=True) as store:
        assert store._conn.execute("SELECT count(*) FROM sync_runs").fetchone()[0] == runs_before
        status = store.status()
    assert [(row["integration_id"], row["last_check_result"]) for row in status] == sorted(
        (i, "idle") for i in ids
    )
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fanout-summary"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    (summary,) = found
    assert summary.data.startswith(
        "3 integrations: 3 idle (checked, nothing listed after their watermark, no run), "
        "0 changed, 0 failed the check, 0 synced without a check."
    )
    assert KEY not in summary.data


def test_full_runs_and_windows_do_not_check():
    params = flows.fanout.FanoutParams
    assert flows.fanout.checks_apply(params()) is True
    assert flows.fanout.checks_apply(params(mode="full")) is False
    assert flows.fanout.checks_apply(params(since="2026-01-01T00:00:00Z")) is False
    assert flows.fanout.checks_apply(params(check_first=False)) is False


@pytest.fixture
def one_account_slot(prefect_harness):
    """The Kombo account's limit with one slot, put back to missing afterwards."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.limits import ACCOUNT_LIMIT, ensure_limit

    with get_client(sync_client=True) as client:
        ensure_limit(client, ACCOUNT_LIMIT, 1)
        client.update_global_concurrency_limit(ACCOUNT_LIMIT, GlobalConcurrencyLimitUpdate(limit=1))
        yield
        client.delete_global_concurrency_limit_by_name(ACCOUNT_LIMIT)


def test_more_at_a_time_than_the_account_has_slots_checks_within_them(idle_world, one_account_slot):
    """Claiming 16 of 1 slot would wait for ever (900 s, then sync everything): the fan-out
    takes what the account has and says so."""
    world, db, counting = idle_world
    ids = list(world.integrations)
    params = flows.fanout.FanoutParams(integration_ids=ids, db=db, max_concurrency=16)

    state = flows.fanout.sync_fanout(params, return_state=True)

    assert (state.type.value, state.message) == ("COMPLETED", "3 of 3 idle (checked, no run)")
    assert counting.requests == dict.fromkeys(ids, 1)
