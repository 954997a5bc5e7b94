"""Drill 2, crash recovery: `stagewatch sync` is SIGKILLed mid-listing, between staging and commit,
inside the commit and after it; the store must be exactly as before the run (or exactly as after it),
`PRAGMA integrity_check` ok, and a normal rerun must converge to the store an uninterrupted run left.

Mid-listing and after-commit kills come from outside at a random moment, timed from what the store
shows (staging rows appearing, the run row turning 'succeeded'); kills at the commit use the store's
`STAGEWATCH_TEST_CRASH_AT` hook, where the process SIGKILLs itself at a named point.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from stagewatch import report
from stagewatch.simulator import World, serve_in_thread
from stagewatch.store import CRASH_ENV
from tests.reliability import cli
from tests.reliability.badinput import copy_db
from tests.reliability.harness import (
    CaseResult,
    SecretScanner,
    compare,
    fingerprint,
    integrity,
    leftovers,
)

SEED = 41
APPLICATIONS = 1_000
JOBS = 30
LATENCY_MS = 10  # per request, so a listing lasts long enough to be killed in the middle
PAGE_SIZE = {"incremental": 5, "full": 40}
POLL_SECONDS = 0.02
HOOKS = ("commit:start", "commit:after_diff", "commit:before_commit")
MID_LISTING = "mid-listing"
AFTER_COMMIT = "after-commit"


def plan(cases: int) -> list[tuple[str, str]]:
    """(moment, mode) per case: a third of the kills mid-listing, the rest spread over the hooks
    and the window after the commit; blocks of six alternate incremental and full runs, so every
    moment is drilled in both modes."""
    moments = (MID_LISTING, *HOOKS, AFTER_COMMIT, MID_LISTING)
    return [
        (moments[i % len(moments)], "full" if (i // len(moments)) % 2 else "incremental")
        for i in range(cases)
    ]


@dataclass
class Stage:
    """The shared setup: the simulator, the store before the run, and each mode's reference."""

    base_url: str
    stop: Callable[[], None]
    integration_id: str
    base_db: Path
    references: dict[str, Path]
    reference_seen: dict[str, int]
    listing_seconds: dict[str, float]


