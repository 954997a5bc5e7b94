"""Drill 3, concurrency: two syncs of the same integration and database at once. One must wait for
the other (or be refused with a message naming the lock), they must never talk to Kombo or write at
the same time, and the store must end as one uninterrupted run leaves it."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from stagewatch.simulator import SimulatorTransport, World, serve_in_thread
from stagewatch.store import LockedError, Store
from tests.reliability import cli
from tests.reliability.badinput import copy_db
from tests.reliability.harness import (
    CaseResult,
    SecretScanner,
    compare,
    connect_ro,
    describe,
    fingerprint,
    integrity,
    leftovers,
    sync_in_process,
)

SEED = 57
APPLICATIONS = 800
JOBS = 20
LATENCY_MS = 15  # long enough listings that the two commands overlap
PAGE_SIZE = 10
SCENARIOS = ("normal", "no-stages")


def _runs(db: Path, after: int) -> list[dict]:
    conn = connect_ro(db)
    conn.row_factory = sqlite3.Row
    try:
        return [
            dict(row)
            for row in conn.execute(
                "SELECT r.id, r.integration_id, r.status, r.error, "
                "(SELECT min(id) FROM events WHERE sync_run_id = r.id) AS first_event, "
                "(SELECT max(id) FROM events WHERE sync_run_id = r.id) AS last_event "
                "FROM sync_runs AS r WHERE r.id > ? ORDER BY r.id",
                (after,),
            )
        ]
    finally:
        conn.close()


def _listing_started(db: Path, after: int) -> bool:
    conn = connect_ro(db)
    try:
        return (
            conn.execute(
                "SELECT 1 FROM sync_runs WHERE id > ? AND staged_records > 0 LIMIT 1", (after,)
            ).fetchone()
            is not None
        )
    finally:
        conn.close()


def _max_run(db: Path) -> int:
    conn = connect_ro(db)
    try:
        return conn.execute("SELECT coalesce(max(id), 0) FROM sync_runs").fetchone()[0]
    finally:
        conn.close()


def interleaving_problems(runs: list[dict]) -> list[str]:
    """Two runs of one integration whose change-log rows interleave were not serialised."""
    problems = []
    by_integration: dict[str, list[dict]] = {}
    for run in runs:
        if run["first_event"] is not None:
            by_integration.setdefault(run["integration_id"], []).append(run)
    for integration_id, written in by_integration.items():
        for earlier, later in itertools.pairwise(written):
            if later["first_event"] < earlier["last_event"]:
                problems.append(
                    f"{integration_id}: events of runs {earlier['id']} and {later['id']} interleave"
                )
    return problems


@dataclass
class Setup:
    base_url: str
    stop: object
    integrations: list[str]
    base_db: Path
    reference_db: Path


def prepare(workdir: Path, key: str, server: cli.PrefectServer, scanner: SecretScanner) -> Setup:
    world = World(seed=SEED, applications=APPLICATIONS, jobs=JOBS, api_key=key, scenarios=SCENARIOS)
    base_url, stop = serve_in_thread(world, latency_ms=LATENCY_MS)
    integrations = list(world.integrations)
    setup = Setup(base_url, stop, integrations, workdir / "base.db", workdir / "reference.db")
    env = cli.sync_env(server, key)
    options = ["--page-size", str(PAGE_SIZE), "--json"] + [
        arg for i in integrations for arg in ("-i", i)
    ]
    first = cli.run(cli.sync_args(base_url, setup.base_db, *options), env, workdir, "base")
    world.advance(hours=24)
    copy_db(setup.base_db, setup.reference_db)
    reference = cli.run(
        cli.sync_args(base_url, setup.reference_db, *options), env, workdir, "reference"
    )
    for run in (first, reference):
        scanner.text("concurrency setup", run.stdout + run.stderr)
        if run.returncode != 0:
            stop()
            raise RuntimeError(f"the concurrency drill's setup sync failed: {run.stderr[-2000:]}")
    return setup


def run_pair_case(
    name: str,
    setup: Setup,
    selections: tuple[list[str], list[str]],
    second_mid_listing: bool,
    workdir: Path,
    key: str,
    server: cli.PrefectServer,
    scanner: SecretScanner,
) -> CaseResult:
    """Start two `stagewatch sync` commands on one database: together, or the second once the
    first has staged part of its listing."""
    result = CaseResult(name)
    db = workdir / f"{name}.db"
    copy_db(setup.base_db, db)
    before = _max_run(db)
    env = cli.sync_env(server, key)
    httpx.post(f"{setup.base_url}/_sim/stats/reset", timeout=10)
    processes = []
    started = time.monotonic()
    for number, selection in enumerate(selections):
        options = ["--page-size", str(PAGE_SIZE), "--json"]
        options += [arg for i in selection for arg in ("-i", i)]
        if number and second_mid_listing:
            listing = cli.wait_until(
                processes[0], lambda: _listing_started(db, before), timeout=120, every=0.02
            )
            result.check(bool(listing), "the first command ended before it staged anything")
        processes.append(
            cli.spawn(cli.sync_args(setup.base_url, db, *options), env, workdir, f"{name}-{number}")
        )
    done = [cli.finish(p, workdir, f"{name}-{n}", started) for n, p in enumerate(processes)]
    stats = httpx.get(f"{setup.base_url}/_sim/stats", timeout=10).json()
    for number, run in enumerate(done):
        scanner.text(f"{name} command {number}", run.stdout + run.stderr)
    refused = [run for run in done if run.returncode != 0]
    for run in refused:
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        result.check(
            len(lines) == 1 and "locked" in lines[0],
            f"a command exited {run.returncode} without one line naming the lock: {lines[-3:]}",
        )
    result.check(len(refused) < len(done), "both commands were refused")
    runs = _runs(db, before)
    result.info = {
        "exit codes": [run.returncode for run in done],
        "seconds": [round(run.seconds, 1) for run in done],
        "runs": [(r["integration_id"].split(":")[0], r["status"]) for r in runs],
        "max concurrent Kombo requests": stats["max_concurrent"],
    }
    synced = set(selections[0]) | set(selections[1])
    # A command takes an integration's lock only once the other has released it, so no
    # integration is ever listed twice at once: one request in flight per integration at most.
    result.check(
        stats["max_concurrent"] <= len(synced),
        f"{stats['max_concurrent']} Kombo requests in flight at once for {len(synced)} "
        "integration(s)",
    )
    result.problems += interleaving_problems(runs)
    bad = [r for r in runs if r["status"] != "succeeded"]
    result.check(
        not bad, f"runs not succeeded: {[(r['id'], r['status'], r['error']) for r in bad]}"
    )
    result.add(
        compare(fingerprint(db, synced), fingerprint(setup.reference_db, synced)), "against one run"
    )
    result.check(integrity(db) == "ok", f"integrity_check {integrity(db)}")
    left = leftovers(db)
    result.check(not any(left.values()), f"left behind {left}")
    scanner.path(db)
    return result


# -- in process (the fast subset) -------------------------------------------------------------------


def lock_refusal_case(workdir: Path, key: str, scanner: SecretScanner) -> CaseResult:
    """Two threads take one integration's lock with no wait: exactly one gets it, the other is
    refused with a message naming the integration, the holding run and its process."""
    result = CaseResult("lock refused without waiting, in process")
    db = workdir / "lock.db"
    Store(db).close()
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def take() -> None:
        with Store(db) as store:
            barrier.wait()
            try:
                outcomes.append(store.begin_run("greenhouse:LockDrill", wait=0))
            except LockedError as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [o for o in outcomes if isinstance(o, LockedError)]
    result.check(len(errors) == 1, f"{len(errors)} of 2 were refused, expected exactly 1")
    for error in errors:
        message = str(error)
        scanner.text("lock refusal", describe(error))
        for part in ("greenhouse:LockDrill", "locked by run", f"pid {error.pid}"):
            result.check(part in message, f"refusal {message!r} does not name {part!r}")
    return result


def threads_case(
    workdir: Path,
    key: str,
    scanner: SecretScanner,
    *,
    same_integration: bool,
    store_at: str | None = None,
) -> CaseResult:
    """Two threads sync into one database at once (each its own `Store`, as the flow's thread
    pool does): the same integration (one is refused) or two (both commit). `store_at` puts the
    store they share elsewhere (a PostgreSQL URL)."""
    label = "same integration" if same_integration else "two integrations"
    result = CaseResult(f"two threads, {label}, in process")
    world = World(seed=SEED, applications=300, jobs=8, api_key=key, scenarios=SCENARIOS)
    integrations = list(world.integrations)
    chosen = [integrations[0]] * 2 if same_integration else integrations
    transport = SimulatorTransport(world)
    base, db, reference = (workdir / f"{label}-{n}.db" for n in ("base", "case", "reference"))
    db = store_at or db
    for integration_id in integrations:
        sync_in_process(base, transport, integration_id, key, page_size=20)
    world.advance(hours=24)
    copy_db(base, db)
    copy_db(base, reference)
    for integration_id in sorted(set(chosen)):
        sync_in_process(reference, transport, integration_id, key, page_size=20)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def sync(integration_id: str) -> None:
        barrier.wait()
        outcomes.append(sync_in_process(db, transport, integration_id, key, page_size=20))

    threads = [threading.Thread(target=sync, args=(i,)) for i in chosen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A refused run ends failed before it began, with the lock holder named (as in the flow).
    refused = [o for o in outcomes if o.outcome.run_id is None]
    committed = [o for o in outcomes if o.outcome.run_id is not None]
    for o in refused:
        result.check(
            "is locked by run" in (o.outcome.message or ""),
            f"a refused sync says {o.outcome.message!r}",
        )
    if same_integration:
        # The second may also start after the first finished: then both commit, the second with
        # nothing new. Either way no events twice and none lost.
        result.check(len(committed) >= 1, "neither thread committed")
    else:
        result.check(not refused, f"a sync of another integration was refused: {refused}")
    result.check(
        all(o.outcome.status == "synced" for o in committed),
        f"statuses {[o.outcome.status for o in committed]}",
    )
    result.info = {"refused": len(refused), "committed": len(committed)}
    result.add(compare(fingerprint(db), fingerprint(reference)), "against one run each")
    result.problems += interleaving_problems(_runs(db, 0))
    result.check(integrity(db) == "ok", f"integrity_check {integrity(db)}")
    left = leftovers(db)
    result.check(not any(left.values()), f"left behind {left}")
    scanner.path(workdir)
    return result
