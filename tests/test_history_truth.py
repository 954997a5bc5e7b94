"""The history never lies: one test per way it could (issue 15), each failing before its fix.

Kombo stands in as the simulator, sometimes behind a transport that spoils what it answers (a
record it cannot parse, a record a full listing skips), or as a small fake where a test needs
Kombo to change something the simulator does not (a stage added to a job).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from stagewatch import fetch, pipeline, report
from stagewatch.kombo.client import KomboClient
from stagewatch.simulator import SimulatorTransport, World
from stagewatch.store import Store
from tests.reliability.harness import KOMBO_URL, Sleeps, sync_in_process
from tests.test_store_fixtures import (
    INTEGRATION,
    OTHER_INTEGRATION,
    PIPELINE,
    Runner,
    application,
    at,
    event,
    events_without_keys,
    job,
    snapshot,
)

KEY = "sk_truth_tests"
APPLIED = ("st-applied", "Applied")
SCREEN = ("st-screen", "Phone screen")


class Spoiling(httpx.BaseTransport):
    """Kombo answering through `edit(params, payload)`, which may change a listing's payload."""

    def __init__(self, inner: httpx.BaseTransport, edit: Callable[[dict, dict], None]) -> None:
        self.inner = inner
        self.edit = edit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/ats/applications") and response.status_code == 200:
            payload = json.loads(response.read())
            self.edit(dict(parse_qsl(request.url.query.decode())), payload)
            headers = [(k, v) for k, v in response.headers.items() if k != "content-length"]
            return httpx.Response(200, headers=headers, json=payload, request=request)
        return response


def _small_world(scenario: str = "normal") -> World:
    return World(seed=3, applications=60, jobs=3, api_key=KEY, scenarios=(scenario,))


def _sync(db: Path, transport: httpx.BaseTransport, integration: str, mode: str):
    synced = sync_in_process(db, transport, integration, KEY, mode=mode, page_size=25)
    assert synced.error is None, synced.error
    return synced.outcome


def _run_row(db: Path, run_id: int) -> dict:
    with Store(db, readonly=True) as store:
        return store.run(run_id)


def _events(db: Path, run_id: int) -> list[dict]:
    with Store(db, readonly=True) as store:
        return list(store.events(run_id=run_id))


# -- 2. an unparseable record is listed, never deleted ---------------------------------------------


def test_an_unparseable_record_in_a_full_listing_keeps_its_snapshot_and_is_not_deleted(db_url):
    world = _small_world()
    integration = world.normal_integration_id
    db = db_url
    clean = SimulatorTransport(world)
    _sync(db, clean, integration, "full")
    with Store(db, readonly=True) as store:
        victim, hash_before = store._conn.execute(
            "SELECT application_id, content_hash FROM applications "
            "WHERE deleted_observed_at IS NULL ORDER BY application_id LIMIT 1"
        ).fetchone()

    def spoil(params: dict, payload: dict) -> None:
        for record in payload["data"]["results"]:
            if record["id"] == victim:
                record["remote_created_at"] = "not a timestamp"

    spoiled = _sync(db, Spoiling(clean, spoil), integration, "full")
    assert _events(db, spoiled.run_id) == []
    assert (spoiled.quarantined, spoiled.absent_deleted, spoiled.absent_rescued) == (1, 0, 0)
    with Store(db, readonly=True) as store:
        assert tuple(
            store._conn.execute(
                "SELECT content_hash, deleted_observed_at FROM applications "
                "WHERE application_id = ?",
                (victim,),
            ).fetchone()
        ) == (hash_before, None)
    fixed = _sync(db, clean, integration, "full")
    assert _events(db, fixed.run_id) == []  # no `restored` for what never left


# -- 3. absence is confirmed by id before it becomes a deletion -----------------------------------


