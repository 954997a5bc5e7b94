"""Store mechanics: opening and migrations, what is stored, runs, queries, locks and threads."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, timedelta, timezone

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from stagewatch.diff import EVENT_FIELDS
from stagewatch.errors import StagewatchError
from stagewatch.kombo.models import Quarantined
from stagewatch.runtime import LISTING_SWITCH_INTERVAL
from stagewatch.store import (
    CHECKPOINT_THREAD,
    LeaseLostError,
    LockedError,
    Store,
    StoreError,
    wait_for_checkpoints,
)
from stagewatch.store.lease import machine_id
from stagewatch.store.location import is_postgres
from stagewatch.store.schema import migrations
from stagewatch.timeutil import format_ts
from tests.builders import (
    CONTRACT_FIELDS,
    FINISHED,
    INTEGRATION,
    OTHER_INTEGRATION,
    Runner,
    application,
    at,
    counts,
    db_rows,
    job,
)

HOST = socket.gethostname()
CLOCK = "2026-02-01T12:00:00.000Z"
PARIS = timezone(timedelta(hours=1))


@pytest.fixture
def path(tmp_path):
    return tmp_path / "sw.db"


@pytest.fixture
def db(db_url):
    """The store's database: a SQLite file, then a PostgreSQL schema."""
    return db_url


@pytest.fixture
def store(db):
    with Store(db, clock=lambda: FINISHED) as store:
        yield store


# For tests of what only SQLite has: its file, its WAL and checkpoints, its thread rule.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def rows(db, sql: str, params=()) -> list[tuple]:
    return db_rows(db, sql, params)


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


# -- opening ---------------------------------------------------------------------------------


def test_a_new_store_is_wal_and_records_its_migration_once(path):
    Store(path).close()
    Store(path).close()
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert rows(path, "SELECT migration_set, name FROM _sqlite_migrations") == [
        ("stagewatch", "0001_initial"),
        ("stagewatch", "0002_sync_runs_published"),
        ("stagewatch", "0003_staged_seen_append_only"),
        ("stagewatch", "0004_run_leases"),
        ("stagewatch", "0005_run_facts_and_stays"),
        ("stagewatch", "0006_stage_analytics"),
        ("stagewatch", "0007_import_ledger"),
        ("stagewatch", "0008_stage_status"),
        ("stagewatch", "0009_sync_waiters"),
        ("stagewatch", "0010_stays_kept"),
        ("stagewatch", "0011_integration_checks"),
        ("stagewatch", "0012_funnels_kept"),
    ]


def test_opening_read_only_a_missing_file_fails_and_creates_nothing(tmp_path):
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match=f"^no stagewatch database at {missing}$"):
        Store(missing, readonly=True)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"these are my notes, not a database\n" * 200)
    for readonly in (True, False):
        with pytest.raises(StoreError, match="is not a SQLite database"):
            Store(junk, readonly=readonly)
    assert junk.read_bytes() == b"these are my notes, not a database\n" * 200


def test_another_tools_sqlite_database_is_refused_and_left_alone(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE recipes (name TEXT)")
    for readonly in (True, False):
        with pytest.raises(StoreError, match="is a SQLite database but not a stagewatch one"):
            Store(other, readonly=readonly)
    assert rows(other, "SELECT name FROM sqlite_master") == [("recipes",)]


def test_a_database_from_a_newer_stagewatch_is_refused(path):
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
            "VALUES ('stagewatch', '0099_future', 'later')"
        )
    with pytest.raises(StoreError, match=r"newer stagewatch .*0099_future"):
        Store(path)