def _query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _latest_run(db: Path, after: int) -> tuple[int, str, int] | None:
    """(id, status, applications staged so far) of the newest run after run `after`, if any.

    The store notes every listed application in `staged_seen` (older schemas: one row each in
    `staged_applications`), so the count says how far the listing got.
    """
    tables = {row[0] for row in _query(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    seen = "staged_seen" if "staged_seen" in tables else "staged_applications"
    rows = _query(
        db,
        f"SELECT id, status, (SELECT count(DISTINCT application_id) FROM {seen} "
        "WHERE run_id = r.id) FROM sync_runs AS r WHERE id > ? ORDER BY id DESC LIMIT 1",
        (after,),
    )
    return rows[0] if rows else None


def _max_run(db: Path) -> int:
    return _query(db, "SELECT coalesce(max(id), 0) FROM sync_runs")[0][0]


def _wait_for(
    db: Path, after: int, predicate: Callable[[tuple[int, str, int]], bool], process, timeout=120
):
    """Poll the store until the new run matches `predicate`; None if the process ended first."""

    def matching() -> tuple[int, str, int] | None:
        run = _latest_run(db, after)
        return run if run is not None and predicate(run) else None

    return cli.wait_until(process, matching, timeout, every=POLL_SECONDS)


def _args(stage: Stage, db: Path, mode: str) -> list[str]:
    options = ["-i", stage.integration_id, "--page-size", str(PAGE_SIZE[mode]), "--json"]
    if mode == "full":
        options.append("--full")
    return cli.sync_args(stage.base_url, db, *options)


def prepare(workdir: Path, key: str, server: cli.PrefectServer, scanner: SecretScanner) -> Stage:
    """Serve a world, sync it once (the store before every case), advance it a day, then time
    one uninterrupted run per mode (the references)."""
    world = World(
        seed=SEED, applications=APPLICATIONS, jobs=JOBS, api_key=key, scenarios=("normal",)
    )
    base_url, stop = serve_in_thread(world, latency_ms=LATENCY_MS)
    integration_id = world.normal_integration_id
    stage = Stage(base_url, stop, integration_id, workdir / "base.db", {}, {}, {})
    env = cli.sync_env(server, key)
    first = cli.run(_args(stage, stage.base_db, "incremental"), env, workdir, "base")
    scanner.text("crash base run", first.stdout + first.stderr)
    if first.returncode != 0:
        stop()
        raise RuntimeError(f"the crash drill's first sync failed: {first.stderr[-2000:]}")
    world.advance(hours=24)
    for mode in PAGE_SIZE:
        db = workdir / f"reference-{mode}.db"
        copy_db(stage.base_db, db)
        before = _max_run(db)
        started = time.monotonic()
        process = cli.spawn(_args(stage, db, mode), env, workdir, f"reference-{mode}")
        staging = _wait_for(db, before, lambda run: run[2] > 0, process)
        listing_from = time.monotonic()
        committed = _wait_for(db, before, lambda run: run[1] != "running", process)
        listing_to = time.monotonic()
        done = cli.finish(process, workdir, f"reference-{mode}", started)
        scanner.text(f"crash reference {mode}", done.stdout + done.stderr)
        if done.returncode != 0 or staging is None or committed is None:
            stop()
            raise RuntimeError(f"the {mode} reference run failed: {done.stderr[-2000:]}")
        stage.references[mode] = db
        stage.listing_seconds[mode] = listing_to - listing_from
        stage.reference_seen[mode] = _query(
            db, "SELECT applications_seen FROM sync_runs WHERE id = ?", (committed[0],)
        )[0][0]
    return stage


def run_crash_case(
    number: int,
    moment: str,
    mode: str,
    stage: Stage,
    workdir: Path,
    key: str,
    server: cli.PrefectServer,
    scanner: SecretScanner,
    rng: random.Random,
) -> CaseResult:
    name = f"crash-{number:02d}"
    result = CaseResult(f"{name} {mode} {moment}")
    db = workdir / f"{name}.db"
    copy_db(stage.base_db, db)
    before_runs = _max_run(db)
    extra = {CRASH_ENV: moment} if moment in HOOKS else {}
    env = cli.sync_env(server, key, **extra)
    started = time.monotonic()
    process = cli.spawn(_args(stage, db, mode), env, workdir, f"{name}-killed")
    if moment == MID_LISTING:
        # A random point of the listing, by how much of it the store has seen (not by time: the
        # same listing takes twice as long on a busy machine).
        target = max(1, round(rng.uniform(0.05, 0.85) * stage.reference_seen[mode]))
        run = _wait_for(db, before_runs, lambda r: r[2] >= target, process)
        result.check(run is not None, f"the run ended before it had listed {target} applications")
    elif moment == AFTER_COMMIT:
        run = _wait_for(db, before_runs, lambda r: r[1] == "succeeded", process)
        result.check(run is not None, "the run ended before its commit was seen")
    if moment not in HOOKS:
        cli.kill_hard(process)
    killed = cli.finish(process, workdir, f"{name}-killed", started)
    scanner.text(f"{name} killed run", killed.stdout + killed.stderr)
    result.check(killed.returncode == -9, f"the run exited {killed.returncode}, not by SIGKILL")
    status, staged = _latest_run(db, before_runs)[1:]
    observed = _observed_moment(status, staged, stage.reference_seen[mode])
    if moment in HOOKS:
        result.check(
            observed == "between staging and commit",
            f"the {moment} hook fired {observed}, not once every page was staged",
        )
        observed = moment
    result.info = {"mode": mode, "moment": moment, "observed": observed, "staged": staged}
    unpublished = _unpublished(db)
    result.check(integrity(db) == "ok", f"after the kill: integrity_check {integrity(db)}")
    expected_after_kill = stage.references[mode] if status == "succeeded" else stage.base_db
    result.add(
        compare(fingerprint(db), fingerprint(expected_after_kill)),
        "after the kill (must be all or nothing)",
    )
    rerun = cli.run(_args(stage, db, mode), cli.sync_env(server, key), workdir, f"{name}-rerun")
    scanner.text(f"{name} rerun", rerun.stdout + rerun.stderr)
    result.check(
        rerun.returncode == 0, f"the rerun exited {rerun.returncode}: {rerun.stderr[-300:]}"
    )
    _check_published(result, db, unpublished, stage, server)
    result.add(compare(fingerprint(db), fingerprint(stage.references[mode])), "after the rerun")
    result.check(integrity(db) == "ok", f"after the rerun: integrity_check {integrity(db)}")
    left = leftovers(db)
    result.check(not any(left.values()), f"the rerun left behind {left}")
    killed_status, killed_events = _query(
        db, "SELECT status, events FROM sync_runs WHERE id = ?", (before_runs + 1,)
    )[0]
    wanted = "succeeded" if status == "succeeded" else "abandoned"
    result.check(killed_status == wanted, f"the killed run is {killed_status}, expected {wanted}")
    if status == "succeeded":
        result.info["killed before publishing"] = killed_run_unpublished = any(
            run_id == before_runs + 1 for run_id, _ in unpublished
        )
        if killed_run_unpublished:
            result.info["changes committed, then killed before publishing"] = killed_events
    result.info["seconds"] = round(time.monotonic() - started, 1)
    return result


def _unpublished(db: Path) -> list[tuple[int, int]]:
    """(run id, changes) of the committed runs whose changes never went out to Prefect."""
    return _query(
        db,
        "SELECT id, events FROM sync_runs WHERE status = 'succeeded' AND published_at IS NULL "
        "ORDER BY id",
    )


def _latest_artifacts(server: cli.PrefectServer, key: str, limit: int) -> list[dict]:
    response = httpx.post(
        f"{server.api_url}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": limit},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def _check_published(
    result: CaseResult,
    db: Path,
    unpublished: list[tuple[int, int]],
    stage: Stage,
    server: cli.PrefectServer,
) -> None:
    """After the rerun every committed run is published: a run the kill left unpublished (killed
    between its commit and its publish) was published late by the rerun, whose own artifact
    comes after the late one."""
    left = _unpublished(db)
    result.check(not left, f"committed runs still unpublished after the rerun: {left}")
    rerun_id = _max_run(db)
    notes = dict(_query(db, "SELECT id, publish_note FROM sync_runs WHERE status = 'succeeded'"))
    late = [(run_id, changes) for run_id, changes in unpublished if changes]
    for run_id, changes in unpublished:
        want = f"published late by run {rerun_id}" if changes else "no changes"
        result.check(
            (notes.get(run_id) or "").startswith(want),
            f"run {run_id} ({changes} changes) is noted {notes.get(run_id)!r}, not {want!r}",
        )
    key = report.artifact_key(stage.integration_id)
    descriptions = [a["description"] for a in _latest_artifacts(server, key, len(late) + 1)]
    wanted = [
        f"Stage changes of {stage.integration_id}, run {run_id}, published late by run {rerun_id}"
        for run_id, _ in reversed(late)
    ]
    result.check(
        descriptions[1:] == wanted,
        f"the rerun's late artifacts are {descriptions[1:]}, expected {wanted}",
    )
    result.info["changes the rerun published late"] = sum(changes for _, changes in late)


def _observed_moment(status: str, staged: int, listed: int) -> str:
    """Where the kill landed, from what the store holds."""
    if status == "succeeded":
        return "after the commit"
    if status != "running":
        return f"run {status}"
    if staged == 0:
        return "before staging applications"
    if staged < listed:
        return "mid-listing"
    return "between staging and commit"


def coverage_problems(cases: list[CaseResult]) -> list[str]:
    """The random kills must have landed where they aimed, often enough to count."""
    hits = Counter(case.info.get("observed") for case in cases)
    problems = []
    if hits["mid-listing"] < max(1, sum(c.info.get("moment") == MID_LISTING for c in cases) // 2):
        problems.append(f"too few kills landed mid-listing: {dict(hits)}")
    if not hits["after the commit"]:
        problems.append(f"no kill landed after the commit: {dict(hits)}")
    return problems