def test_a_record_a_full_listing_skipped_is_looked_up_and_only_the_gone_are_deleted(db_url):
    world = _small_world()
    integration = world.normal_integration_id
    db = db_url
    clean = SimulatorTransport(world)
    first = _sync(db, clean, integration, "full")
    live = sorted(
        e["application_id"] for e in _events(db, first.run_id) if e["kind"] == "first_seen"
    )
    skipped, gone = live[0], live[1]
    lookups: list[str] = []

    def spoil(params: dict, payload: dict) -> None:
        if "ids" in params:
            lookups.append(params["ids"])
        hidden = {gone} if "ids" in params else {skipped, gone}
        payload["data"]["results"] = [
            r for r in payload["data"]["results"] if r["id"] not in hidden
        ]

    second = _sync(db, Spoiling(clean, spoil), integration, "full")
    assert lookups == [",".join(sorted([skipped, gone]))]
    assert (second.absent_rescued, second.absent_deleted) == (1, 1)
    assert [
        (e["kind"], e["application_id"], e["deleted_reason"]) for e in _events(db, second.run_id)
    ] == [("deleted", gone, "missing_from_full_listing")]
    row = _run_row(db, second.run_id)
    assert (row["absent_rescued"], row["absent_deleted"]) == (1, 1)
    markdown = report.integration_markdown(second, [])
    assert (
        "**Missing from the full listing:** 2 application(s). Looked up by id, 1 were still "
        "there (kept) and 1 were gone (recorded as deleted)." in markdown
    )


# -- 4. an ATS without jobs is tracked for what it has --------------------------------------------


def test_an_ats_without_the_jobs_model_still_tracks_its_applications(db_url):
    world = _small_world("no-jobs")
    integration = world.integration_for("no-jobs")
    db = db_url
    transport = SimulatorTransport(world)
    first = _sync(db, transport, integration, "full")
    assert (first.status, first.jobs_unavailable) == ("synced", "INTEGRATION.MODEL_NOT_AVAILABLE")
    assert first.counts["first seen"] == len(_events(db, first.run_id)) > 0
    world.advance(hours=24 * 5)
    later = _sync(db, transport, integration, "incremental")
    moves = [e for e in _events(db, later.run_id) if e["kind"] == "stage_changed"]
    assert moves, "five simulated days move some applications"
    assert {e["direction"] for e in moves} == {"unknown"}
    assert all(e["to_stage_name"] and e["to_stage_id"] for e in moves)
    assert _run_row(db, later.run_id)["jobs_unavailable"] == "INTEGRATION.MODEL_NOT_AVAILABLE"
    assert (
        "**Jobs unavailable:** the ATS does not offer jobs (INTEGRATION\\.MODEL\\_NOT\\_AVAILABLE). "
        "Applications were tracked anyway; without a stage order, stage moves have direction "
        "unknown." in report.integration_markdown(later, moves)
    )


# -- 5. a first sighting already decided is a hire or a decline -----------------------------------


def test_a_first_sighting_hired_or_declined_after_the_baseline_is_an_outcome_change(db_url):
    with Store(db_url) as store:
        runner = Runner(store)
        declined = {"rejection_reason_name": "Knock-out", "rejected_at": "2026-01-05T09:30:00Z"}
        runner.run([application("app-0", outcome="DECLINED", **declined)], hours=0, jobs=[job()])
        assert [e["kind"] for e in store.events(run_id=1)] == ["first_seen"]  # baseline: counted
        runner.run(
            [
                application("app-1", outcome="DECLINED", **declined),
                application("app-2", outcome="HIRED"),
                application("app-3", outcome="PENDING"),
            ],
            hours=2,
            mode="incremental",
        )
        outcome_rows = events_without_keys(store, run_id=2, kind="outcome_changed")
        news = [
            report.prefect_event(row)["event"]
            for row in store.events(run_id=2, kind="outcome_changed")
        ]
    h0, h2 = "2026-01-05T09:00:00.000Z", "2026-01-05T11:00:00.000Z"
    assert outcome_rows == [
        event(
            "outcome_changed",
            "app-1",
            h2,
            h0,
            2,
            to_outcome="DECLINED",
            rejection_reason_name="Knock-out",
            rejected_at="2026-01-05T09:30:00.000Z",
        ),
        event("outcome_changed", "app-2", h2, h0, 2, to_outcome="HIRED"),
    ]
    assert news == ["stagewatch.application.declined", "stagewatch.application.hired"]


# -- 6. a stage added after the cached job listing is fetched before the diff ---------------------