def test_upgrading_keeps_every_run_and_counts_earlier_successes_as_published(path):
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrations.apply(db, stop_before="0002_sync_runs_published")
    runs = [
        (1, "succeeded", "2026-01-05T10:00:00.000Z", 4),
        (2, "failed", "2026-01-05T11:00:00.000Z", None),
        (3, "succeeded", "2026-01-05T12:00:00.000Z", 0),
    ]
    db.conn.executemany(
        "INSERT INTO sync_runs (id, integration_id, mode, status, started_at, finished_at, pid, "
        "hostname, events) VALUES (?, 'greenhouse:x', 'full', ?, '2026-01-05T09:00:00.000Z', ?, "
        "1, 'h', ?)",
        runs,
    )
    before = rows(path, "SELECT * FROM sync_runs ORDER BY id")
    db.conn.close()

    Store(path).close()

    after = rows(path, "SELECT * FROM sync_runs ORDER BY id")
    width = len(before[0])  # the columns 0002 found; it appended the two publishing ones
    assert [row[:width] for row in after] == before
    note = "committed before stagewatch recorded publishing"
    assert [row[width : width + 2] for row in after] == [
        ("2026-01-05T10:00:00.000Z", note),
        (None, None),
        ("2026-01-05T12:00:00.000Z", note),
    ]
    assert rows(path, "SELECT name FROM sqlite_master WHERE tbl_name = 'sync_runs'") == [
        ("sync_runs",),
        ("sync_runs_integration",),
        ("sync_runs_unpublished",),
    ]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_upgrading_keeps_what_a_run_had_staged_under_the_keyed_layout(path):
    db = Database(sqlite3.connect(path, isolation_level=None))
    migrations.apply(db, stop_before="0003_staged_seen_append_only")
    staged = [(7, "app-b", 0), (7, "app-a", 3), (8, "app-c", 1)]
    db.conn.executemany(
        "INSERT INTO staged_seen (run_id, application_id, seq) VALUES (?, ?, ?)", staged
    )
    db.conn.close()

    Store(path).close()

    after = rows(path, "SELECT run_id, application_id, seq FROM staged_seen ORDER BY id")
    assert after == [(7, "app-b", 0), (7, "app-a", 3), (8, "app-c", 1)]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_threads_opening_a_new_database_together_all_get_a_working_store(tmp_path):
    # SQLite answers "database is locked" to a journal-mode switch without waiting; before the
    # store waited for it, about one fresh file in thirty failed one of six openers.
    failures = []
    for attempt in range(80):
        path = tmp_path / f"fresh-{attempt}.db"
        barrier = threading.Barrier(6)

        def open_and_sync(number: int, path=path, barrier=barrier) -> None:
            barrier.wait()
            try:
                with Store(path) as store:
                    run = store.begin_run(f"greenhouse:{number}", "full", started_at=at(0))
                    store.commit_run(run.id, observed_at=at(0))
            except Exception as exc:  # collected: a thread's exception would be lost
                failures.append(repr(exc))

        threads = [threading.Thread(target=open_and_sync, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert rows(path, "SELECT count(*) FROM sync_runs WHERE status = 'succeeded'") == [(6,)]
    assert failures == []


def test_store_errors_are_stagewatch_errors():
    assert issubclass(StoreError, StagewatchError)
    assert issubclass(LockedError, StoreError)


def test_the_event_fields_are_the_contracts():
    assert EVENT_FIELDS == CONTRACT_FIELDS


# -- what is stored --------------------------------------------------------------------------


def test_records_are_stored_without_remote_data_or_contact_data(store, db):
    runner = Runner(store)
    runner.run(
        [application("app-1", changed_at="2026-01-05T08:00:00.5Z", custom_fields={"a": 1})],
        hours=0,
        jobs=[job()],
    )
    (raw,) = rows(db, "SELECT raw FROM applications")[0]
    assert json.loads(raw) == {
        "id": "app-1",
        "remote_id": "r-app-1",
        "outcome": "PENDING",
        "rejection_reason_name": None,
        "rejected_at": None,
        "current_stage_id": "st-applied",
        "current_stage": {
            "id": "st-applied",
            "remote_id": None,
            "name": "Applied",
            "index": None,
            "status": None,
        },
        "job_id": "job-1",
        "job": None,
        "candidate_id": None,
        "candidate": {"id": "cand-app-1", "first_name": "Ada", "last_name": "Lovelace"},
        "changed_at": "2026-01-05T08:00:00.500000Z",
        "remote_created_at": None,
        "remote_updated_at": None,
        "remote_deleted_at": None,
        "custom_fields": {"a": 1},
    }
    (job_raw,) = rows(db, "SELECT raw FROM jobs")[0]
    assert "remote_data" not in job_raw
    assert json.loads(job_raw)["stages"][0] == {
        "id": "st-applied",
        "remote_id": None,
        "name": "Applied",
        "index": 0,
        "status": None,
    }


@sqlite_only
def test_nothing_anywhere_in_the_file_holds_contact_or_remote_data(store, path):
    run = store.begin_run(INTEGRATION, "full", started_at=at(0))
    store.stage_jobs(run.id, [job()])
    store.stage_applications(run.id, [application("app-1")])
    store.quarantine(
        run.id,
        INTEGRATION,
        [
            Quarantined(
                model="application",
                record_id="bad-1",
                reason="current_stage.id: Field required",
                raw={
                    "id": "bad-1",
                    "current_stage": {"name": "x"},
                    "candidate": {
                        "id": "c-9",
                        "first_name": "Grace",
                        "email_addresses": [{"email_address": "grace@example.com"}],
                    },
                    "remote_data": {"never_stored": 1},
                },
            )
        ],
    )
    store.commit_run(run.id, observed_at=at(0))
    store.close()
    data = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith("sw.db"))
    for secret in (
        b"ada@example.com",
        b"grace@example.com",
        b"+1-541-754-3010",
        b"raw_ats_payload",
        b"internal",
        b"secret",
        b"never_stored",
    ):
        assert secret not in data


def test_quarantined_records_keep_reason_and_scrubbed_payload(store, db):
    run = store.begin_run(INTEGRATION, "incremental", started_at=at(0))
    store.quarantine(
        run.id,
        INTEGRATION,
        [
            Quarantined(
                model="job",
                record_id=None,
                reason="record is list, not an object",
                raw=[{"remote_data": 1, "id": "j"}],
            )
        ],
    )
    store.commit_run(run.id, observed_at=at(0))
    assert rows(
        db,
        "SELECT run_id, integration_id, model, record_id, reason, raw, "
        "quarantined_at FROM quarantined",
    ) == [(1, INTEGRATION, "job", None, "record is list, not an object", '[{"id":"j"}]', CLOCK)]
    assert rows(db, "SELECT quarantined FROM sync_runs") == [(1,)]


def _second_full_run_over(store, apps):
    """(first, second): a committed full run that listed `apps`, and a full run begun after it."""
    first = store.begin_run(INTEGRATION, "full", started_at=at(0))
    store.stage_jobs(first.id, [job()])
    store.stage_applications(first.id, apps)
    store.commit_run(first.id, observed_at=at(0))
    run = store.begin_run(INTEGRATION, "full", started_at=at(1))
    store.stage_jobs(run.id, [job()])
    return first, run


def test_a_stager_writes_whole_batches_and_the_last_listing_of_an_application_wins(store, db):
    first, run = _second_full_run_over(store, [application("app-1"), application("app-2")])
    stage = store.application_stager(run.id, batch_records=2, flush_seconds=3600)
    moved = application("app-1", stage=("st-interview", "Interview"))
    stage(run.id, [moved])
    assert stage.buffered == 1
    stage(run.id, [application("app-3")])  # the batch is full: handed to the worker at once
    assert stage.buffered == 0
    stage(run.id, [application("app-1")])  # app-1 listed again, back where it was
    assert stage.buffered == 1
    stage.flush()
    assert rows(db, "SELECT application_id, seq FROM staged_seen ORDER BY seq") == [
        ("app-1", 0),
        ("app-3", 1),
        ("app-1", 2),
    ]
    stage.flush()  # nothing left: a second flush writes nothing
    assert rows(db, "SELECT count(*) FROM staged_seen") == [(3,)]
    with pytest.raises(StoreError, match="stages run 2, not run 1"):
        stage(first.id, [application("app-9")])
    stage.close()

    # app-2 was not listed: deleted. app-1's last listing matches the snapshot: no move.
    assert store.commit_run(run.id, observed_at=at(1)) == counts(first_seen=1, deleted=1)
    assert rows(db, "SELECT applications_seen FROM sync_runs WHERE id = 2") == [(2,)]
    assert rows(db, "SELECT count(*) FROM staged_seen") == [(0,)]


def test_a_stager_stages_the_content_of_changed_records_only_and_stops_its_thread(store, db):
    _, run = _second_full_run_over(store, [application("app-1"), application("app-2")])
    with store.application_stager(run.id, batch_records=3, flush_seconds=3600) as stage:
        moved = application("app-2", stage=("st-interview", "Interview"))
        stage(run.id, [application("app-1"), moved, application("app-3")])
        workers = [t for t in threading.enumerate() if t.name.startswith("stagewatch-stager")]
        assert len(workers) == 1
        stage.flush()
        # All three were seen; app-1's stored hash matched, so only app-2 and app-3 carry content.
        assert rows(db, "SELECT application_id FROM staged_seen ORDER BY seq") == [
            ("app-1",),
            ("app-2",),
            ("app-3",),
        ]
        assert rows(
            db, "SELECT application_id, stage_id FROM staged_applications ORDER BY seq"
        ) == [("app-2", "st-interview"), ("app-3", "st-applied")]
    assert not workers[0].is_alive()
    assert store.commit_run(run.id, observed_at=at(1)) == counts(first_seen=1, stage_changed=1)


# SQLite reads the staged columns out of each record's JSON; these must be what the models say.
_STAGED_COLUMNS = (
    "remote_id, job_id, stage_id, stage_name, outcome, rejection_reason_name, rejected_at, "
    "remote_deleted_at, changed_at, remote_created_at, remote_updated_at"
)


def _model_columns(app) -> tuple:
    stamps = (
        app.rejected_at,
        app.remote_deleted_at,
        app.changed_at,
        app.remote_created_at,
        app.remote_updated_at,
    )
    return (
        app.remote_id,
        app.effective_job_id,
        app.stage_id,
        app.stage_name,
        app.outcome,
        app.rejection_reason_name,
        *(None if stamp is None else format_ts(stamp) for stamp in stamps),
    )


def _staged_columns(store, path, apps) -> list[tuple]:
    run = store.begin_run(INTEGRATION, "full", started_at=at(0))
    store.stage_applications(run.id, apps)
    return rows(
        path,
        f"SELECT {_STAGED_COLUMNS} FROM staged_applications WHERE run_id = ? ORDER BY seq",
        (run.id,),
    )


def test_staged_columns_are_what_the_models_say(store, db):
    apps = [
        application("own-stage"),
        # No current_stage object: the id alone, and no name.
        application("id-only", stage=None, current_stage_id="st-bare", outcome=None),
        application("no-stage", stage=None),
        # An empty job_id falls back to the job reference, as `effective_job_id` does.
        application("empty-job", job_id="", job={"id": "job-ref", "name": "Ref"}),
        application("no-job", job_id=None),
        # SQLite would cut this name at the NUL: such a record is staged from the model instead.
        application("nul", stage=("st-nul", "On\x00site"), rejection_reason_name="a\x00b"),
        application(
            "declined",
            outcome="DECLINED",
            stage=("st-ü", 'Entretien — 2ᵉ tour "final"'),
            rejection_reason_name="Pas de réponse",
            rejected_at="2026-01-05T10:00:00Z",
            remote_deleted_at="2026-01-06T11:12:13.000999+02:00",
            changed_at="2026-01-06T11:12:13.5Z",
            remote_created_at="2026-01-01T00:00:00.123456Z",
            remote_updated_at="2026-01-07T00:00:00",
        ),
    ]
    expected = [_model_columns(app) for app in apps]
    if is_postgres(db):  # PostgreSQL text holds no NUL: those columns drop it (raw keeps it)
        expected[5] = tuple(v.replace("\x00", "") if v else v for v in expected[5])
    assert _staged_columns(store, db, apps) == expected


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(moments=st.lists(st.datetimes(timezones=st.sampled_from([None, UTC, PARIS])), max_size=20))
def test_staged_timestamps_are_format_ts_of_any_moment(tmp_path_factory, moments):
    path = tmp_path_factory.mktemp("stamps") / "sw.db"
    apps = [
        application(f"app-{number}", changed_at=moment, rejected_at=moment)
        for number, moment in enumerate(moments)
    ]
    with Store(path) as store:
        assert _staged_columns(store, path, apps) == [_model_columns(app) for app in apps]


def test_a_stager_of_an_in_memory_store_looks_hashes_up_in_its_own_connection():
    with Store(":memory:") as store:
        for hour in (0, 1):
            run = store.begin_run(INTEGRATION, "full", started_at=at(hour))
            store.stage_jobs(run.id, [job()])
            with store.application_stager(run.id) as stage:
                stage(run.id, [application("app-1")])
                stage.flush()
            first_seen = store.commit_run(run.id, observed_at=at(hour))["first_seen"]
            assert first_seen == (1 if hour == 0 else 0)


def test_a_stagers_flush_raises_what_its_worker_could_not_write(store, db):
    _, run = _second_full_run_over(store, [application("app-1")])
    stage = store.application_stager(run.id, batch_records=1, flush_seconds=3600)
    stage(run.id, [application("app-2")])
    stage.flush()
    with Store(db) as other:  # e.g. an operator marks the run failed from another process
        other.fail_run(run.id, error="stopped by hand")
    stage(run.id, [application("app-3")])  # handed over: the worker's write is refused
    with pytest.raises(StoreError, match=f"sync run {run.id} is failed, not running"):
        stage.flush()
    stage.close()
    assert rows(db, "SELECT count(*) FROM staged_seen WHERE application_id = 'app-3'") == [(0,)]


def test_a_stager_holds_the_listing_runtime_while_its_worker_runs(store):
    interval = sys.getswitchinterval()
    _, run = _second_full_run_over(store, [application("app-1")])
    with store.application_stager(run.id, batch_records=1, flush_seconds=3600) as stage:
        assert sys.getswitchinterval() == interval  # nothing handed over yet: no worker
        stage(run.id, [application("app-2")])
        assert sys.getswitchinterval() == pytest.approx(LISTING_SWITCH_INTERVAL)
        stage.flush()
    assert sys.getswitchinterval() == interval


@sqlite_only
def test_commit_run_leaves_its_checkpoint_to_a_thread_that_fills_the_database_file(
    store, path, tmp_path
):
    _, run = _second_full_run_over(store, [application("app-1")])
    store.stage_applications(run.id, [application("app-1"), application("app-2")])
    store.commit_run(run.id, observed_at=at(1))
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    wait_for_checkpoints()
    # The database file alone, without its WAL, holds the commit once the checkpoint is done.
    alone = tmp_path / "alone.db"
    alone.write_bytes(path.read_bytes())
    assert rows(alone, "SELECT application_id FROM applications ORDER BY 1") == [
        ("app-1",),
        ("app-2",),
    ]


def test_a_store_closed_without_waiting_leaves_its_checkpoint_running_to_the_end(
    path, tmp_path, held_checkpoint
):
    store = Store(path)
    _, run = _second_full_run_over(store, [application("app-1")])
    store.stage_applications(run.id, [application("app-1"), application("app-2")])
    store.commit_run(run.id, observed_at=at(1))
    store.close(wait_for_checkpoint=False)  # returns while the checkpoint has not even begun
    (thread,) = [t for t in threading.enumerate() if t.name == CHECKPOINT_THREAD]
    assert thread.is_alive() and not thread.daemon  # so the process waits for it at exit
    # The commit is durable and visible before the checkpoint: readers find it in the WAL.
    assert len(rows(path, "SELECT application_id FROM applications")) == 2
    held_checkpoint.set()
    wait_for_checkpoints()
    alone = tmp_path / "alone.db"
    alone.write_bytes(path.read_bytes())
    assert len(rows(alone, "SELECT application_id FROM applications")) == 2


@sqlite_only
def test_a_failed_commit_restores_the_automatic_checkpoint(store):
    first = store.begin_run(INTEGRATION, "full", started_at=at(1))
    store.commit_run(first.id, observed_at=at(1))
    with pytest.raises(StoreError, match="is succeeded, not running"):
        store.commit_run(first.id, observed_at=at(2))
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


def test_a_stager_also_writes_what_it_holds_once_its_interval_has_passed(db):
    now = [0.0]
    store = Store(db, monotonic=lambda: now[0])
    run = store.begin_run(INTEGRATION, "full", started_at=at(0))
    stage = store.application_stager(run.id, batch_records=1000, flush_seconds=0.2)
    stage(run.id, [application("app-1")])
    now[0] = 0.1
    stage(run.id, [application("app-2")])
    assert stage.buffered == 2
    now[0] = 0.25  # 0.2 s since the stager began: the three pages go out together
    stage(run.id, [application("app-3")])
    assert stage.buffered == 0
    now[0] = 0.3
    stage(run.id, [application("app-4")])  # the interval starts again at the last hand-over
    assert stage.buffered == 1
    stage.close()  # app-4 was never handed over: a closed stager drops it
    assert rows(db, "SELECT application_id FROM staged_seen ORDER BY seq") == [
        ("app-1",),
        ("app-2",),
        ("app-3",),
    ]
    store.close()


def test_the_first_succeeded_run_of_an_integration_is_its_baseline(store):
    failed = store.begin_run(INTEGRATION, "full", started_at=at(0))
    store.fail_run(failed.id, error="Kombo was down")
    first = store.begin_run(INTEGRATION, "full", started_at=at(1))
    store.commit_run(first.id, observed_at=at(1))
    later = store.begin_run(INTEGRATION, "incremental", started_at=at(2))
    store.commit_run(later.id, observed_at=at(2))
    other = store.begin_run(OTHER_INTEGRATION, "full", started_at=at(3))
    store.commit_run(other.id, observed_at=at(3))
    assert [store.is_baseline(r.id) for r in (first, later, other)] == [True, False, True]
    with pytest.raises(StoreError, match="no sync run 99"):
        store.is_baseline(99)


def test_the_run_row_records_mode_window_counts_and_client_stats(store, db):
    run = store.begin_run(INTEGRATION, "full", started_at=at(1))
    store.stage_jobs(run.id, [job(), job()])
    store.stage_applications(run.id, [application("app-1"), application("app-2")])
    store.stage_applications(run.id, [application("app-1")])
    result = store.commit_run(
        run.id,
        observed_at=at(1),
        next_watermark=at(0.5),
        stats={"requests": 7, "retries": 2, "waited_seconds": 1.5},
    )
    assert result == counts(first_seen=2)
    run_row = store.run(1)
    assert run_row == {
        "id": 1,
        "integration_id": INTEGRATION,
        "mode": "full",
        "status": "succeeded",
        "started_at": "2026-01-05T10:00:00.000Z",
        "finished_at": CLOCK,
        "window_start": None,
        "observed_at": "2026-01-05T10:00:00.000Z",
        "next_watermark": "2026-01-05T09:30:00.000Z",
        "pid": os.getpid(),
        "hostname": HOST,
        "jobs_seen": 1,
        "applications_seen": 2,
        "quarantined": 0,
        "events": 2,
        "first_seen": 2,
        "stage_changed": 0,
        "outcome_changed": 0,
        "job_changed": 0,
        "deleted": 0,
        "restored": 0,
        "requests": 7,
        "retries": 2,
        "waited_seconds": 1.5,
        "staged_records": 3,
        "error": None,
        "published_at": None,
        "publish_note": None,
        "machine": machine_id(),
        "absent_rescued": None,
        "absent_deleted": 0,
        "jobs_refetched": None,
        "jobs_unavailable": None,
    }
    assert store.watermark(INTEGRATION) == at(0.5)
    assert store.watermark(OTHER_INTEGRATION) is None


def test_failing_a_run_discards_its_staging_and_releases_the_lock(store, db):
    run = store.begin_run(INTEGRATION, "full", started_at=at(0))
    store.stage_jobs(run.id, [job()])
    store.stage_applications(run.id, [application("app-1")])
    store.fail_run(run.id, status="not_ready", error="INTEGRATION.SETUP_SYNC_PENDING: not yet")
    assert rows(db, "SELECT status, error, finished_at FROM sync_runs") == [
        ("not_ready", "INTEGRATION.SETUP_SYNC_PENDING: not yet", CLOCK)
    ]
    for table in ("staged_seen", "staged_applications", "staged_jobs", "run_locks", "applications"):
        assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)]
    assert store.begin_run(INTEGRATION, "full").id == 2


