"""Drill 1, fault storm: a simulated week synced fault-free and again with 20% of requests failing
must leave the same snapshot and change log, every event once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from stagewatch.simulator import (
    FAULT_KINDS,
    FaultConfig,
    SimulatorTransport,
    World,
    serve_in_thread,
)
from stagewatch.simulator.faults import RECORD_KINDS
from tests.reliability import cli
from tests.reliability.harness import (
    CaseResult,
    SecretScanner,
    Sleeps,
    captured_logs,
    compare,
    connect_ro,
    fingerprint,
    integrity,
    leftovers,
    sync_in_process,
)

FAULT_RATE = 0.2
WEEK_DAYS = 7
SCENARIOS = ("normal", "no-stages")


@dataclass(frozen=True)
class StormCase:
    """One seed: the world, the fault kinds (one kind alone, or all of them mixed)."""

    seed: int
    kinds: tuple[str, ...]
    applications: int = 400
    jobs: int = 10
    page_size: int = 25

    @property
    def name(self) -> str:
        kinds = "all kinds" if set(self.kinds) == set(FAULT_KINDS) else ",".join(self.kinds)
        return f"seed {self.seed}: {kinds} at {FAULT_RATE:.0%}"


def storm_cases(count: int, first_seed: int = 1) -> list[StormCase]:
    """Each kind alone first (so every kind is drilled at the full 20%), then all kinds mixed."""
    cases = []
    for number in range(count):
        seed = first_seed + number
        if number < 2 * len(FAULT_KINDS):
            kinds = (FAULT_KINDS[number % len(FAULT_KINDS)],)
        else:
            kinds = FAULT_KINDS
        cases.append(StormCase(seed=seed, kinds=kinds))
    return cases


def make_world(case: StormCase, key: str) -> World:
    return World(
        seed=case.seed,
        applications=case.applications,
        jobs=case.jobs,
        api_key=key,
        scenarios=SCENARIOS,
    )


def sync_week(world: World, transport: SimulatorTransport, db: Path, key: str, case: StormCase):
    """A sync a day for a week (the last one a full listing), every integration each time."""
    outcomes = []
    sleeps = Sleeps()
    for day in range(WEEK_DAYS + 1):
        if day:
            world.advance(hours=24)
        mode = "full" if day == WEEK_DAYS else "incremental"
        for integration_id in world.integrations:
            synced = sync_in_process(
                db,
                transport,
                integration_id,
                key,
                mode=mode,
                page_size=case.page_size,
                sleep=sleeps,
                rng_seed=case.seed,
            )
            outcomes.append(synced.outcome)
    return outcomes, sleeps


def run_storm_case(
    case: StormCase, workdir: Path, key: str, scanner: SecretScanner, faulty_at: str | None = None
) -> CaseResult:
    """The week with and without faults; `faulty_at` puts the faulty week's store elsewhere (a
    PostgreSQL URL), to be compared with the fault-free week's SQLite file."""
    result = CaseResult(case.name)
    workdir.mkdir(parents=True, exist_ok=True)
    clean_db, faulty_db = workdir / "clean.db", faulty_at or workdir / "faulty.db"
    clean_world, faulty_world = make_world(case, key), make_world(case, key)
    clean = SimulatorTransport(clean_world)
    faults = FaultConfig(rate=FAULT_RATE, kinds=case.kinds, seed=case.seed)
    faulty = SimulatorTransport(faulty_world, faults)
    with captured_logs() as logs:
        clean_outcomes, _ = sync_week(clean_world, clean, clean_db, key, case)
        faulty_outcomes, sleeps = sync_week(faulty_world, faulty, faulty_db, key, case)
    injected = faulty.stats()["faults"]
    result.info = {
        "faults": injected,
        "requests": faulty.stats()["requests_total"],
        "retries": sum(o.retries for o in faulty_outcomes),
        "slept": round(sum(sleeps), 1),
        "failed_syncs": sum(o.status == "failed" for o in faulty_outcomes),
    }
    result.check(clean.stats()["faults_total"] == 0, "the fault-free run saw faults")
    result.check(
        bool(injected) and set(injected) <= set(case.kinds),
        f"kinds injected {sorted(injected)}, wanted some of {sorted(case.kinds)}",
    )
    for label, outcomes in (("fault-free", clean_outcomes), ("faulty", faulty_outcomes)):
        statuses = Counter(o.status for o in outcomes)
        result.check(
            set(statuses) == {"synced"},
            f"{label} run: sync statuses {dict(statuses)}: "
            + "; ".join(o.message or "" for o in outcomes if o.status != "synced")[:300],
        )
    result.check(
        any(o.counts for o in clean_outcomes[len(SCENARIOS) :]),
        "the week changed nothing after the first day: nothing to lose",
    )
    result.add(compare(fingerprint(faulty_db), fingerprint(clean_db)), "faulty vs fault-free")
    for name, db in (("clean", clean_db), ("faulty", faulty_db)):
        result.check(integrity(db) == "ok", f"{name}: integrity_check {integrity(db)}")
        left = leftovers(db)
        result.check(not any(left.values()), f"{name} left behind {left}")
    scanner.text(f"{case.name}: logs", logs.text)
    for outcome in clean_outcomes + faulty_outcomes:
        scanner.text(f"{case.name}: outcome", outcome.model_dump_json())
    scanner.path(workdir)
    return result


