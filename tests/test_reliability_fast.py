"""The fast subset of the reliability drills (`make reliability` runs them all, with the figures).

Every test also scans what it produced (database files, logs, outcomes, markdown) for the API key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from stagewatch.simulator import World, serve_in_thread
from stagewatch.simulator.faults import FAULT_KINDS
from stagewatch.store import CRASH_ENV
from tests.reliability import badinput, cli, concurrency, fatal, faults, lease
from tests.reliability.badinput import copy_db
from tests.reliability.harness import (
    SecretScanner,
    compare,
    drill_key,
    fingerprint,
    integrity,
    leftovers,
    sync_in_process,
)
from tests.test_store_fixtures import db_rows

KEY = drill_key()
ROOT = Path(__file__).resolve().parent.parent

# Each kind alone at the full 20%, then all of them mixed.
STORMS = [faults.StormCase(seed=17 + n, kinds=(kind,)) for n, kind in enumerate(FAULT_KINDS)]
STORMS.append(faults.StormCase(seed=40, kinds=FAULT_KINDS))


@pytest.fixture
def scanner():
    return SecretScanner(KEY)


@pytest.mark.parametrize("case", STORMS, ids=[*FAULT_KINDS, "all-kinds"])
def test_a_week_under_a_fault_storm_leaves_the_fault_free_history(case, tmp_path, scanner):
    result = faults.run_storm_case(case, tmp_path, KEY, scanner)
    assert result.problems == []
    assert (result.lost, result.duplicated) == (0, 0)
    assert result.info["retries"] > 0
    assert scanner.where == []


def test_a_week_under_a_fault_storm_on_postgres_leaves_sqlites_fault_free_history(
    tmp_path, scanner, pg_url
):
    result = faults.run_storm_case(STORMS[-1], tmp_path, KEY, scanner, faulty_at=pg_url)
    assert result.problems == []
    assert (result.lost, result.duplicated) == (0, 0)
    assert result.info["retries"] > 0
    assert scanner.where == []


def test_full_listings_that_skip_and_spoil_records_delete_nothing_falsely(tmp_path, scanner):
    case = faults.StormCase(seed=23, kinds=faults.LISTING_FAULT_KINDS, applications=200)
    result = faults.run_listing_fault_case(case, tmp_path, KEY, scanner)
    assert result.problems == []
    assert result.info["false_deletions_or_restores"] == 0
    assert result.info["rescued"] > 0 and result.info["quarantined"] > 0
    assert scanner.where == []


def test_the_corpus_holds_at_least_thirty_cases_each_with_an_expectation():
    files = badinput.case_files()
    assert len(files) >= 30
    for path in files:
        case = json.loads(path.read_text())
        assert case["why"] and "applications" in case and isinstance(case["expect"], dict)


@pytest.fixture(scope="module")
def corpus_baseline(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("corpus") / "baseline.db"
    badinput.make_baseline(db, KEY)
    return db


@pytest.mark.parametrize("path", badinput.case_files(), ids=lambda p: p.stem)
def test_bad_input_is_quarantined_and_the_rest_stored(path, corpus_baseline, tmp_path, scanner):
    result = badinput.run_case(path, tmp_path, KEY, scanner, corpus_baseline)
    assert result.problems == []
    assert (result.lost, result.duplicated) == (0, 0)
    assert scanner.where == []


@pytest.mark.parametrize("case", fatal.CASES, ids=lambda c: c.cause)
def test_a_fatal_error_stops_after_one_request_and_changes_nothing(case, tmp_path, scanner):
    result = fatal.run_in_process_case(case, tmp_path, KEY, scanner)
    assert result.problems == []
    assert scanner.where == []


def test_a_second_run_of_a_locked_integration_is_refused_by_name(tmp_path, scanner):
    result = concurrency.lock_refusal_case(tmp_path, KEY, scanner)
    assert result.problems == []
    assert scanner.where == []


@pytest.mark.parametrize(
    ("same", "backend"),
    [(True, "sqlite"), (False, "sqlite"), (True, "postgres"), (False, "postgres")],
    ids=["same-integration", "two-integrations", "same-integration-pg", "two-integrations-pg"],
)
def test_two_threads_syncing_one_database_lose_and_repeat_nothing(
    same, backend, tmp_path, scanner, request
):
    store_at = request.getfixturevalue("pg_url") if backend == "postgres" else None
    result = concurrency.threads_case(
        tmp_path, KEY, scanner, same_integration=same, store_at=store_at
    )
    assert result.problems == []
    assert (result.lost, result.duplicated) == (0, 0)
    assert scanner.where == []


def _runs(db) -> list[tuple[int, str]]:
    return db_rows(db, "SELECT id, status FROM sync_runs ORDER BY id")


@pytest.fixture(scope="module")
def served_week(tmp_path_factory):
    """A world synced once (the store before each crash), a day later, and each mode's reference."""
    work = tmp_path_factory.mktemp("crash")
    world = World(seed=29, applications=300, jobs=8, api_key=KEY, scenarios=("normal",))
    base_url, stop = serve_in_thread(world)
    integration_id = world.normal_integration_id
    base = work / "base.db"
    sync_in_process(base, httpx.HTTPTransport(), integration_id, KEY, base_url=base_url)
    world.advance(hours=24)
    references = {}
    for mode in ("incremental", "full"):
        references[mode] = work / f"reference-{mode}.db"
        copy_db(base, references[mode])
        synced = sync_in_process(
            references[mode], httpx.HTTPTransport(), integration_id, KEY, mode=mode,
            base_url=base_url,
        )  # fmt: skip
        assert synced.outcome.status == "synced" and synced.outcome.counts
    yield base_url, integration_id, base, references
    stop()