def test_misuse_of_runs_gets_clear_errors(store):
    with pytest.raises(StoreError, match="mode must be one of incremental, full, not 'weekly'"):
        store.begin_run(INTEGRATION, "weekly")
    with pytest.raises(StoreError, match="integration_id must be a non-empty string"):
        store.begin_run("", "full")
    run = store.begin_run(INTEGRATION, "full", started_at=at(2))
    with pytest.raises(StoreError, match="status must be one of failed, not_ready, unsupported"):
        store.fail_run(run.id, status="oops", error="x")
    with pytest.raises(StoreError, match=f"sync run 1 belongs to '{INTEGRATION}'"):
        store.quarantine(run.id, OTHER_INTEGRATION, [])
    store.commit_run(run.id, observed_at=at(2))
    with pytest.raises(StoreError, match=r"^sync run 1 is succeeded, not running$"):
        store.stage_applications(run.id, [application("app-1")])
    with pytest.raises(StoreError, match=r"^no sync run 99$"):
        store.commit_run(99, observed_at=at(3))
    with pytest.raises(StoreError, match=r"unknown run facts \['bogus'\]"):
        store.commit_run(run.id, observed_at=at(3), facts={"bogus": 1})
    with pytest.raises(StoreError, match="unknown event kind moved"):
        store.events(kind=["stage_changed", "moved"])


