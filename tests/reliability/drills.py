"""`make reliability`: every drill, its progress, and the figures table; exit 1 if any drill fails.

    python -m tests.reliability.drills [--quick] [--keep] [--only NAME ...]

Runs in a fresh temporary directory with one Prefect server on loopback for the `stagewatch sync`
commands; `--keep` keeps the directory (it is kept anyway when a drill fails).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from stagewatch.simulator.faults import DELIVERY_KINDS
from tests.reliability import (
    badinput,
    cli,
    concurrency,
    crash,
    fatal,
    faults,
    lease,
    postgres,
    secrets_sweep,
)
from tests.reliability.harness import CaseResult, DrillResult, SecretScanner, drill_key

STORM_SEEDS = 24
CLI_STORM_SEEDS = 2
CRASHES = 30
COLUMNS = ("drill", "cases run", "cases passed", "events lost", "events duplicated", "secret hits")


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    def case(self, drill: str, number: int, total: int, case: CaseResult, seconds: float) -> None:
        verdict = "ok  " if case.passed else "FAIL"
        self(f"{drill} {number}/{total} {verdict} {case.name} ({seconds:.1f}s)")
        for problem in case.problems[:5]:
            print(f"{'':10}- {problem[:400]}", flush=True)


def _cases(
    drill: str, runs: list[Callable[[], CaseResult]], progress: Progress
) -> list[CaseResult]:
    results = []
    for number, run in enumerate(runs, 1):
        started = time.monotonic()
        case = run()
        results.append(case)
        progress.case(drill, number, len(runs), case, time.monotonic() - started)
    return results


def drill_bad_input(work: Path, key: str, progress: Progress, quick: bool) -> DrillResult:
    scanner = SecretScanner(key)
    base = work / "baseline.db"
    badinput.make_baseline(base, key)
    files = badinput.case_files()
    runs = [lambda f=f: badinput.run_case(f, work, key, scanner, base) for f in files]
    return DrillResult("4 bad input corpus", _cases("bad input", runs, progress), scanner)


def drill_fatal(
    work: Path, key: str, server: cli.PrefectServer, progress: Progress, quick: bool
) -> DrillResult:
    scanner = SecretScanner(key)
    runs = [
        lambda c=c: fatal.run_in_process_case(c, work / "in-process", key, scanner)
        for c in fatal.CASES
    ]
    served = fatal.serve_history(work / "cli", key, server, scanner)
    runs += [
        lambda c=c, n=n: fatal.run_cli_case(c, served, work / f"cli-{n}", key, server, scanner)
        for n, c in enumerate(fatal.CASES)
    ]
    try:
        cases = _cases("fatal", runs, progress)
    finally:
        served.stop()
    return DrillResult("5 fatal conditions", cases, scanner)


def drill_fault_storm(
    work: Path, key: str, server: cli.PrefectServer, progress: Progress, quick: bool
) -> DrillResult:
    scanner = SecretScanner(key)
    cases = faults.storm_cases(8 if quick else STORM_SEEDS)
    runs = [
        lambda c=c: faults.run_storm_case(c, work / f"seed-{c.seed}", key, scanner) for c in cases
    ]
    # Over loopback: every kind mixed, then the kinds that only real HTTP makes real (a server
    # that answers late, a connection cut mid-body, half a body).
    cli_cases = [
        faults.StormCase(seed=1001, kinds=faults.FAULT_KINDS),
        faults.StormCase(seed=1002, kinds=DELIVERY_KINDS),
    ][: 1 if quick else CLI_STORM_SEEDS]
    runs += [
        lambda c=c: faults.run_cli_storm_case(c, work / f"cli-{c.seed}", key, server, scanner)
        for c in cli_cases
    ]
    # Full listings that skip records and serve unparseable ones: nothing falsely deleted.
    listing_cases = [
        faults.StormCase(seed=2001 + n, kinds=faults.LISTING_FAULT_KINDS)
        for n in range(2 if quick else 6)
    ]
    runs += [
        lambda c=c: faults.run_listing_fault_case(c, work / f"listing-{c.seed}", key, scanner)
        for c in listing_cases
    ]
    result = DrillResult("1 fault storm", _cases("fault storm", runs, progress), scanner)
    injected: dict[str, int] = {}
    for case in result.cases:
        for kind, count in case.info.get("faults", {}).items():
            injected[kind] = injected.get(kind, 0) + count
    missing = sorted(set(faults.FAULT_KINDS) - set(injected))
    if missing:
        result.problems.append(f"fault kinds never injected: {missing}")
    progress(f"fault storm: faults injected per kind {dict(sorted(injected.items()))}")
    return result


def drill_concurrency(
    work: Path, key: str, server: cli.PrefectServer, progress: Progress, quick: bool
) -> DrillResult:
    scanner = SecretScanner(key)
    runs: list[Callable[[], CaseResult]] = [
        lambda: concurrency.lock_refusal_case(work / "in-process", key, scanner),
        lambda: concurrency.threads_case(work / "in-process", key, scanner, same_integration=True),
        lambda: concurrency.threads_case(work / "in-process", key, scanner, same_integration=False),
    ]
    (work / "in-process").mkdir(parents=True, exist_ok=True)
    setup = concurrency.prepare(work / "cli", key, server, scanner)
    normal, other = setup.integrations[0], setup.integrations[1]
    pairs = [
        ("same-integration-together", ([normal], [normal]), False),
        ("same-two-integrations-together", ([normal, other], [normal, other]), False),
        ("same-integration-second-mid-listing", ([normal], [normal]), True),
        ("two-integrations-one-database", ([normal], [other]), False),
    ]
    runs += [
        lambda name=name, selections=selections, later=later: concurrency.run_pair_case(
            name, setup, selections, later, work / "cli", key, server, scanner
        )
        for name, selections, later in (pairs[:1] if quick else pairs)
    ]
    try:
        cases = _cases("concurrency", runs, progress)
    finally:
        setup.stop()
    return DrillResult("3 concurrency", cases, scanner)


def drill_crash(
    work: Path, key: str, server: cli.PrefectServer, progress: Progress, quick: bool
) -> DrillResult:
    scanner = SecretScanner(key)
    rng = random.Random(2026)
    stage = crash.prepare(work, key, server, scanner)
    progress(
        "crash: listings take "
        + ", ".join(f"{m} {s:.1f}s" for m, s in stage.listing_seconds.items())
    )
    plan = crash.plan(6 if quick else CRASHES)
    runs = [
        lambda n=n, moment=moment, mode=mode: crash.run_crash_case(
            n, moment, mode, stage, work, key, server, scanner, rng
        )
        for n, (moment, mode) in enumerate(plan)
    ]
    try:
        cases = _cases("crash", runs, progress)
    finally:
        stage.stop()
    result = DrillResult("2 crash recovery", cases, scanner)
    result.problems += crash.coverage_problems(cases)
    landed: dict[str, int] = {}
    for case in cases:
        landed[case.info.get("observed", "?")] = landed.get(case.info.get("observed", "?"), 0) + 1
    progress(f"crash: kills landed {landed}")
    between = [case.info for case in cases if case.info.get("killed before publishing")]
    after = sum(1 for case in cases if case.info.get("killed before publishing") is False)
    committed = sum(i["changes committed, then killed before publishing"] for i in between)
    published = sum(i.get("changes the rerun published late", 0) for i in between)
    progress(
        f"crash: {len(between)} kills between commit and publish left {committed} committed "
        f"changes unpublished, the reruns published {published} of them late ({after} more "
        "kills landed after the publish)"
    )
    if published != committed:
        result.problems.append(
            f"the reruns published {published} of the {committed} changes that killed runs "
            "committed but never published"
        )
    scanner.path(work)
    return result


def drill_lease(
    work: Path, key: str, server: cli.PrefectServer, progress: Progress, quick: bool
) -> DrillResult:
    scanner = SecretScanner(key)
    problem = lease.unshare_problem()
    if problem:
        result = DrillResult("7 cross-host lease takeover", [], scanner)
        result.problems.append(problem)
        return result
    rng = random.Random(2027)
    stage = crash.prepare(work, key, server, scanner)
    listings = [f"{m} {s:.1f}s" for m, s in stage.listing_seconds.items()]
    progress(f"lease: listings take {', '.join(listings)}")
    modes = ["incremental"] if quick else ["incremental", "full"]
    runs = [
        lambda mode=mode: lease.run_cli_case(mode, stage, work, key, server, scanner, rng)
        for mode in modes
    ]
    try:
        cases = _cases("lease", runs, progress)
    finally:
        stage.stop()
    for case in cases:
        progress(f"lease: {case.name}: {case.info}")
    return DrillResult("7 cross-host lease takeover", cases, scanner)


def drill_postgres(work: Path, key: str, progress: Progress, quick: bool) -> DrillResult | None:
    """Fault storms and thread races with the store on PostgreSQL; None (said loudly) when no
    server answers, unless STAGEWATCH_TEST_REQUIRE_POSTGRES makes that a failure."""
    scanner = SecretScanner(key)
    reason = postgres.unavailable()
    if reason is not None:
        progress(f"!!! POSTGRESQL DRILLS SKIPPED: {reason} !!!")
        if not os.environ.get("STAGEWATCH_TEST_REQUIRE_POSTGRES"):
            return None
        result = DrillResult("8 postgres", [], scanner)
        result.problems.append(reason)
        return result
    runs = postgres.cases(work, key, scanner, 6 if quick else POSTGRES_STORMS)
    return DrillResult("8 postgres", _cases("postgres", runs, progress), scanner)


def drill_secrets_sweep(
    work: Path, key: str, server: cli.PrefectServer, since: str, progress: Progress
) -> DrillResult:
    scanner = SecretScanner(key)
    drill_dirs = sorted(p for p in work.iterdir() if p.is_dir() and p != server.home)
    cases = secrets_sweep.sweep(server.api_url, since, [server.home, *drill_dirs], scanner)
    for number, case in enumerate(cases, 1):
        progress.case("secrets", number, len(cases), case, 0.0)
    return DrillResult("6 secrets (final sweep)", cases, scanner)


def table(results: list[DrillResult]) -> str:
    """The figures, one row per drill in the issue's order (drill names start with its number)."""
    rows = sorted((r.row() for r in results), key=lambda row: row["drill"])
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| --- | " + " | ".join("---:" for _ in COLUMNS[1:]) + " |",
    ]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