# On PostgreSQL too, where a killed process leaves its transaction to the server to roll back.
CRASHES = [
    ("stage:after_insert", "incremental", "sqlite"),
    ("commit:start", "incremental", "sqlite"),
    ("commit:after_diff", "incremental", "sqlite"),
    ("commit:before_commit", "incremental", "sqlite"),
    ("commit:after_diff", "full", "sqlite"),
    ("stage:after_insert", "incremental", "postgres"),
    ("commit:before_commit", "incremental", "postgres"),
    ("commit:after_diff", "full", "postgres"),
]


@pytest.mark.parametrize(("hook", "mode", "backend"), CRASHES)
def test_a_sync_killed_anywhere_leaves_the_store_whole_and_a_rerun_converges(
    hook, mode, backend, served_week, tmp_path, scanner, request
):
    base_url, integration_id, base, references = served_week
    db = tmp_path / "store.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    copy_db(base, db)
    command = [sys.executable, "-m", "tests.reliability.worker", str(db), base_url, integration_id]
    command += ["--page-size", "10"] + (["--full"] if mode == "full" else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMBO_", "STAGEWATCH_"))}
    env |= {"KOMBO_API_KEY": KEY, CRASH_ENV: hook}
    killed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=60)
    scanner.text("killed worker", killed.stdout + killed.stderr)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    killed_run = _runs(base)[-1][0] + 1
    assert integrity(db) == "ok"
    assert compare(fingerprint(db), fingerprint(base)).differences == []

    rerun = sync_in_process(
        db, httpx.HTTPTransport(), integration_id, KEY, mode=mode, base_url=base_url
    )
    scanner.text("rerun", rerun.outcome.model_dump_json())
    assert rerun.outcome.status == "synced"
    comparison = compare(fingerprint(db), fingerprint(references[mode]))
    assert comparison.differences == []
    assert integrity(db) == "ok"
    assert not any(leftovers(db).values())
    assert _runs(db)[-2:] == [(killed_run, "abandoned"), (killed_run + 1, "succeeded")]
    scanner.text("store", json.dumps(fingerprint(db), default=str))
    scanner.path(tmp_path)
    assert scanner.where == []


@pytest.fixture(scope="module")
def slow_week(tmp_path_factory):
    """A world served slowly enough that a full listing can be killed midway: synced once (the
    store before the kill), a day later, and the full listing's reference."""
    work = tmp_path_factory.mktemp("lease")
    world = World(seed=31, applications=300, jobs=8, api_key=KEY, scenarios=("normal",))
    base_url, stop = serve_in_thread(world, latency_ms=20)
    integration_id = world.normal_integration_id
    base, reference = work / "base.db", work / "reference.db"
    sync_in_process(base, httpx.HTTPTransport(), integration_id, KEY, base_url=base_url)
    world.advance(hours=24)
    copy_db(base, reference)
    synced = sync_in_process(
        reference, httpx.HTTPTransport(), integration_id, KEY, mode="full", base_url=base_url
    )
    assert synced.outcome.status == "synced" and synced.outcome.counts
    yield base_url, integration_id, base, reference
    stop()


def test_a_sync_killed_on_another_host_is_taken_over_once_its_lease_runs_out(
    slow_week, tmp_path, scanner
):
    problem = lease.unshare_problem()
    if problem:
        pytest.skip(problem)
    base_url, integration_id, base, reference = slow_week
    db = tmp_path / "store.db"
    copy_db(base, db)
    command = [sys.executable, "-m", "tests.reliability.worker", str(db), base_url, integration_id]
    command += ["--full", "--page-size", "5"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMBO_", "STAGEWATCH_"))}
    env |= {
        "KOMBO_API_KEY": KEY,
        lease.LEASE_ENV: str(lease.LEASE_SECONDS),
        "PYTHONPATH": str(ROOT),
    }

    def spawn():
        return cli.spawn(lease.under_other_host(command), env, tmp_path, "killed")

    def rerun():
        synced = sync_in_process(
            db, httpx.HTTPTransport(), integration_id, KEY, mode="full", base_url=base_url,
            lock_wait=30,
        )  # fmt: skip
        scanner.text("rerun", synced.outcome.model_dump_json())
        return None if synced.outcome.status == "synced" else synced.outcome.message

    result = lease.run_case(
        "cross-host", db, integration_id, reference, spawn, rerun, 20, lease.LEASE_SECONDS
    )
    assert result.problems == []
    assert (result.lost, result.duplicated) == (0, 0)
    assert result.info["lease renewed for (s)"] > 0
    scanner.path(tmp_path)
    assert scanner.where == []