def test_events_are_append_only(store, db):
    Runner(store).run([application("app-1")], hours=0, jobs=[job()])
    for statement in ("UPDATE events SET kind = 'deleted'", "DELETE FROM events"):
        with pytest.raises((sqlite3.IntegrityError, psycopg.Error), match="append-only"):
            rows(db, statement)


def test_event_queries_filter_by_run_integration_time_kind_and_application(store):
    Runner(store).run([application("app-1"), application("app-2")], hours=0, jobs=[job()])
    Runner(store, OTHER_INTEGRATION).run([application("app-1")], hours=1, jobs=[job()])
    Runner(store).run(
        [application("app-1", ("st-screen", "Phone screen"), outcome="HIRED")],
        hours=2,
        mode="incremental",
    )

    def keys(**filters):
        return [
            (e["integration_id"][:5], e["application_id"], e["kind"])
            for e in store.events(**filters)
        ]

    assert keys(integration_id=OTHER_INTEGRATION) == [("lever", "app-1", "first_seen")]
    assert keys(since=at(1)) == [
        ("lever", "app-1", "first_seen"),
        ("green", "app-1", "stage_changed"),
        ("green", "app-1", "outcome_changed"),
    ]
    assert keys(kind=["outcome_changed", "first_seen"], application_id="app-1") == [
        ("green", "app-1", "first_seen"),
        ("lever", "app-1", "first_seen"),
        ("green", "app-1", "outcome_changed"),
    ]
    assert keys(run_id=3, kind="stage_changed") == [("green", "app-1", "stage_changed")]
    assert keys(limit=1) == [("green", "app-1", "first_seen")]
    # A run's kinds it wrote none of are skipped (its counts say so), without hiding the others.
    assert keys(run_id=1, kind=["stage_changed", "deleted"]) == []
    assert keys(run_id=1, kind=["stage_changed", "first_seen"]) == [
        ("green", "app-1", "first_seen"),
        ("green", "app-2", "first_seen"),
    ]
    assert keys(run_id=3, kind=["first_seen", "outcome_changed"]) == [
        ("green", "app-1", "outcome_changed")
    ]
    assert keys(run_id=99, kind="first_seen") == []  # no such run


