"""The flows against the in-process simulator, under the one session-scoped Prefect harness.

Few and coarse on purpose: each flow run costs Prefect round trips, so each test runs a scenario
end to end and checks everything it shows (artifacts, events, store, request counts).
"""

import json
import os
import socket
import sqlite3
import threading
import uuid
from collections import Counter
from datetime import timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.events.clients import AssertingPassthroughEventsClient
from prefect.events.worker import EventsWorker
from prefect.states import Completed, Failed

import flows.sync
import stagewatch.publishing
import tasks.steps
from stagewatch import report
from stagewatch.kombo.errors import AuthenticationError, NotReadyError, TransientError
from stagewatch.simulator import FaultConfig, SimulatorTransport, World
from stagewatch.store import CHECKPOINT_THREAD, Store, wait_for_checkpoints
from stagewatch.timeutil import format_ts, parse_ts, utcnow
from tests.reliability.harness import sync_in_process

KEY = "sk_flowtest_0123456789abcdef"
NASTY_STAGE = "Tech *Interview* | [win](http://e.vil) <script>x</script>\nround `2`"
CANDIDATE = ("Ada | <b>", "Love_lace")
EMAIL = "ada.lovelace@example.org"
PHONE = "+44 20 7946 0958"


def no_sleep(seconds):
    return None


@pytest.fixture
def simulate(monkeypatch, prefect_harness):
    """Route the flows' Kombo client to an in-process simulator; returns its transport."""
    for name in ("KOMBO_BASE_URL", "KOMBO_REGION", "STAGEWATCH_DB", "STAGEWATCH_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KOMBO_API_KEY", KEY)
    for listing in (tasks.steps.fetch_jobs_task, tasks.steps.fetch_applications_task):
        monkeypatch.setattr(listing, "retry_delay_seconds", 0)  # a task retry never waits here

    def start(world, faults=None, wrap=None):
        transport = SimulatorTransport(world, faults, sleep=no_sleep)
        monkeypatch.setattr(
            flows.sync,
            "open_client",
            partial(
                flows.sync.open_client,
                transport=wrap(transport) if wrap else transport,
                sleep=no_sleep,
            ),
        )
        return transport

    return start


@pytest.fixture
def recorded_events(monkeypatch):
    """Prefect's own recording events client, passing every event on to the harness server."""
    worker = EventsWorker.instance(AssertingPassthroughEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *args: worker)

    def drain():
        worker.drain()
        return [
            e
            for e in AssertingPassthroughEventsClient.last.events
            if e.event.startswith("stagewatch.")
        ]

    yield drain
    worker.drain()


def artifacts(state, key=None):
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])) if key else None,
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            ),
        )


def markdown_of(state, integration_id):
    found = artifacts(state, report.artifact_key(integration_id))
    assert len(found) == 1
    return found[0].data


def expected_counts(events):
    """Counts per label, computed here from the change log rows (not with report's helper)."""
    labels = Counter()
    for e in events:
        if e["kind"] == "outcome_changed":
            labels[
                {"HIRED": "hired", "DECLINED": "declined"}.get(e["to_outcome"], "outcome changed")
            ] += 1
        else:
            labels[e["kind"].replace("_", " ").replace("stage changed", "stage moved")] += 1
    return dict(labels)


def table_counts(markdown):
    lines = markdown.splitlines()
    start = lines.index("| change | count |") + 2
    counts = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        label, count = (cell.strip() for cell in line.strip("|").split("|"))
        counts[label] = int(count)
    return counts


def params(integration_id, db, **extra):
    return flows.sync.SyncIntegrationParams(
        integration_id=integration_id, db=str(db), page_size=40, **extra
    )