class FakeKombo(httpx.BaseTransport):
    """Jobs and applications as plain dicts, answered one page at a time with the `ids` filter."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.jobs: dict[str, dict] = {}
        self.applications: dict[str, dict] = {}
        self.requests: list[tuple[str, dict]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.url.query.decode()))
        self.requests.append((request.url.path, params))
        records = self.jobs if request.url.path.endswith("/ats/jobs") else self.applications
        wanted = params["ids"].split(",") if "ids" in params else list(records)
        body = {
            "status": "success",
            "data": {"next": None, "results": [records[i] for i in wanted if i in records]},
        }
        headers = {"date": format_datetime(self.now, usegmt=True)}
        return httpx.Response(200, headers=headers, json=body, request=request)


def _stage(stage_id: str, name: str, index: int) -> dict:
    return {"id": stage_id, "remote_id": None, "name": name, "index": index}


def test_a_stage_added_after_the_cached_job_listing_is_fetched_before_the_diff(db_url):
    kombo = FakeKombo(datetime(2026, 1, 5, 9, tzinfo=UTC))
    stages = [_stage(sid, name, index) for sid, name, index in PIPELINE[:2]]
    kombo.jobs["job-1"] = {"id": "job-1", "name": "Engineer", "stages": stages}
    kombo.applications["app-1"] = {"id": "app-1", "job_id": "job-1", "current_stage": stages[0]}
    db = db_url
    _sync(db, kombo, INTEGRATION, "full")
    # Kombo's job gains a stage and the application moves into it; the next run reuses its jobs.
    added = _stage("st-final", "Final interview", 5)
    kombo.jobs["job-1"]["stages"] = [*stages, added]
    kombo.applications["app-1"]["current_stage"] = added
    kombo.now += timedelta(hours=1)
    kombo.requests.clear()
    client = KomboClient(KEY, INTEGRATION, base_url=KOMBO_URL, transport=kombo, sleep=Sleeps())
    with client, Store(db) as store:
        run = store.begin_run(INTEGRATION, from_watermark=True)
        listing = fetch.fetch_applications(client, store, run, run.window_start)
        pipeline.commit(
            store,
            run,
            listed_at=listing["listed_at"],
            overlap=timedelta(minutes=10),
            stats=client.stats.model_dump(),
            facts={"jobs_refetched": listing["jobs_refetched"]},
        )
        moves = events_without_keys(store, run_id=run.id)
        stored_stages = store._conn.execute(
            "SELECT stage_id, stage_index FROM job_stages ORDER BY stage_index"
        ).fetchall()
    assert [(path, params.get("ids")) for path, params in kombo.requests] == [
        ("/v1/ats/applications", None),
        ("/v1/ats/jobs", "job-1"),
    ]
    assert [(e["kind"], e["from_stage_id"], e["to_stage_id"], e["direction"]) for e in moves] == [
        ("stage_changed", "st-applied", "st-final", "forward")
    ]
    assert [tuple(row) for row in stored_stages] == [
        ("st-applied", 0),
        ("st-screen", 1),
        ("st-final", 5),
    ]
    assert listing["jobs_refetched"] == 1


# -- 7. a `since` later than the watermark never skips what lies between --------------------------


def test_a_since_later_than_the_watermark_leaves_the_watermark_where_it_was(db_url):
    with Store(db_url) as store:
        full = store.begin_run(INTEGRATION, "full", started_at=at(1))
        store.commit_run(full.id, observed_at=at(1), next_watermark=at(0.9))
        later = store.begin_run(INTEGRATION, "incremental", started_at=at(6), window_start=at(5))
        store.commit_run(later.id, observed_at=at(6), next_watermark=at(5.9))
        assert store.watermark(INTEGRATION) == at(0.9)
        assert store.run(later.id)["next_watermark"] is None
        earlier = store.begin_run(INTEGRATION, "incremental", started_at=at(7), window_start=at(0))
        store.commit_run(earlier.id, observed_at=at(7), next_watermark=at(6.9))
        assert store.watermark(INTEGRATION) == at(6.9)
        resumed = store.begin_run(INTEGRATION, from_watermark=True, started_at=at(8))
        assert resumed.window_start == at(6.9)
        store.commit_run(resumed.id, observed_at=at(8), next_watermark=at(7.9))
        assert store.watermark(INTEGRATION) == at(7.9)
        # No watermark yet: a `since` run lists only part of the history, so it sets none.
        other = store.begin_run(
            OTHER_INTEGRATION, "incremental", started_at=at(8), window_start=at(5)
        )
        store.commit_run(other.id, observed_at=at(8), next_watermark=at(7.9))
        assert store.watermark(OTHER_INTEGRATION) is None


# -- 8. smaller truths ------------------------------------------------------------------------------


def test_a_deletion_closes_the_stay_and_a_restore_opens_a_new_one(db_url):
    with Store(db_url) as store:
        runner = Runner(store)
        runner.run([application("app-1", APPLIED)], hours=0, jobs=[job()])
        gone = application("app-1", APPLIED, remote_deleted_at="2026-01-05T10:30:00Z")
        runner.run([gone], hours=2, mode="incremental")
        runner.run([application("app-1", SCREEN)], hours=4, mode="incremental")
        stays = [
            (
                s["stage_id"],
                s["entered_at"][11:16],
                s["left_at"] and s["left_at"][11:16],
                s["left_by"],
            )
            for s in store.history("app-1")
        ]
    assert stays == [
        ("st-applied", "09:00", "11:00", "deleted"),
        ("st-screen", "13:00", None, None),
    ]


def test_changes_while_deleted_update_the_snapshot_but_record_no_events(db_url):
    with Store(db_url) as store:
        runner = Runner(store)
        runner.run([application("app-1", APPLIED)], hours=0, jobs=[job()])
        deleted = {"remote_deleted_at": "2026-01-05T10:30:00Z"}
        runner.run([application("app-1", APPLIED, **deleted)], hours=2, mode="incremental")
        anonymised = application("app-1", SCREEN, outcome="DECLINED", job_id="job-2", **deleted)
        assert sum(runner.run([anonymised], hours=4, mode="incremental").values()) == 0
        assert snapshot(store, "job_id", "stage_id", "outcome", "deleted_reason") == [
            ("app-1", "job-2", "st-screen", "DECLINED", "remote_deleted")
        ]


def test_a_clock_running_ahead_never_fails_a_run_and_the_watermark_never_goes_back(db_url):
    with Store(db_url) as store:
        runner = Runner(store)
        runner.run([application("app-1", APPLIED)], hours=5, jobs=[job()], watermark=at(4.9))
        # Kombo's clock (or ours, corrected) is an hour behind the previous observation.
        result = runner.run(
            [application("app-1", SCREEN)], hours=1, mode="incremental", watermark=at(0.9)
        )
        assert result["stage_changed"] == 1
        (move,) = store.events(run_id=2)
        assert (move["observed_at"], move["previous_observed_at"]) == (
            "2026-01-05T14:00:00.000Z",
            "2026-01-05T14:00:00.000Z",
        )
        assert store.watermark(INTEGRATION) == at(4.9)


def _read_only_mount_script(directory: Path, command: str) -> list[str]:
    """`command` run in a private mount namespace where `directory` is a read-only bind mount."""
    script = (
        f"mount --bind {directory} {directory} && mount -o remount,ro,bind {directory} && {command}"
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def _can_mount() -> str | None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "read-only mounts need root and unshare"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return None if probe.returncode == 0 else "unshare --mount is not permitted here"


@pytest.mark.skipif(_can_mount() is not None, reason=str(_can_mount()))
def test_read_only_storage_serves_queries_and_a_sync_says_it_cannot_write(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    db = directory / "sw.db"
    with Store(db) as store:
        Runner(store).run([application("app-1", APPLIED)], hours=0, jobs=[job()])
    stagewatch = str(Path(sys.executable).with_name("stagewatch"))
    expected = {
        "changes --format jsonl": '"application_id": "app-1", "kind": "first_seen"',
        "history app-1 --format jsonl": '"stage_id": "st-applied"',
        "status --format jsonl": f'"integration_id": "{INTEGRATION}"',
        "schema": "CREATE TABLE events",
    }
    for args, shown in expected.items():
        command = f"{stagewatch} {args} --db {db}"
        done = subprocess.run(
            _read_only_mount_script(directory, command), capture_output=True, text=True
        )
        assert done.returncode == 0, (args, done.stderr)
        assert shown in done.stdout, (args, done.stdout)
    opener = f"{sys.executable} -c \"from stagewatch.store import Store; Store('{db}')\""
    done = subprocess.run(
        _read_only_mount_script(directory, opener), capture_output=True, text=True
    )
    assert done.returncode == 1
    assert (
        f"StoreError: cannot write {db}: its directory {directory} is not writable" in done.stderr
    )
    assert sqlite3.connect(db).execute("SELECT count(*) FROM events").fetchone() == (1,)