def test_status_summarises_each_integration(store):
    Runner(store).run(
        [application("app-1"), application("app-2")], hours=0, jobs=[job()], watermark=at(-0.5)
    )
    Runner(store).run([application("app-1")], hours=2)
    other = store.begin_run(OTHER_INTEGRATION, "incremental", started_at=at(3))
    # What a full listing's progress expects: the live applications, not the deleted one.
    assert (store.live_applications(INTEGRATION), store.live_applications(OTHER_INTEGRATION)) == (
        1,
        0,
    )
    assert store.status() == [
        {
            "integration_id": INTEGRATION,
            "last_run_id": 2,
            "last_run_mode": "full",
            "last_run_status": "succeeded",
            "last_run_started_at": "2026-01-05T11:00:00.000Z",
            "last_run_finished_at": CLOCK,
            "last_run_events": 1,
            "last_run_error": None,
            "last_success_at": CLOCK,
            "watermark": "2026-01-05T08:30:00.000Z",
            "locked_by_run_id": None,
            "locked_by_pid": None,
            "locked_by_hostname": None,
            "lock_renewed_at": None,
            "lock_expires_at": None,
            "jobs": 1,
            "applications": 1,
            "deleted_applications": 1,
            "events": 3,
            "last_checked_at": None,
            "last_check_result": None,
        },
        {
            "integration_id": OTHER_INTEGRATION,
            "last_run_id": other.id,
            "last_run_mode": "incremental",
            "last_run_status": "running",
            "last_run_started_at": "2026-01-05T12:00:00.000Z",
            "last_run_finished_at": None,
            "last_run_events": None,
            "last_run_error": None,
            "last_success_at": None,
            "watermark": None,
            "locked_by_run_id": other.id,
            "locked_by_pid": os.getpid(),
            "locked_by_hostname": HOST,
            "lock_renewed_at": CLOCK,
            "lock_expires_at": "2026-02-01T12:05:00.000Z",
            "jobs": 0,
            "applications": 0,
            "deleted_applications": 0,
            "events": 0,
            "last_checked_at": None,
            "last_check_result": None,
        },
    ]