# -- the whole stack over loopback ------------------------------------------------------------------

CLI_DAYS = (0, 7)  # the first sync lists everything, the second what changed during the week
CLI_RETRY_AFTER_SECONDS = 1
CLI_SLOW_SECONDS = 3.0  # past the commands' 2 s read timeout (cli.FAST_RETRIES)


def _sim_stats(base_url: str) -> dict:
    return httpx.get(f"{base_url}/_sim/stats", timeout=10).json()


def run_cli_storm_case(
    case: StormCase, workdir: Path, key: str, server: cli.PrefectServer, scanner: SecretScanner
) -> CaseResult:
    """The same week through `stagewatch sync` on loopback, fault-free and with every fault kind
    served over real HTTP (timeouts wait, connections really drop)."""
    result = CaseResult(f"{case.name}, stagewatch sync over loopback")
    workdir.mkdir(parents=True, exist_ok=True)
    faults = FaultConfig(
        rate=FAULT_RATE,
        kinds=case.kinds,
        seed=case.seed,
        retry_after_seconds=CLI_RETRY_AFTER_SECONDS,
        slow_seconds=CLI_SLOW_SECONDS,
    )
    worlds = {"clean": make_world(case, key), "faulty": make_world(case, key)}
    served = {
        "clean": serve_in_thread(worlds["clean"]),
        "faulty": serve_in_thread(worlds["faulty"], faults),
    }
    env = cli.sync_env(server, key, **cli.FAST_RETRIES)
    try:
        day = 0
        for sync_day in CLI_DAYS:
            for label, world in worlds.items():
                world.advance(hours=24 * (sync_day - day))
                options = ["--page-size", str(case.page_size), "--json"]
                for integration_id in world.integrations:
                    options += ["-i", integration_id]
                done = cli.run(
                    cli.sync_args(served[label][0], workdir / f"{label}.db", *options),
                    env,
                    workdir,
                    f"{label}-day{sync_day}",
                )
                scanner.text(f"{result.name} {label} day {sync_day}", done.stdout + done.stderr)
                result.check(
                    done.returncode == 0,
                    f"{label} day {sync_day}: exit {done.returncode}: {done.stderr[-300:]}",
                )
            day = sync_day
        stats = _sim_stats(served["faulty"][0])
    finally:
        for _, stop in served.values():
            stop()
    result.info = {"faults": stats["faults"], "requests": stats["requests_total"]}
    result.check(
        bool(stats["faults"]) and set(stats["faults"]) <= set(case.kinds),
        f"kinds injected {sorted(stats['faults'])}, wanted some of {sorted(case.kinds)}",
    )
    clean_db, faulty_db = workdir / "clean.db", workdir / "faulty.db"
    result.add(compare(fingerprint(faulty_db), fingerprint(clean_db)), "faulty vs fault-free")
    for name, db in (("clean", clean_db), ("faulty", faulty_db)):
        result.check(integrity(db) == "ok", f"{name}: integrity_check {integrity(db)}")
        left = leftovers(db)
        result.check(not any(left.values()), f"{name} left behind {left}")
    scanner.path(workdir)
    return result


