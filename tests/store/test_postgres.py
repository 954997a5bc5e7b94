"""The PostgreSQL store: what it must refuse, what it must not touch, racing workers, and the same
history as SQLite for the same input (events, keys and all), also after `migrate-store`."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stagewatch.cli import app
from stagewatch.diff import event_key
from stagewatch.store import Store, StoreError
from tests.builders import INTEGRATION, Runner, application, at, db_rows, job
from tests.conftest import postgres_schema, postgres_url
from tests.store.test_diff_property import apply, listings

HOST = socket.gethostname()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def with_password(url: str, password: str = "s3cret-pw") -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


# -- bad input: one line, a non-zero exit, nothing written --------------------------------------


def test_an_unreachable_server_is_one_line_without_the_password():
    result = invoke("status", "--db", "postgresql://postgres:s3cret-pw@127.0.0.1:1/test")
    assert (result.exit_code, result.output) == (
        1,
        "Error: cannot connect to postgresql://postgres:***@127.0.0.1:1/test: Connection refused\n",
    )


def test_an_unknown_role_is_one_line(pg_url):
    url = pg_url.replace("postgresql://postgres@", "postgresql://no_such_role_sw:pw@", 1)
    result = invoke("status", "--db", url)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot connect to {url.replace(':pw@', ':***@')}: "
        'role "no_such_role_sw" does not exist\n'
    )


def test_a_schema_of_a_newer_stagewatch_is_refused_and_left_alone(pg_url):
    Store(pg_url).close()
    db_rows(pg_url, "INSERT INTO stagewatch_migrations (name) VALUES ('0999_from_the_future')")
    before = db_rows(pg_url, "SELECT name FROM stagewatch_migrations ORDER BY id")
    with pytest.raises(StoreError, match=r"newer stagewatch \(unknown migrations: 0999_from"):
        Store(pg_url)
    result = invoke("status", "--db", pg_url)
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert db_rows(pg_url, "SELECT name FROM stagewatch_migrations ORDER BY id") == before


def test_a_role_without_privilege_gets_one_line_and_no_schema(pg_url):
    role = f"sw_test_role_{uuid.uuid4().hex[:8]}"
    schema = pg_url.rsplit("schema=", 1)[1]
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        try:
            url = pg_url.replace("postgresql://postgres@", f"postgresql://{role}:pw@", 1)
            with pytest.raises(StoreError) as caught:
                Store(url)
            assert str(caught.value).startswith(f"cannot set up schema {schema} of ")
            assert "permission denied for database" in str(caught.value)
            assert ":pw@" not in str(caught.value)
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            assert found.fetchone() is None
        finally:
            conn.execute(f"DROP ROLE {role}")


def test_a_schema_of_another_application_is_refused(pg_url):
    schema = pg_url.rsplit("schema=", 1)[1]
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.invoices (id int)")
    with pytest.raises(StoreError, match=f"schema {schema} holds 1 tables or views but no stagew"):
        Store(pg_url)
    assert db_rows(pg_url, "SELECT count(*) FROM invoices") == [(0,)]


def test_reading_a_schema_that_does_not_exist_creates_nothing(pg_url):
    schema = pg_url.rsplit("schema=", 1)[1]
    result = invoke("changes", "--db", pg_url)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: schema {schema} of {pg_url} does not exist")
    assert db_rows(postgres_url(), "SELECT 1 FROM pg_namespace WHERE nspname = ?", (schema,)) == []


def test_a_schema_name_that_is_not_plain_is_refused():
    with pytest.raises(StoreError, match="schema 'Bad-Name' is not a plain lower-case SQL name"):
        Store(f"{postgres_url()}?schema=Bad-Name")


# -- the schema: created once, and nothing outside it --------------------------------------------


def test_threads_opening_a_new_schema_together_migrate_it_once(pg_url):
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            Store(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    names = db_rows(pg_url, "SELECT name FROM stagewatch_migrations ORDER BY id")
    assert names == [
        ("0001_initial",),
        ("0002_sync_runs_published",),
        ("0003_staged_seen_append_only",),
        ("0004_run_leases",),
        ("0005_run_facts_and_stays",),
        ("0006_stage_analytics",),
        ("0007_import_ledger",),
        ("0008_stage_status",),
        ("0009_sync_waiters",),
        ("0010_stays_kept",),
        ("0011_integration_checks",),
        ("0012_funnels_kept",),
    ]


def _outside(schema: str) -> list[tuple]:
    """Relations and functions of the database outside `schema` and the system's own."""
    return db_rows(
        postgres_url(),
        "SELECT 'rel', count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN (?, 'pg_catalog', 'information_schema', 'pg_toast')"
        " AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'"
        " AND n.nspname NOT LIKE 'sw_test_%' AND n.nspname NOT LIKE 'sw_drill_%'"
        # Joined, not `pronamespace::regnamespace`: that cast looks the schema up outside the
        # query's snapshot, so a function of a schema another test is dropping read as an oid.
        " UNION ALL SELECT 'fn', count(*) FROM pg_proc AS p"
        " JOIN pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE p.proname LIKE 'sw\\_%' AND n.nspname NOT LIKE 'sw_test_%'"
        " AND n.nspname NOT LIKE 'sw_drill_%'",  # the drills' schemas (tests/reliability)
        (schema,),
    )