# -- locks and threads -----------------------------------------------------------------------


# -- publishing ------------------------------------------------------------------------------


def test_a_run_is_marked_published_once_and_only_when_it_succeeded(store, db):
    done = store.begin_run(INTEGRATION, "full", started_at=at(0))
    store.commit_run(done.id, observed_at=at(0))
    failed = store.begin_run(INTEGRATION, "full", started_at=at(1))
    store.fail_run(failed.id, error="HTTP 500")
    assert store.mark_published(done.id) is True
    assert store.mark_published(done.id, note="published late by run 9") is False
    assert rows(db, "SELECT id, published_at, publish_note FROM sync_runs ORDER BY id") == [
        (1, CLOCK, None),
        (2, None, None),
    ]
    with pytest.raises(
        StoreError, match=r"^sync run 2 is failed: only a succeeded run has changes to publish$"
    ):
        store.mark_published(failed.id)
    with pytest.raises(StoreError, match=r"^no sync run 99$"):
        store.mark_published(99)


def test_unpublished_runs_are_those_no_live_process_will_still_publish(db):
    """A run's process publishes after committing; only runs whose process is gone (or is this
    one) are left for the next sync to publish late."""
    now = [FINISHED]
    with Store(db, clock=lambda: now[0]) as store:
        for hours in range(7):
            store.commit_run(store.begin_run(INTEGRATION, "full").id, observed_at=at(hours))
        store.commit_run(store.begin_run(OTHER_INTEGRATION, "full").id, observed_at=at(0))
        store.mark_published(2)
        other_host_finished = {6: FINISHED - timedelta(minutes=31), 7: FINISHED}
        rows(db, "UPDATE sync_runs SET pid = ? WHERE id = 3", (dead_pid(),))
        rows(db, "UPDATE sync_runs SET pid = ? WHERE id = 4", (os.getppid(),))
        for run_id, finished in other_host_finished.items():
            rows(
                db,
                "UPDATE sync_runs SET hostname = 'elsewhere', pid = ?, finished_at = ? "
                "WHERE id = ?",
                (os.getppid(), format_ts(finished), run_id),
            )
        # 1 and 5: this process; 3: dead; 4: alive elsewhere on this host; 6: another host,
        # finished over the grace period ago; 7: another host, just finished.
        assert [run["id"] for run in store.unpublished_runs(INTEGRATION)] == [1, 3, 5, 6]
        assert [run["id"] for run in store.unpublished_runs(OTHER_INTEGRATION)] == [8]
        now[0] = FINISHED + timedelta(minutes=31)
        assert [run["id"] for run in store.unpublished_runs(INTEGRATION)] == [1, 3, 5, 6, 7]
        assert store.unpublished_runs(INTEGRATION)[0] == store.run(1)