def test_artifacts_events_and_jobs_cache_over_three_runs(simulate, recorded_events, tmp_path):
    world = World(
        seed=11, applications=120, jobs=6, api_key=KEY, scenarios=("normal", "no-outcomes")
    )
    transport = simulate(world)
    normal, other = world.normal_integration_id, world.integration_for("no-outcomes")
    integ = world.integration(normal)
    job = next(j for j in integ.jobs if j.accepts_applications and len(j.active_positions()) >= 3)
    first, second = (job.stages[p] for p in job.active_positions()[:2])
    row = integ.create_application(job.id, *CANDIDATE, EMAIL, PHONE, stage_id=first.id)
    app_id = integ.application_ids.encode(row)
    db = tmp_path / "sw.db"

    run1 = flows.sync.sync_integration(params(normal, db), return_state=True)
    assert run1.is_completed(), run1.message
    world.advance(hours=1)
    integ.rename_stage(second.id, NASTY_STAGE)
    integ.set_stage(app_id, second.id)
    integ.decline(app_id, "Position filled")
    run2 = flows.sync.sync_integration(params(normal, db), return_state=True)
    world.advance(hours=1)
    integ.set_stage(app_id, first.id)
    run3 = flows.sync.sync_integration(
        params(normal, db, show_candidate_names=True), return_state=True
    )

    with Store(db) as store:
        runs = [s.result()[0] for s in (run1, run2, run3)]
        assert [r["status"] for r in runs] == ["synced"] * 3
        for state, outcome in zip((run1, run2, run3), runs, strict=True):
            events = list(store.events(run_id=outcome["run_id"]))
            markdown = markdown_of(state, normal)
            assert table_counts(markdown) == expected_counts(events), markdown
            assert outcome["counts"] == expected_counts(events)
            tables = artifacts(state, report.events_table_key(normal))
            texts = [markdown] + [table.data for table in tables]
            for text in texts:
                assert "@" not in text and "7946" not in text and KEY not in text
            if state is run1:  # the baseline: first sightings are counted, not tabled
                assert tables == []
                assert "**Baseline:** the first sync of this integration" in markdown
                continue
            (table,) = tables
            rows = json.loads(table.data)
            assert [row["event_key"] for row in rows] == [e["event_key"] for e in events]
            assert "Baseline" not in markdown
        assert runs[0]["counts"]["first seen"] == 121

        second_md = markdown_of(run2, normal)
        escaped_stage = (
            r"Tech \*Interview\* \| \[win\]\(http\://e\.vil\) &lt;script&gt;x&lt;/script&gt; "
            r"round \`2\`"
        )
        assert (
            f"| {app_id} | {report.escape_md(job.name)} | {report.escape_md(first.name)} → {escaped_stage} |"
            in second_md
        )
        assert (
            f"- **Declined**: {app_id}, job {report.escape_md(job.name)}, reason Position filled"
            in second_md
        )
        assert "Ada" not in second_md and "Love" not in second_md
        third_md = markdown_of(run3, normal)
        assert (
            rf"| {app_id} (Ada \| &lt;b&gt; Love\_lace) | {report.escape_md(job.name)} | "
            rf"{escaped_stage} → {report.escape_md(first.name)} | **⚠ backward** |"
        ) in third_md

    emitted = recorded_events()
    declined = [
        e
        for e in emitted
        if e.event == "stagewatch.application.declined" and e.resource.id.endswith(app_id)
    ]
    assert len(declined) == 1
    assert declined[0].resource.id == f"kombo.application.{normal}.{app_id}"
    assert {(r.role, r.id) for r in declined[0].related if r.role in ("integration", "job")} == {
        ("integration", f"kombo.integration.{normal}"),
        ("job", f"kombo.job.{normal}.{job.id}"),
    }
    assert declined[0].payload["to_outcome"] == "DECLINED"
    assert all(EMAIL not in e.model_dump_json() and KEY not in e.model_dump_json() for e in emitted)
    assert "Ada" not in declined[0].model_dump_json()
    named = [
        e for e in emitted if e.resource.id.endswith(app_id) and e.event.endswith("stage-changed")
    ]
    assert [e.resource.name for e in named] == [str(app_id), "Ada | <b> Love_lace"]

    # Jobs were listed once for the three runs; another integration lists its own, a full sync
    # lists them afresh, and the incremental run after it reuses that listing.
    assert [r["jobs_from_cache"] for r in runs] == [False, True, True]
    assert transport.stats()["requests"]["GET /ats/jobs"] == 1
    other_run = flows.sync.sync_integration(params(other, db), return_state=True).result()[0]
    full_run = flows.sync.sync_integration(
        params(normal, db, mode="full"), return_state=True
    ).result()[0]
    assert (other_run["jobs_from_cache"], full_run["jobs_from_cache"]) == (False, False)
    assert transport.stats()["requests"]["GET /ats/jobs"] == 3
    after_full = flows.sync.sync_integration(params(normal, db), return_state=True).result()[0]
    assert (after_full["jobs_from_cache"], after_full["status"]) == (True, "synced")
    assert transport.stats()["requests"]["GET /ats/jobs"] == 3
    # A database recreated at the same path starts run ids over: the cached listing of run 1 of
    # the old file must not pass for this file's run 1. (The flow runs leave their checkpoints
    # running: a file is deleted only once nothing has it open.)
    wait_for_checkpoints()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    fresh = flows.sync.sync_integration(params(normal, db), return_state=True).result()[0]
    assert (fresh["run_id"], fresh["jobs_from_cache"]) == (1, False)
    assert transport.stats()["requests"]["GET /ats/jobs"] == 4


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