def test_a_store_touches_nothing_outside_its_schema(pg_url):
    schema = pg_url.rsplit("schema=", 1)[1]
    before = _outside(schema)
    with Store(pg_url) as store:
        Runner(store).run([application("app-1")], hours=0, jobs=[job()])
        Runner(store).run([application("app-1", ("st-screen", "Phone screen"))], hours=1)
    assert _outside(schema) == before
    assert db_rows(pg_url, "SELECT count(*) FROM events") == [(2,)]


# -- the same history as SQLite ------------------------------------------------------------------


_TEXT = st.text(min_size=1, max_size=12).filter(lambda text: "\x00" not in text)


def test_event_keys_in_sql_are_the_documented_hash_for_any_text(pg_url):
    with Store(pg_url) as store:

        @settings(max_examples=60, deadline=None)
        @given(integration=_TEXT, application_id=_TEXT, version=st.integers(0, 2**40))
        def check(integration, application_id, version):
            found = store._conn.execute(
                "SELECT sw_event_key(?, ?, 'stage_changed', ?)",
                (integration, application_id, version),
            ).fetchone()[0]
            assert found == event_key(integration, application_id, "stage_changed", version)

        check()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(listings(), min_size=1, max_size=5))
def test_postgres_writes_the_events_and_snapshot_sqlite_writes(tmp_path_factory, listing_seq):
    sqlite = tmp_path_factory.mktemp("same") / "sw.db"
    with postgres_schema() as url:
        assert apply(url, listing_seq, repeat=1) == apply(sqlite, listing_seq, repeat=1)
        columns = "application_id, job_id, stage_id, outcome, deleted_observed_at, version"
        query = f"SELECT {columns}, content_hash FROM applications ORDER BY application_id"
        assert db_rows(url, query) == db_rows(sqlite, query)


# -- two workers, one integration ----------------------------------------------------------------


def _race(url: str, wait: float) -> list[str]:
    """Two `race_worker` processes started together; the one that takes the lock commits only
    once the other has tried (and, with no wait, given up). Their last lines, sorted."""
    Store(url).close()  # migrated before the race, so both processes start alike
    env = {**os.environ, "PYTHONPATH": ROOT}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.store.race_worker", url, str(wait)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    said: queue.Queue[tuple[int, str]] = queue.Queue()
    for number, worker in enumerate(workers):
        threading.Thread(
            target=lambda n, out: [said.put((n, line.strip())) for line in out],
            args=(number, worker.stdout), daemon=True,
        ).start()  # fmt: skip
    lines: dict[int, list[str]] = {0: [], 1: []}

    def hear() -> None:
        number, line = said.get(timeout=60)
        lines[number].append(line)

    while [ls[:1] for ls in lines.values()] != [["ready"], ["ready"]]:
        hear()
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    # The other has tried: with a wait it is waiting for the lock, without one it gave up.
    tried = "trying" if wait else "locked"
    while True:
        holder = next((n for n, ls in lines.items() if "holding" in ls), None)
        if holder is not None and any(x.startswith(tried) for x in lines[1 - holder]):
            break
        hear()
    # The holder commits; with a wait the other holds the lock next and commits in its turn.
    for worker in [workers[holder], *([workers[1 - holder]] if wait else [])]:
        worker.stdin.write("commit\n")
        worker.stdin.flush()
    for worker in workers:
        worker.stdin.close()
        assert worker.wait(timeout=60) == 0
    while not all(ls[-1].startswith(("committed", "locked")) for ls in lines.values()):
        hear()
    return sorted(ls[-1] for ls in lines.values())


def test_two_processes_racing_one_commits_the_other_stops_naming_the_holder(pg_url, tmp_path):
    committed, locked = _race(pg_url, wait=0)
    assert committed == "committed 1 300"
    holder = db_rows(pg_url, "SELECT pid, hostname FROM sync_runs WHERE id = 1")[0]
    assert locked.startswith(
        f"locked integration 'race:integration' is locked by run 1 (pid {holder[0]} on {HOST}, "
    )
    assert db_rows(pg_url, "SELECT count(*), count(DISTINCT event_key) FROM events") == [(300, 300)]
    assert db_rows(pg_url, "SELECT id, status FROM sync_runs") == [(1, "succeeded")]


def test_two_processes_racing_with_a_wait_commit_one_after_the_other(pg_url, tmp_path):
    assert _race(pg_url, wait=30) == ["committed 1 300", "committed 2 0"]
    assert db_rows(pg_url, "SELECT count(*), count(DISTINCT event_key) FROM events") == [(300, 300)]