def test_a_second_run_of_the_same_integration_is_refused_naming_the_holder(db):
    first = Store(db, clock=lambda: FINISHED)
    holder = first.begin_run(INTEGRATION, "full")
    with Store(db, clock=lambda: FINISHED) as second, pytest.raises(LockedError) as caught:
        second.begin_run(INTEGRATION, "incremental")
    assert str(caught.value) == (
        f"integration '{INTEGRATION}' is locked by run {holder.id} "
        f"(pid {os.getpid()} on {HOST}, started {CLOCK}, lease expires 2026-02-01T12:05:00.000Z)"
    )
    assert (caught.value.run_id, caught.value.pid) == (holder.id, os.getpid())
    assert rows(db, "SELECT id, status FROM sync_runs") == [(1, "running")]
    first.close()


def test_waiting_for_the_lock_takes_it_once_released(db):
    holder_store = Store(db)
    holder = holder_store.begin_run(INTEGRATION, "full", started_at=at(0))
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds
        if len(slept) == 2:
            holder_store.commit_run(holder.id, observed_at=at(0))

    with Store(db, sleep=sleep, monotonic=lambda: now[0]) as waiter:
        run = waiter.begin_run(INTEGRATION, "full", wait=5)
    assert (run.id, slept) == (2, [0.2, 0.2])
    holder_store.close()


def test_a_run_that_waited_lists_from_the_watermark_the_holder_left(db):
    with Store(db) as setup:
        setup.commit_run(setup.begin_run(INTEGRATION, "full").id, observed_at=at(0),
                         next_watermark=at(-0.5))  # fmt: skip
    holder_store = Store(db)
    holder = holder_store.begin_run(INTEGRATION, from_watermark=True)
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
        holder_store.commit_run(holder.id, observed_at=at(3), next_watermark=at(2.5))

    def clock():
        return at(5) + timedelta(seconds=now[0])

    with Store(db, sleep=sleep, monotonic=lambda: now[0], clock=clock) as waiter:
        run = waiter.begin_run(INTEGRATION, from_watermark=True, wait=5)
    assert (holder.mode, holder.window_start) == ("incremental", at(-0.5))
    # Started when it took the lock, one poll after it began waiting.
    assert (run.id, run.mode, run.started_at, run.window_start) == (
        3,
        "incremental",
        at(5) + timedelta(seconds=0.2),
        at(2.5),
    )
    assert rows(db, "SELECT started_at, window_start FROM sync_runs WHERE id = 3") == [
        ("2026-01-05T14:00:00.200Z", "2026-01-05T11:30:00.000Z")
    ]
    holder_store.close()


