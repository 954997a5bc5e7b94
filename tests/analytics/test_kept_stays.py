"""The kept stays (m0010) equal what m0005/m0006 derived from the change log, run after run.

The expected rows come from the old derivation's SQL, the frozen statements of migrations 0005 and
0006, run as queries over the same store: none of the code that keeps the stays computes them.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from benchmarks.analytics_bench import before_0010
from stagewatch.analytics.stays import ENDINGS
from stagewatch.simulator import SimulatorTransport, World
from stagewatch.store import Store, pg_schema, schema
from tests.builders import INTEGRATION, OTHER_INTEGRATION, PIPELINE, Runner, application, job
from tests.reliability.harness import sync_in_process

KEY = "sk_kept_stays"


def _body(statement: str, view: str) -> str:
    """A frozen CREATE VIEW's query, without its CREATE line."""
    head, _, body = statement.strip().partition("\n")
    assert head.startswith(f"CREATE VIEW {view} AS"), head
    return body


def _derived(store: Store) -> tuple[str, str]:
    """The old derivation's stays and funnel queries, each backend's 0005 stage_history inside."""
    history = (
        pg_schema._STAGE_HISTORY
        if store._db.postgres
        else next(s for s in schema.RUN_FACTS if s.strip().startswith("CREATE VIEW stage_history"))
    )
    stays = _body(schema.STAGE_STAYS, "stage_stays").replace(
        "FROM stage_history AS h", f"FROM ({_body(history, 'stage_history')}) AS h"
    )
    return stays, schema.FUNNEL_SELECT.format(stays=f"({stays})", job_stages="job_stages")


STAYS_ORDER = "integration_id, application_id, event_id"
FUNNEL_ORDER = "integration_id, job_id, stage_order"


def _rows(store: Store, sql: str, order: str) -> list[tuple]:
    cursor = store._conn.execute(f"SELECT * FROM ({sql}) AS x ORDER BY {order}")
    return [tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in cursor]


def _assert_kept_equal_derived(store: Store) -> None:
    """The kept stays, and the funnel both as it reads with stale jobs (their rows computed, the
    others kept from an earlier refresh) and once every job is refreshed (all rows kept): a job
    a run forgot to mark stale would keep rows from before it and differ here."""
    derived_stays, derived_funnel = _derived(store)
    kept = _rows(store, "SELECT * FROM stage_stays", STAYS_ORDER)
    assert kept == _rows(store, derived_stays, STAYS_ORDER)
    expected = _rows(store, derived_funnel, FUNNEL_ORDER)
    assert _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER) == expected
    for (integration,) in store._conn.execute("SELECT DISTINCT integration_id FROM funnel_stale"):
        assert store.refresh_funnels(integration) > 0
    assert store._conn.execute("SELECT count(*) FROM funnel_stale").fetchone()[0] == 0
    assert _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER) == expected


def _endings(store: Store) -> set[str]:
    return {row[0] for row in store._conn.execute("SELECT DISTINCT ended FROM stage_stays")}


STAGES = [(stage_id, name) for stage_id, name, _ in PIPELINE]
# Per day since an application was first listed: its stage (index into STAGES; None: not listed).
PATHS = ([0, 1, 0, 2, 3, 3], [0, 0, None, 1, 1, 2], [2, 1, 1, 0, 3, 3])


def _other_listing(day: int) -> list:
    """A hand-driven integration beside the simulated one: first sightings on later days (some
    already hired or declined), moves both ways, an application missing from a full listing and
    back, a job move, a remote_created_at that Kombo corrects."""
    apps = []
    for first in range(day + 1):
        app_id, age = f"late-{first}", day - first
        stage = PATHS[first % 3][min(age, 5)]
        if stage is None:
            continue
        outcome = ("PENDING", "HIRED", "DECLINED")[first % 3] if first and age == 0 else "PENDING"
        outcome = "HIRED" if age == 5 and first % 2 else outcome
        created = "2026-01-01T00:00:00Z" if age < 3 else "2025-12-31T00:00:00Z"
        job_id = "job-2" if first % 4 == 3 and age >= 2 else "job-1"
        apps.append(application(app_id, STAGES[stage], outcome, job_id, remote_created_at=created))
    return apps


@pytest.fixture
def world():
    # Stage moves both ways, hires, declines, job moves, deletions (and restores) at a daily pace.
    return World(seed=19, applications=120, jobs=4, api_key=KEY, scenarios=("normal",))