def test_many_integrations_report_each_and_one_failure_stops_none(
    simulate, recorded_events, monkeypatch, tmp_path
):
    world = World(seed=5, applications=60, jobs=4, api_key=KEY)
    normal = world.normal_integration_id
    integ = world.integration(normal)
    gone = integ.application_ids.encode(40)  # deleted in the ATS before stagewatch first looks
    integ.delete_application(gone)
    transport = simulate(world, FaultConfig(rate=0.3, kinds=("rate-limit", "html-500"), seed=2))
    monkeypatch.setattr(tasks.steps, "PROGRESS_EVERY_PAGES", 2)
    db = tmp_path / "sw.db"
    ids = list(world.integrations)
    state = flows.sync.sync_many(
        flows.sync.SyncManyParams(
            integration_ids=ids, db=str(db), page_size=10, max_concurrency=3, max_events=5
        ),
        return_state=True,
    )

    assert state.is_failed()
    lever = world.integration_for("permission-missing")
    assert state.message.startswith(f"1 of 7 failed: {lever} (INTEGRATION.PERMISSION_MISSING")
    outcomes = {o["integration_id"]: o for o in state.result(raise_on_failure=False).outcomes}
    expected = {
        "normal": "synced",
        "no-applications": "unsupported",
        "no-outcomes": "synced",
        "no-stages": "synced",
        "setup-pending": "not_ready",
        "permission-missing": "failed",
        "no-jobs": "synced",
    }
    assert {world.integrations[i]: o["status"] for i, o in outcomes.items()} == expected
    with Store(db) as store:
        recorded = {
            world.integrations[r["integration_id"]]: r["last_run_status"] for r in store.status()
        }
    assert recorded == {s: {"synced": "succeeded"}.get(v, v) for s, v in expected.items()}
    assert transport.stats()["faults_total"] == sum(o["retries"] for o in outcomes.values())

    summary = artifacts(state, "stagewatch-sync-summary")[0].data
    assert summary.startswith(
        "# stagewatch sync: 7 integrations (4 synced, 1 not ready, 1 unsupported, 1 failed)"
    )
    for integration_id, outcome in outcomes.items():
        assert (
            f"| {report.escape_md(integration_id)} | {report.STATUS_LABELS[outcome['status']]}"
            in summary
        )
    not_ready = markdown_of(state, world.integration_for("setup-pending"))
    assert "**Not ready:** Kombo has not finished setting up this integration" in not_ready
    pending = outcomes[world.integration_for("setup-pending")]
    assert pending["requests"] == 1 + pending["retries"]  # 409 is not retried, faults are
    retried = [o for o in outcomes.values() if o["retries"]]
    assert retried, "a 30% fault rate over ~25 requests hits some"
    note = f"**Retries:** {retried[0]['retries']} request(s) retried after transient errors"
    assert note in markdown_of(state, retried[0]["integration_id"])
    progress = [a for a in artifacts(state) if a.type == "progress"]
    assert progress and all(a.data == 100.0 for a in progress)

    # A later run of the normal integration, with more changes than max_events.
    world.advance(hours=1)
    for row in range(12):
        integ.decline(integ.application_ids.encode(row))
    second = flows.sync.sync_integration(params(normal, db, max_events=5))[0]
    assert second["counts"]["declined"] > 5

    emitted = recorded_events()  # drains Prefect's events worker: only once, at the end
    # A first sync is each integration's baseline: its changes (first sightings, and applications
    # the ATS deleted before) are only counted.
    assert outcomes[normal]["counts"]["deleted"] == 1
    with Store(db) as store:
        (deleted,) = store.events(run_id=outcomes[normal]["run_id"], kind="deleted")
    assert deleted["application_id"] == gone
    for integration_id, outcome in outcomes.items():
        own = [e for e in emitted if e.payload.get("sync_run_id") == outcome.get("run_id")]
        if outcome["status"] != "synced":
            assert [e for e in emitted if integration_id in e.resource.id] == []
            continue
        assert [e for e in own if e.event.startswith("stagewatch.application.")] == []
        (capped,) = [e for e in own if e.event == "stagewatch.sync.events-capped"]
        assert capped.payload["baseline"] is True
        counted = {label: count for label, count in outcome["counts"].items() if count}
        assert capped.payload["not_emitted"] == counted
        assert counted["first seen"] > 5

    # Later runs: at most max_events change events, declines before the rest.
    own = [e for e in emitted if e.payload.get("sync_run_id") == second["run_id"]]
    changes = [e for e in own if e.event.startswith("stagewatch.application.")]
    assert [e.event for e in changes] == ["stagewatch.application.declined"] * 5
    (capped,) = [e for e in own if e.event == "stagewatch.sync.events-capped"]
    assert capped.payload["baseline"] is False
    assert sum(capped.payload["not_emitted"].values()) == sum(second["counts"].values()) - 5


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