# -- migrate-store ---------------------------------------------------------------------------------


def _fill(store: Store) -> None:
    runner = Runner(store)
    runner.run(
        [application("app-1"), application("app-2")], hours=0, jobs=[job()], watermark=at(-1)
    )
    runner.run(
        [application("app-1", ("st-onsite", "Onsite")), application("app-2", outcome="HIRED")],
        hours=2,
        watermark=at(1),
    )


def test_migrate_store_copies_everything_and_the_history_goes_on_alike(tmp_path, pg_url):
    sqlite = tmp_path / "sw.db"
    with Store(sqlite) as store:
        _fill(store)
        assert store.refresh_funnels(INTEGRATION) == 1  # kept funnel rows go over too
    target = with_password(pg_url)
    result = invoke("migrate-store", "--from", str(sqlite), "--to", target)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["sync_runs", "2"],
        ["watermarks", "1"],
        ["jobs", "1"],
        ["job_stages", "4"],
        ["applications", "2"],
        ["events", "4"],
        ["stage_stays_kept", "3"],
        ["job_funnel_kept", "4"],
        ["funnel_stale", "0"],
        ["quarantined", "0"],
        ["imports", "0"],
    ]
    assert "s3cret-pw" not in result.output
    assert lines[-1].endswith(":***@" + pg_url.split("@", 1)[1] + ": row counts and digests match.")
    # The same next run on both stores: the same events, keys and run ids included.
    later = [application("app-1", ("st-offer", "Offer")), application("app-3")]
    for where in (sqlite, pg_url):
        with Store(where) as store:
            Runner(store).run(later, hours=4, mode="incremental")
    query = "SELECT * FROM events ORDER BY id"
    assert db_rows(pg_url, query) == db_rows(sqlite, query)
    assert len(db_rows(pg_url, query)) == 6
    stays = "SELECT * FROM stage_stays_kept ORDER BY event_id"
    assert db_rows(pg_url, stays) == db_rows(sqlite, stays)
    assert len(db_rows(pg_url, stays)) == 5
    # The run left the job stale on both; its funnel reads the same before and after a refresh.
    funnel = "SELECT * FROM job_funnel ORDER BY job_id, stage_order"
    # Reached, in now, moved on, the job's hires: Applied, Phone screen, Onsite, Offer.
    expected = [(3, 1, 1, 1), (0, 0, 0, 1), (1, 0, 1, 1), (1, 1, 0, 1)]
    for where in (sqlite, pg_url):
        for refresh in (False, True):
            if refresh:
                with Store(where) as store:
                    assert store.refresh_funnels(INTEGRATION) == 1
            rows = db_rows(where, funnel)
            assert [(r[8], r[9], r[10], r[17]) for r in rows] == expected, (where, refresh)
    assert db_rows(pg_url, funnel) == db_rows(sqlite, funnel)


def test_migrate_store_refuses_a_target_that_holds_runs(tmp_path, pg_url):
    sqlite = tmp_path / "sw.db"
    with Store(sqlite) as store:
        _fill(store)
    assert invoke("migrate-store", "--from", str(sqlite), "--to", pg_url).exit_code == 0
    again = invoke("migrate-store", "--from", str(sqlite), "--to", pg_url)
    assert (again.exit_code, again.output) == (
        1,
        f"Error: {pg_url} already holds 2 runs: copy only into a new store\n",
    )
    assert db_rows(pg_url, "SELECT count(*) FROM events") == [(4,)]


def test_migrate_store_refuses_a_source_with_a_run_in_progress(tmp_path, pg_url):
    sqlite = tmp_path / "sw.db"
    with Store(sqlite) as store:
        _fill(store)
        store.begin_run("greenhouse:HWUTwvyx2wLoSUHphiWVrp28", "full")
        result = invoke("migrate-store", "--from", str(sqlite), "--to", pg_url)
    assert result.exit_code == 1
    assert "has 1 run(s) in progress" in result.output
    assert db_rows(pg_url, "SELECT count(*) FROM sync_runs") == [(0,)]


def test_migrate_store_back_to_sqlite_reads_the_same(tmp_path, pg_url):
    with Store(pg_url) as store:
        _fill(store)
    back = tmp_path / "back.db"
    result = invoke("migrate-store", "--from", pg_url, "--to", str(back))
    assert result.exit_code == 0, result.output
    query = "SELECT * FROM events ORDER BY id"
    assert db_rows(back, query) == db_rows(pg_url, query)


def test_the_webhook_ledger_of_a_postgresql_store_is_a_file_here(pg_url):
    from pathlib import Path

    from stagewatch.webhooks.ledger import default_ledger_path

    assert default_ledger_path(with_password(pg_url)) == Path("stagewatch-webhooks.db")
