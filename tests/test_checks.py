"""The idle fast path (`stagewatch.checks`) against the simulator in-process, on both stores: idle
integrations cost one request and no run, changed and failing ones go the normal way, and nothing
is missed, whether it changes between the check and the sync or after an idle check.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from typer.testing import CliRunner

from stagewatch import checks, pipeline
from stagewatch.cli import app
from stagewatch.kombo.client import KomboClient, RetryPolicy
from stagewatch.pipeline import PlainSteps, SyncOptions
from stagewatch.simulator import World
from stagewatch.simulator.transport import SimulatorTransport
from stagewatch.store import Store
from stagewatch.timeutil import format_ts

KEY = "sk_checks_test_key_never_logged"


class Counting(httpx.BaseTransport):
    """The simulator's transport, counting requests per integration (X-Integration-Id)."""

    def __init__(self, world: World) -> None:
        self.inner = SimulatorTransport(world, sleep=lambda seconds: None)
        self.requests: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests[request.headers.get("X-Integration-Id", "")] += 1
        return self.inner.handle_request(request)


@pytest.fixture
def world() -> World:
    return World(
        seed=21,
        applications=40,
        jobs=3,
        api_key=KEY,
        scenarios=("normal", "normal", "normal", "permission-missing"),
    )


def _client(transport: httpx.BaseTransport, integration_id: str | None = None) -> KomboClient:
    return KomboClient(KEY, integration_id, transport=transport, sleep=lambda seconds: None)


def _sync(world: World, db: str, integration_id: str, transport=None) -> str:
    """The normal path: one plain run of the pipeline; returns its status."""
    client = _client(transport or SimulatorTransport(world), integration_id)
    with client, Store(db) as store:
        outcome = pipeline.run_integration(
            integration_id, SyncOptions(), client=client, store=store, steps=PlainSteps()
        )
    return outcome.status


def _check(world: World, db: str, transport: Counting) -> dict[str, str]:
    with _client(transport) as client, Store(db) as store:
        found = checks.check_all(store, client, list(world.integrations), max_concurrency=4)
    return {c.integration_id: c.result for c in found}


def _decline_one(world: World, db: str, integration_id: str, nth: int = 0) -> str:
    """Decline the `nth` application the store holds as pending in the simulated ATS; its id."""
    with Store(db, readonly=True) as store:
        app_id = store._conn.execute(
            "SELECT application_id FROM applications WHERE integration_id = ? "
            "AND outcome = 'PENDING' ORDER BY application_id LIMIT 1 OFFSET ?",
            (integration_id, nth),
        ).fetchone()[0]
    world.integration(integration_id).decline(app_id)
    return app_id


def _rows(db: str, sql: str, *args) -> list[tuple]:
    with Store(db, readonly=True) as store:
        return [tuple(row) for row in store._conn.execute(sql, args)]


def _runs(db: str) -> Counter:
    return Counter(dict(_rows(db, "SELECT integration_id, count(*) FROM sync_runs GROUP BY 1")))


def test_idle_integrations_cost_one_request_and_no_run_changed_ones_sync(world, db_url):
    quiet, changed, later, bad = world.integrations
    for integration_id in (quiet, changed, later):
        assert _sync(world, db_url, integration_id) == "synced"
    assert _sync(world, db_url, bad) == "failed"
    watermarks = dict(_rows(db_url, "SELECT integration_id, watermark FROM watermarks"))
    runs_before = _runs(db_url)
    declined = _decline_one(world, db_url, changed)

    counting = Counting(world)
    results = _check(world, db_url, counting)
    # The failed integration's last run failed: it syncs without a check, as it would have.
    assert results == {quiet: "idle", changed: "changed", later: "idle", bad: "due"}
    assert counting.requests == {quiet: 1, changed: 1, later: 1}

    # Kombo changes after the check: `changed` syncs and lists this too; `later` was checked
    # idle, so its change waits for the next cycle.
    second = _decline_one(world, db_url, changed, nth=1)
    missed_for_now = _decline_one(world, db_url, later)
    for integration_id, result in results.items():
        if result != "idle":
            _sync(world, db_url, integration_id, counting)
    assert _runs(db_url) - runs_before == Counter({changed: 1, bad: 1})
    declined_events = _rows(
        db_url,
        "SELECT integration_id, application_id FROM events WHERE kind = 'outcome_changed' "
        "ORDER BY integration_id, application_id",
    )
    assert sorted(declined_events) == sorted([(changed, declined), (changed, second)])
    # An idle check moves no watermark: the next listing starts where the last sync's did.
    assert _rows(db_url, "SELECT watermark FROM watermarks WHERE integration_id = ?", quiet) == [
        (watermarks[quiet],)
    ]

    # The next cycle: `later`'s change, made after its idle check, is found and recorded.
    results = _check(world, db_url, Counting(world))
    assert results[later] == "changed"
    assert _sync(world, db_url, later) == "synced"
    assert (later, missed_for_now) in _rows(
        db_url, "SELECT integration_id, application_id FROM events WHERE kind = 'outcome_changed'"
    )