def test_kept_stays_equal_the_derivation_through_a_simulated_history(db_url, world):
    """Full and incremental runs, re-runs with nothing new, new applications each day: after
    every run the kept stays and the funnel over them equal the derivation."""
    transport = SimulatorTransport(world)
    integration = world.normal_integration_id
    for day in range(14):
        mode = "full" if day % 4 == 0 else "incremental"
        synced = sync_in_process(db_url, transport, integration, KEY, mode=mode, page_size=40)
        assert synced.error is None, synced.error
        if day % 5 == 2:  # a re-run that finds nothing new must change nothing
            sync_in_process(db_url, transport, integration, KEY, mode="full", page_size=40)
        with Store(db_url) as store:
            jobs = [job(), job("job-2")] if day == 0 else ()
            Runner(store, OTHER_INTEGRATION).run(_other_listing(day), hours=24 * day, jobs=jobs)
            _assert_kept_equal_derived(store)
        world.advance(hours=48)
    with Store(db_url) as store:
        assert _endings(store) == set(ENDINGS)
        kinds = {row[0] for row in store._conn.execute("SELECT DISTINCT kind FROM events")}
        assert "restored" in kinds
        assert store._conn.execute("SELECT count(*) FROM stage_stays").fetchone()[0] > 250


def test_the_backfill_rebuilds_what_the_derivation_gives(db_url, world):
    """Migration 0010's backfill statement over a store with history: the upgrade path."""
    transport = SimulatorTransport(world)
    integration = world.normal_integration_id
    for day in range(6):
        sync_in_process(db_url, transport, integration, KEY, mode="full", page_size=40)
        with Store(db_url) as store:
            jobs = [job(), job("job-2")] if day == 0 else ()
            Runner(store, OTHER_INTEGRATION).run(_other_listing(day), hours=24 * day, jobs=jobs)
        world.advance(hours=72)
    backfill = next(s for s in schema.STAYS_KEPT if s.lstrip().startswith("INSERT INTO"))
    with Store(db_url) as store:
        store._conn.execute("DELETE FROM stage_stays_kept")
        store._conn.execute(backfill.strip())
        _assert_kept_equal_derived(store)
        assert store._conn.execute("SELECT count(*) FROM stage_stays").fetchone()[0] > 100


def _full_syncs(db: str, world: World, runs: int = 4) -> None:
    """`runs` full syncs of the simulated integration, three days apart: a store with history."""
    transport = SimulatorTransport(world)
    for _ in range(runs):
        sync_in_process(db, transport, world.normal_integration_id, KEY, mode="full")
        world.advance(hours=72)


def test_a_store_written_before_0010_upgrades_with_its_stays(tmp_path, world, caplog):
    """A SQLite store as 0009 left it (views over the log, no kept stays) gets its stays on open,
    and says before it starts that the upgrade may take minutes."""
    db = str(tmp_path / "sw.db")
    _full_syncs(db, world)
    with Store(db) as store:
        before = _rows(store, "SELECT * FROM stage_stays", STAYS_ORDER)
        before_0010(store._conn)
    caplog.clear()
    with Store(db) as store:
        (notice,) = [r.getMessage() for r in caplog.records if r.message.startswith("upgrading")]
        assert notice == (
            f"upgrading {db}: applying migrations 0010_stays_kept, 0012_funnels_kept "
            "(0010_stays_kept builds the kept stays from the change log; 0012_funnels_kept builds "
            "each job's funnel from the kept stays: minutes on a store of millions of events)"
        )
        tables = {row[0] for row in store._conn.execute("SELECT name FROM sqlite_master")}
        assert {"stage_stays_kept", "job_funnel_kept"} <= tables
        # Every job's funnel is built by the upgrade: none is left to compute on read.
        assert store._conn.execute("SELECT count(*) FROM funnel_stale").fetchone()[0] == 0
        assert store._conn.execute("SELECT count(*) FROM job_funnel_kept").fetchone()[0] > 4
        assert _rows(store, "SELECT * FROM stage_stays", STAYS_ORDER) == before
        _assert_kept_equal_derived(store)
    assert len(before) > 100