def test_a_window_from_the_watermark_without_one_is_a_full_listing(store):
    run = store.begin_run(INTEGRATION, from_watermark=True, started_at=at(0))
    assert (run.mode, run.window_start) == ("full", None)
    with pytest.raises(
        StoreError, match=r"^from_watermark needs an incremental run without a window_start$"
    ):
        store.begin_run(OTHER_INTEGRATION, "full", from_watermark=True)
    with pytest.raises(
        StoreError, match=r"^from_watermark needs an incremental run without a window_start$"
    ):
        store.begin_run(OTHER_INTEGRATION, window_start=at(0), from_watermark=True)


def test_waiting_for_the_lock_gives_up_after_wait_seconds(db):
    holder_store = Store(db)
    holder_store.begin_run(INTEGRATION, "full")
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    with Store(db, sleep=sleep, monotonic=lambda: now[0]) as waiter, pytest.raises(LockedError):
        waiter.begin_run(INTEGRATION, "full", wait=0.5)
    assert slept == pytest.approx([0.2, 0.2, 0.1])
    holder_store.close()


def test_a_dead_processes_lock_is_taken_over_and_its_staging_dropped(db):
    with Store(db) as store:
        run = store.begin_run(INTEGRATION, "full", started_at=at(0))
        store.stage_jobs(run.id, [job()])
        store.stage_applications(run.id, [application("app-1")])
    pid = dead_pid()
    rows(db, "UPDATE run_locks SET pid = ?", (pid,))
    with Store(db, clock=lambda: FINISHED) as store:
        taken = store.begin_run(INTEGRATION, "full", started_at=at(1))
        why = (
            f"process died before committing (pid {pid} on {HOST}); "
            f"lock taken over by run 2 (pid {os.getpid()} on {HOST})"
        )
        assert rows(db, "SELECT id, status, error FROM sync_runs ORDER BY id") == [
            (1, "abandoned", why),
            (2, "running", None),
        ]
        assert rows(db, "SELECT run_id, pid FROM run_locks") == [(taken.id, os.getpid())]
        for table in ("staged_seen", "staged_applications", "staged_jobs"):
            assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)]
        with pytest.raises(LeaseLostError) as lost:
            store.commit_run(run.id, observed_at=at(0))
        assert str(lost.value) == f"sync run 1 lost the lock of '{INTEGRATION}': {why}"


def test_a_lock_held_on_another_host_is_not_taken_over_while_its_lease_holds(db):
    with Store(db) as store:
        store.begin_run(INTEGRATION, "full")
    rows(db, "UPDATE run_locks SET pid = ?, hostname = 'elsewhere'", (dead_pid(),))
    with Store(db) as store, pytest.raises(LockedError, match="on elsewhere"):
        store.begin_run(INTEGRATION, "full")


def test_different_integrations_run_concurrently_from_threads(db):
    Store(db).close()
    barrier = threading.Barrier(2)
    results = {}
    errors = []

    def sync(integration):
        try:
            with Store(db) as store:
                run = store.begin_run(integration, "full", started_at=at(0))
                barrier.wait()
                store.stage_jobs(run.id, [job()])
                for page in range(20):
                    store.stage_applications(
                        run.id, [application(f"app-{page}-{i}") for i in range(25)]
                    )
                barrier.wait()
                results[integration] = store.commit_run(run.id, observed_at=at(0))
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=sync, args=(i,)) for i in (INTEGRATION, OTHER_INTEGRATION)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == {
        INTEGRATION: counts(first_seen=500),
        OTHER_INTEGRATION: counts(first_seen=500),
    }
    assert rows(db, "SELECT integration_id, count(*) FROM applications GROUP BY 1") == [
        (INTEGRATION, 500),
        (OTHER_INTEGRATION, 500),
    ]


@sqlite_only
def test_a_store_stays_in_the_thread_that_opened_it(store):
    caught = []
    thread = threading.Thread(target=lambda: caught.append(_try(store.status)))
    thread.start()
    thread.join()
    assert isinstance(caught[0], sqlite3.ProgrammingError)


def _try(call):
    try:
        call()
    except sqlite3.ProgrammingError as exc:
        return exc
    return None


def test_job_and_candidate_names_for_reports(store):
    Runner(store).run(
        [
            application("app-1"),
            application("app-2", candidate={"id": "c-2", "last_name": "Hopper"}),
            application("app-3", candidate=None),
        ],
        hours=0,
        jobs=[job(), job("job-2")],
    )
    assert store.job_names(INTEGRATION) == {"job-1": "Engineer job-1", "job-2": "Engineer job-2"}
    assert store.candidate_names(INTEGRATION, ["app-1", "app-2", "app-3", "app-404"]) == {
        "app-1": "Ada Lovelace",
        "app-2": "Hopper",
    }
    assert store.candidate_names(OTHER_INTEGRATION, ["app-1"]) == {}


def test_a_path_in_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(
        StoreError, match=r"^cannot create .*/nowhere/sw\.db: no directory .*/nowhere$"
    ):
        Store(tmp_path / "nowhere" / "sw.db")