def test_a_check_is_recorded_and_shown_by_status(world, db_url):
    quiet = world.normal_integration_id
    assert _sync(world, db_url, quiet) == "synced"
    with Store(db_url, readonly=True) as store:
        watermark = format_ts(store.watermark(quiet))
    with _client(SimulatorTransport(world)) as client, Store(db_url) as store:
        checks.check_all(store, client, [quiet], max_concurrency=1)
        status = {row["integration_id"]: row for row in store.status()}
    now = format_ts(world.now)  # the simulator's Date header: Kombo's clock, not ours
    assert _rows(db_url, "SELECT * FROM integration_checks") == [
        (quiet, now, watermark, "idle", None, 1)
    ]
    assert (status[quiet]["last_checked_at"], status[quiet]["last_check_result"]) == (now, "idle")
    assert status[quiet]["last_run_status"] == "succeeded"
    table = CliRunner().invoke(app, ["status", "--db", db_url], env={"COLUMNS": "200"})
    assert f"{now[:10]} {now[11:16]} (idle)" in table.output


class Refusing(httpx.BaseTransport):
    """Kombo answering every request with one error: 401 (a revoked key) or 429 (throttled)."""

    def __init__(self, status: int, code: str) -> None:
        self.status, self.code = status, code

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = {"status": "error", "error": {"code": self.code, "title": "No", "message": "no"}}
        headers = {"Retry-After": "0"} if self.status == 429 else {}
        return httpx.Response(self.status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "code", "error", "attempts"),
    [
        (401, "PLATFORM.AUTHENTICATION_INVALID", "AuthenticationError", 1),
        (429, "PLATFORM.RATE_LIMIT_EXCEEDED", "RateLimitError", 3),
    ],
)
def test_a_failing_check_is_never_idle_and_the_sync_reports_the_failure(
    world, db_url, status, code, error, attempts
):
    quiet = world.normal_integration_id
    assert _sync(world, db_url, quiet) == "synced"
    refusing = Refusing(status, code)
    retry = RetryPolicy(max_attempts=attempts)
    client = KomboClient(KEY, transport=refusing, retry=retry, sleep=lambda s: None)
    with client, Store(db_url) as store:
        (found,) = checks.check_all(store, client, [quiet], max_concurrency=1)
    assert (found.result, found.must_sync, found.requests) == ("failed", True, attempts)
    assert found.reason.startswith(f"{error}: {code} (HTTP {status})")
    assert KEY not in found.reason
    recorded = _rows(db_url, "SELECT result, requests FROM integration_checks")
    assert recorded == [("failed", attempts)]
    # The normal path then runs and records the failure the way it always has.
    assert _sync(world, db_url, quiet, refusing) == "failed"


def test_the_plan_says_why_an_integration_must_sync(world, db_url):
    first, second, *_ = world.integrations
    assert _sync(world, db_url, first) == "synced"
    with Store(db_url) as store:
        plans = {p.integration_id: p.must_sync for p in store.check_plan([second, first])}
        run = store.begin_run(first, "incremental", from_watermark=True)
        running = store.check_plan([first])[0].must_sync
        store.fail_run(run.id, error="stopped by the test")
    assert plans == {second: "no watermark yet", first: None}
    assert running == "the last run is running"


def test_an_unpublished_run_must_sync(world, db_url):
    first = world.normal_integration_id
    with _client(SimulatorTransport(world), first) as client, Store(db_url) as store:
        pipeline.run_integration(
            first, SyncOptions(), client=client, store=store,
            steps=PlainSteps(mark_published=False),
        )  # fmt: skip
        run_id = store.status()[0]["last_run_id"]
        assert store.check_plan([first])[0].must_sync == f"run {run_id} is not published"


def test_checks_markdown_names_why_each_synced_and_lists_the_idle():
    from datetime import UTC, datetime

    at = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    found = [
        checks.Check(integration_id="a:1", result="idle", window_start=at, checked_at=at),
        checks.Check(integration_id="b:2", result="changed", window_start=at, checked_at=at),
        checks.Check(integration_id="c:3", result="due", reason="no watermark yet"),
    ]
    assert checks.checks_markdown(found).splitlines() == [
        "3 integrations: 1 idle (checked, nothing listed after their watermark, no run), "
        "1 changed, 0 failed the check, 1 synced without a check.",
        "",
        "| Integration | Why it synced | Listed after (UTC) |",
        "|---|---|---|",
        "| b\\:2 | its check listed a change | 2026-03-01 09:00 |",
        "| c\\:3 | no watermark yet (not checked) | - |",
        "",
        "Idle, checked between 2026-03-01 09:00 and 2026-03-01 09:00 (UTC): a\\:1",
    ]