# -- what a listing concludes when its records are not all there ------------------------------------

LISTING_FAULT_KINDS = RECORD_KINDS


def _deletions_and_restores(db: Path) -> Counter[tuple[str, str, str]]:
    """Every absence-inferred deletion and every restore, per integration and application."""
    conn = connect_ro(db)
    try:
        rows = conn.execute(
            "SELECT integration_id, application_id, kind FROM events "
            "WHERE deleted_reason = 'missing_from_full_listing' OR kind = 'restored'"
        ).fetchall()
    finally:
        conn.close()
    return Counter(tuple(row) for row in rows)


def _current_states(db: Path) -> list[tuple]:
    conn = connect_ro(db)
    try:
        return conn.execute(
            "SELECT integration_id, application_id, job_id, stage_id, outcome, "
            "deleted_observed_at IS NOT NULL FROM applications ORDER BY 1, 2"
        ).fetchall()
    finally:
        conn.close()


def run_listing_fault_case(
    case: StormCase, workdir: Path, key: str, scanner: SecretScanner
) -> CaseResult:
    """A week of daily full syncs whose listings skip records and serve unparseable ones, against
    the same week fault-free: no application is taken for deleted (or restored) that was not, and
    once a fault-free full sync has run on both, every application's state is the same."""
    result = CaseResult(f"seed {case.seed}: {','.join(case.kinds)} at {FAULT_RATE:.0%}, full")
    workdir.mkdir(parents=True, exist_ok=True)
    dbs = {"clean": workdir / "clean.db", "faulty": workdir / "faulty.db"}
    worlds = {label: make_world(case, key) for label in dbs}
    faults = FaultConfig(rate=FAULT_RATE, kinds=case.kinds, seed=case.seed)
    transports = {
        "clean": SimulatorTransport(worlds["clean"]),
        "faulty": SimulatorTransport(worlds["faulty"], faults),
    }
    outcomes = []
    with captured_logs() as logs:
        for day in range(WEEK_DAYS + 1):
            for label, world in worlds.items():
                if day:
                    world.advance(hours=24)
                # The faulty store's last sync is fault-free: it settles what faults delayed.
                transport = transports["clean" if day == WEEK_DAYS else label]
                for integration_id in world.integrations:
                    synced = sync_in_process(
                        dbs[label], transport, integration_id, key, mode="full",
                        page_size=case.page_size, rng_seed=case.seed,
                    )  # fmt: skip
                    outcomes.append((label, synced.outcome))
    faulty = [o for label, o in outcomes if label == "faulty"]
    injected = transports["faulty"].stats()["faults"]
    result.info = {
        "faults": injected,
        "rescued": sum(o.absent_rescued for o in faulty),
        "quarantined": sum(o.quarantined for o in faulty),
        "confirmed_deleted": sum(o.absent_deleted for o in faulty),
    }
    result.check(set(injected) == set(case.kinds), f"kinds injected {sorted(injected)}")
    result.check({o.status for _, o in outcomes} == {"synced"}, "a sync did not commit")
    false = _deletions_and_restores(dbs["faulty"]) - _deletions_and_restores(dbs["clean"])
    result.info["false_deletions_or_restores"] = sum(false.values())
    result.check(not false, f"false deletions or restores, e.g. {list(false)[:3]}")
    result.check(
        _current_states(dbs["faulty"]) == _current_states(dbs["clean"]),
        "after a fault-free full sync the stores still disagree on some application",
    )
    for db in dbs.values():
        result.check(integrity(db) == "ok", f"{db.name}: integrity_check {integrity(db)}")
    scanner.text(f"{result.name}: logs", logs.text)
    scanner.path(workdir)
    return result