# The namespace of Prefect event ids: uuid5 of a change's event_key, so one change is always one
# event id, whichever run (on time or late) sends it.
EVENT_ID_NAMESPACE = uuid.UUID("6f1b0a52-4c1e-4d8a-9a51-3c0a2f5f9e10")


def test_runs_committed_but_never_published_are_published_late_by_the_next_sync(
    simulate, recorded_events, monkeypatch, tmp_path
):
    world = World(seed=15, applications=30, jobs=3, api_key=KEY, scenarios=("normal",))
    transport = simulate(world)
    normal = world.normal_integration_id
    integ = world.integration(normal)
    job = next(j for j in integ.jobs if j.accepts_applications and len(j.active_positions()) >= 2)
    second = job.stages[job.active_positions()[1]]
    hired, declined = (
        integ.application_ids.encode(integ.create_application(job.id, "A", "B", email, None))
        for email in ("hired@example.org", "declined@example.org")
    )
    db = tmp_path / "sw.db"

    def commit_without_publishing(change):
        """A sync killed between diff-stages and publish: the library steps, no Prefect."""
        world.advance(hours=1)
        change()
        return sync_in_process(db, transport, normal, KEY, page_size=40).outcome.run_id

    assert [
        commit_without_publishing(lambda: None),  # 1: every application first seen
        commit_without_publishing(lambda: integ.hire(hired)),  # 2
        commit_without_publishing(lambda: integ.set_stage(declined, second.id)),  # 3
        sync_in_process(db, transport, normal, KEY).outcome.run_id,  # 4: nothing new
    ] == [1, 2, 3, 4]
    integ.decline(declined)
    monkeypatch.setattr(stagewatch.publishing, "LATE_RUNS_LIMIT", 2)
    state = flows.sync.sync_integration(params(normal, db), return_state=True)

    assert state.is_completed(), state.message
    assert state.result()[0]["run_id"] == 5
    with Store(db) as store:
        marks = {
            run_id: (
                store.run(run_id)["published_at"] is not None,
                store.run(run_id)["publish_note"],
            )
            for run_id in range(1, 6)
        }
        events = {run_id: list(store.events(run_id=run_id)) for run_id in range(1, 6)}
    assert marks == {
        1: (
            True,
            "not published: only the newest 2 unpublished runs with changes are published late; "
            "`stagewatch changes` has its changes",
        ),
        2: (True, "published late by run 5"),
        3: (True, "published late by run 5"),
        4: (True, "no changes, so nothing to publish late"),
        5: (True, None),
    }
    assert [len(events[run_id]) for run_id in range(1, 6)] == [32, 1, 1, 0, 1]

    # Late runs first, oldest first, each saying so; then the run's own artifact.
    published = sorted(artifacts(state, report.artifact_key(normal)), key=lambda a: a.created)
    assert [a.description for a in published] == [
        f"Stage changes of {normal}, run 2, published late by run 5",
        f"Stage changes of {normal}, run 3, published late by run 5",
        f"Stage changes of {normal}, run 5",
    ]
    for artifact, run_id in zip(published, (2, 3, 5), strict=True):
        observed = events[run_id][0]["observed_at"]
        lines = artifact.data.splitlines()
        assert (
            lines[0] == f"# {report.escape_md(report.short_id(normal))}: incremental sync, 1 change"
        )
        late = (
            f"**Published late**, run {run_id} observed at {observed}: the process that "
            f"committed it stopped before publishing; run 5 published it."
        )
        assert (lines[2] == late) is (run_id != 5)
        assert table_counts(artifact.data) == expected_counts(events[run_id])
    tables = sorted(artifacts(state, report.events_table_key(normal)), key=lambda a: a.created)
    assert [[row["event_key"] for row in json.loads(t.data)] for t in tables] == [
        [e["event_key"] for e in events[run_id]] for run_id in (2, 3, 5)
    ]

    # Every change of the published runs became one event whose id comes from its key; run 1,
    # too old to publish late, sent none.
    emitted = [e for e in recorded_events() if e.event.startswith("stagewatch.application.")]
    assert sorted((e.payload["sync_run_id"], e.event, e.id) for e in emitted) == sorted(
        (e["sync_run_id"], name, uuid.uuid5(EVENT_ID_NAMESPACE, e["event_key"]))
        for run_id, name in (
            (2, "stagewatch.application.hired"),
            (3, "stagewatch.application.stage-changed"),
            (5, "stagewatch.application.declined"),
        )
        for e in events[run_id]
    )

    # Nothing is left to publish: the next sync publishes only itself.
    again = flows.sync.sync_integration(params(normal, db), return_state=True)
    assert [a.description for a in artifacts(again, report.artifact_key(normal))] == [
        f"Stage changes of {normal}, run 6"
    ]


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