DRILLS = ("bad-input", "fatal", "fault-storm", "concurrency", "crash", "lease", "postgres")
POSTGRES_STORMS = 12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer cases, for trying changes.")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    parser.add_argument("--only", nargs="+", choices=DRILLS, help="Run only these drills.")
    args = parser.parse_args(argv)
    chosen = args.only or list(DRILLS)
    progress = Progress()
    key = drill_key()
    work = Path(tempfile.mkdtemp(prefix="stagewatch-drills-"))
    since = datetime.now(UTC).isoformat()
    server = cli.PrefectServer(work / "prefect-home")
    results: list[DrillResult] = []
    progress(f"work directory {work}; starting a Prefect server on loopback")
    try:
        progress(f"Prefect server healthy after {server.start():.1f}s at {server.api_url}")
        for name in chosen:
            started = time.monotonic()
            directory = work / name
            directory.mkdir()
            if name == "bad-input":
                result = drill_bad_input(directory, key, progress, args.quick)
            elif name == "fatal":
                result = drill_fatal(directory, key, server, progress, args.quick)
            elif name == "fault-storm":
                result = drill_fault_storm(directory, key, server, progress, args.quick)
            elif name == "concurrency":
                result = drill_concurrency(directory, key, server, progress, args.quick)
            elif name == "crash":
                result = drill_crash(directory, key, server, progress, args.quick)
            elif name == "postgres":
                result = drill_postgres(directory, key, progress, args.quick)
                if result is None:
                    continue
            else:
                result = drill_lease(directory, key, server, progress, args.quick)
            result.seconds = time.monotonic() - started
            results.append(result)
            verdict = "passed" if result.passed else "FAILED"
            progress(f"{result.name}: {verdict} in {result.seconds:.0f}s")
            for problem in result.problems:
                progress(f"  - {problem}")
        results.append(drill_secrets_sweep(work, key, server, since, progress))
    finally:
        server.stop()
    failed = [r for r in results if not r.passed]
    print()
    print(table(results))
    print()
    for result in results:
        for where in result.scanner.where:
            print(f"secret found ({result.name}): {where}")
        for case in result.cases:
            if not case.passed:
                print(f"FAILED {result.name} / {case.name}:")
                for problem in case.problems:
                    print(f"    - {problem[:600]}")
    figures = {"table": [r.row() for r in results], "seconds": round(progress_seconds(progress))}
    (work / "figures.json").write_text(json.dumps(figures, indent=1))
    print(
        f"{len(results) - len(failed)} of {len(results)} drills passed in "
        f"{progress_seconds(progress):.0f}s"
    )
    if failed or args.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work)
    return 1 if failed else 0


def progress_seconds(progress: Progress) -> float:
    return time.monotonic() - progress.started


if __name__ == "__main__":
    sys.exit(main())