def test_a_job_whose_stages_are_reordered_is_refunnelled_without_a_move(db_url):
    """Stage order comes from the job as last listed: a re-indexed job with no application moving
    goes stale, and its funnel follows the new order (reached_later, conversion included)."""
    moved = [
        application("a-1", ("st-screen", "Phone screen")),
        application("a-2", ("st-onsite", "Onsite")),
    ]
    reordered = [(sid, name, 3 - index) for sid, name, index in PIPELINE]
    with Store(db_url) as store:
        runner = Runner(store)
        runner.run([application("a-1"), application("a-2")], hours=0, jobs=[job()])
        runner.run(moved, hours=1)
        assert store.refresh_funnels(INTEGRATION) == 1
        assert store.stale_funnel_jobs(INTEGRATION) == 0
        before = _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER)
        runner.run(moved, hours=2, jobs=[job(stages=reordered)])
        assert store.stale_funnel_jobs(INTEGRATION) == 1
        _assert_kept_equal_derived(store)
        after = _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER)
    # (stage_id, reached, reached_later): Applied led both on before, is last now.
    assert [(r[4], r[8], r[10]) for r in before] == [
        ("st-applied", 2, 2), ("st-screen", 1, 0), ("st-onsite", 1, 0), ("st-offer", 0, 0),
    ]  # fmt: skip
    assert [(r[4], r[8], r[10]) for r in after] == [
        ("st-offer", 0, 0), ("st-onsite", 1, 0), ("st-screen", 1, 0), ("st-applied", 2, 0),
    ]  # fmt: skip


def test_a_run_that_changes_nothing_leaves_the_kept_funnel_fresh(db_url):
    """Re-listing the same applications and jobs marks nothing: the next read is all kept rows."""
    apps = [application("a-1"), application("a-2", ("st-screen", "Phone screen"))]
    with Store(db_url) as store:
        runner = Runner(store)
        runner.run(apps, hours=0, jobs=[job()])
        assert store.refresh_funnels(INTEGRATION) == 1
        runner.run(apps, hours=1, jobs=[job()])
        assert store.stale_funnel_jobs(INTEGRATION) == 0
        assert store.refresh_funnels(INTEGRATION) == 0


def test_a_corrected_creation_time_alone_refunnels_the_job(db_url):
    """Kombo correcting remote_created_at restarts the first stay, with no event for the
    application: its job still goes stale, and the stage's days follow."""
    created = {"remote_created_at": "2026-01-01T00:00:00Z"}
    corrected = {"remote_created_at": "2025-12-31T00:00:00Z"}
    screen = ("st-screen", "Phone screen")
    with Store(db_url) as store:
        runner = Runner(store)
        runner.run([application("a-1", **created)], hours=0, jobs=[job()])
        runner.run([application("a-1", screen, **created)], hours=24)
        assert store.refresh_funnels(INTEGRATION) == 1
        before = _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER)
        runner.run([application("a-1", screen, **corrected)], hours=48)
        assert store.stale_funnel_jobs(INTEGRATION) == 1
        _assert_kept_equal_derived(store)
        after = _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER)
    # Applied's median days: from the creation time to the move seen on 2026-01-06 09:00.
    assert (before[0][4], before[0][12]) == ("st-applied", 5.375)
    assert (after[0][4], after[0][12]) == ("st-applied", 6.375)


def test_stays_without_a_job_are_kept_under_an_empty_key(db_url):
    """Kombo may give an application no job: its stays' funnel rows are kept under job_key ''
    and read back with job_id NULL, the same rows the derivation gives."""
    screen = ("st-screen", "Phone screen")
    with Store(db_url) as store:
        runner = Runner(store)
        runner.run([application("a-1", job_id=None), application("a-2")], hours=0, jobs=[job()])
        stale = "SELECT job_key FROM funnel_stale ORDER BY job_key"
        assert [r[0] for r in store._conn.execute(stale)] == ["", "job-1"]
        _assert_kept_equal_derived(store)
        runner.run([application("a-1", screen, job_id=None), application("a-2")], hours=1)
        assert [r[0] for r in store._conn.execute(stale)] == [""]
        _assert_kept_equal_derived(store)
        kept = store._conn.execute(
            "SELECT job_id, stage_id FROM job_funnel_kept WHERE job_key = '' ORDER BY stage_order"
        )
        assert [tuple(r) for r in kept] == [(None, "st-applied"), (None, "st-screen")]


def _before_0012(store: Store) -> None:
    """Take a store back to 0011: job_funnel derived from the kept stays, no kept funnels."""
    conn, postgres = store._conn, store._db.postgres
    conn.execute("DROP VIEW job_funnel")
    conn.execute("DROP TABLE job_funnel_kept")
    conn.execute("DROP TABLE funnel_stale")
    if postgres:
        statements = dict(pg_schema.MIGRATIONS)["0010_stays_kept"]
        (view,) = [s for s in statements if s.startswith("CREATE VIEW job_funnel")]
        conn.execute(view)
        conn.execute(f"DELETE FROM {pg_schema.MIGRATIONS_TABLE} WHERE name = '0012_funnels_kept'")
    else:
        conn.execute(schema.STAGE_ANALYTICS[1].strip())
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0012_funnels_kept'")


def test_a_store_with_history_upgrades_to_kept_funnels(db_url, world):
    """Migration 0012 over a store with history, on both backends: every job's funnel is built,
    none is left stale, and job_funnel reads the same rows as before the upgrade."""
    _full_syncs(db_url, world)
    with Store(db_url) as store:
        before = _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER)
        _before_0012(store)
        assert _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER) == before
    with Store(db_url) as store:
        assert store._conn.execute("SELECT count(*) FROM funnel_stale").fetchone()[0] == 0
        kept = store._conn.execute("SELECT count(*) FROM job_funnel_kept").fetchone()[0]
        assert kept == len(before) > 10
        assert _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER) == before
        _assert_kept_equal_derived(store)


def _stale_history(store: Store) -> Runner:
    """job-1 and job-2 rebuilt, then a run that moves an application of job-1: job-1 is stale."""
    runner = Runner(store)
    apps = [application("a-1"), application("a-2"), application("b-1", job_id="job-2")]
    runner.run(apps, hours=0, jobs=[job(), job("job-2")])
    assert store.refresh_funnels(INTEGRATION) == 2
    runner.run([application("a-1", ("st-screen", "Phone screen"))], hours=1, mode="incremental")
    assert [r[0] for r in store._conn.execute("SELECT job_key FROM funnel_stale")] == ["job-1"]
    return runner


def _derived_funnel(store: Store) -> list[tuple]:
    return _rows(store, _derived(store)[1], FUNNEL_ORDER)


def test_a_run_committed_during_a_rebuild_leaves_its_job_stale(db_url):
    """The rebuild computed job-1 before a run moved another of its applications: it keeps
    nothing for job-1, which the view goes on computing from its stays."""
    with Store(db_url) as store:
        runner = _stale_history(store)
        marks, rows = store._funnels.compute(INTEGRATION, None, 50)
        runner.run([application("a-2", ("st-onsite", "Onsite"))], hours=2, mode="incremental")
        assert store._funnels.apply(INTEGRATION, marks, rows) == 0
        assert store.stale_funnel_jobs(INTEGRATION) == 1
        _assert_kept_equal_derived(store)


def test_two_rebuilds_racing_never_keep_the_older_rows(db_url):
    """Rebuild B computes job-1, a run moves an application, rebuild A computes and writes job-1;
    B's write comes last: its mark is gone, so A's rows stay."""
    with Store(db_url) as store:
        runner = _stale_history(store)
        older = store._funnels.compute(INTEGRATION, None, 50)
        runner.run([application("a-2", ("st-onsite", "Onsite"))], hours=2, mode="incremental")
        newer = store._funnels.compute(INTEGRATION, None, 50)
        assert store._funnels.apply(INTEGRATION, *newer) == 1
        assert store._funnels.apply(INTEGRATION, *older) == 0
        assert store.stale_funnel_jobs(INTEGRATION) == 0
        kept = _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER)
        assert kept == _derived_funnel(store)
        onsite = [r for r in kept if r[1] == "job-1" and r[4] == "st-onsite"]
        assert [(r[8], r[9]) for r in onsite] == [(1, 1)]  # a-2, moved in the later run


def test_a_rebuild_goes_job_by_job_in_steps(db_url):
    """Steps of one job each, the stays without a job ('' sorts first) included."""
    with Store(db_url) as store:
        Runner(store).run(
            [application("a-1"), application("b-1", job_id="job-2"), application("n", job_id=None)],
            hours=0,
            jobs=[job(), job("job-2")],
        )
        assert store._funnels.refresh(INTEGRATION, chunk=1) == 3
        assert store.stale_funnel_jobs(INTEGRATION) == 0
        kept = store._conn.execute("SELECT DISTINCT job_key FROM job_funnel_kept ORDER BY 1")
        assert [r[0] for r in kept] == ["", "job-1", "job-2"]
        assert _rows(store, "SELECT * FROM job_funnel", FUNNEL_ORDER) == _derived_funnel(store)
