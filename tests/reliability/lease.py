"""Drill 7, cross-host lease takeover: a sync started under another host name (a new UTS namespace,
`unshare --uts`, which needs root) is SIGKILLed mid-listing. Its pid is dead here, but its lock names
another host, so no run here may take the lock over at once: the next sync on this host must wait
for the lease (a short one, through STAGEWATCH_LOCK_LEASE_SECONDS), take it over and record the
changes, none lost and none twice, with the dead run marked abandoned.

`make reliability` runs it through `stagewatch sync` on both sides; `make test` runs it with the
Prefect-less worker (`tests/reliability/worker.py`) and `sync_in_process`.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from stagewatch.store import LockedError, Store
from stagewatch.store.lease import RENEWALS_PER_LEASE
from stagewatch.timeutil import parse_ts, utcnow
from tests.reliability import cli, crash
from tests.reliability.badinput import copy_db
from tests.reliability.harness import (
    CaseResult,
    SecretScanner,
    compare,
    connect_ro,
    fingerprint,
    integrity,
    leftovers,
)

OTHER_HOST = "other-host"
LEASE_ENV = "STAGEWATCH_LOCK_LEASE_SECONDS"
LEASE_SECONDS = 2
# `stagewatch sync` takes seconds to start: a longer lease still has time left when the rerun
# asks for the lock, so the rerun is seen waiting for it.
CLI_LEASE_SECONDS = 5
POLL_SECONDS = 0.02


def unshare_problem() -> str | None:
    """Why this process cannot run a command under another host name; None when it can."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = ["unshare", "--uts", "sh", "-c", f"hostname {OTHER_HOST} && hostname"]
    done = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0 or done.stdout.strip() != OTHER_HOST:
        why = done.stderr.strip() or f"exit {done.returncode}"
        return f"unshare --uts is not permitted here ({why}); the drill needs root"
    return None


def under_other_host(command: list[str]) -> list[str]:
    """`command` run with the host name OTHER_HOST; it keeps the pid of the process started (unshare
    and sh both exec), so killing that process kills it."""
    script = f'hostname {OTHER_HOST} && exec "$@"'
    return ["unshare", "--uts", "sh", "-c", script, "sh", *command]


@dataclass(frozen=True)
class Lock:
    run_id: int
    pid: int
    hostname: str
    acquired_at: str
    renewed_at: str
    lease_expires_at: str


def _lock(db: Path) -> Lock | None:
    conn = connect_ro(db)
    try:
        row = conn.execute(
            "SELECT run_id, pid, hostname, acquired_at, renewed_at, lease_expires_at FROM run_locks"
        ).fetchone()
    finally:
        conn.close()
    return Lock(*row) if row else None


def _staged(db: Path, run_id: int) -> int:
    conn = connect_ro(db)
    try:
        query = "SELECT count(DISTINCT application_id) FROM staged_seen WHERE run_id = ?"
        return conn.execute(query, (run_id,)).fetchone()[0]
    finally:
        conn.close()


def _runs(db: Path, after: int) -> list[tuple]:
    conn = connect_ro(db)
    try:
        return conn.execute(
            "SELECT id, status, hostname, started_at, error FROM sync_runs WHERE id > ? "
            "ORDER BY id",
            (after,),
        ).fetchall()
    finally:
        conn.close()


def _max_run(db: Path) -> int:
    conn = connect_ro(db)
    try:
        return conn.execute("SELECT coalesce(max(id), 0) FROM sync_runs").fetchone()[0]
    finally:
        conn.close()


def kill_mid_listing(
    process: subprocess.Popen, db: Path, target: int, renewed_after: float
) -> Lock | None:
    """SIGKILL `process` once its run has staged `target` applications and renewed its lease
    `renewed_after` seconds or more after taking it (a renewal by its keeper, not the flow's
    resume_run just after begin_run); returns the lock it left (None when it ended first)."""

    def ready() -> Lock | None:
        lock = _lock(db)
        if lock is None:
            return None
        renewed = parse_ts(lock.renewed_at) - parse_ts(lock.acquired_at)
        if renewed.total_seconds() < renewed_after:
            return None
        return lock if _staged(db, lock.run_id) >= target else None

    if cli.wait_until(process, ready, timeout=120, every=POLL_SECONDS) is None:
        return None
    cli.kill_hard(process)
    return _lock(db)


def _refused_before_expiry(db: Path, integration_id: str, lock: Lock) -> str | None:
    """What a run here is told before the lease runs out (its clock held just short of the
    expiry, so the answer does not depend on how fast this machine got here): a refusal naming
    the other host, though that host's pid is dead here. None when it was not refused."""
    last_moment = parse_ts(lock.lease_expires_at) - timedelta(milliseconds=1)
    with Store(db, clock=lambda: min(utcnow(), last_moment)) as store:
        try:
            store.begin_run(integration_id, "full")
        except LockedError as exc:
            return str(exc)
    return None


def run_case(
    name: str,
    db: Path,
    integration_id: str,
    reference: Path,
    spawn_killed: Callable[[], subprocess.Popen],
    rerun: Callable[[], str | None],
    target: int,
    lease_seconds: float,
) -> CaseResult:
    """Kill the run `spawn_killed` starts under OTHER_HOST with a lease of `lease_seconds` once it
    staged `target` applications, then `rerun` here (it returns a problem, or None) and check it
    waited, took over and left the store `reference` holds."""
    result = CaseResult(name)
    before = _max_run(db)
    renewed_after = lease_seconds / RENEWALS_PER_LEASE / 2
    lock = kill_mid_listing(spawn_killed(), db, target, renewed_after)
    if lock is None:
        result.problems.append(f"the run under {OTHER_HOST} ended before it staged {target}")
        return result
    result.check(lock.hostname == OTHER_HOST, f"the killed run's lock names {lock.hostname}")
    refusal = _refused_before_expiry(db, integration_id, lock)
    result.check(
        refusal is not None and f"on {OTHER_HOST}" in refusal,
        f"before its lease ran out, the lock was not refused by name: {refusal!r}",
    )
    started, launched = time.monotonic(), utcnow()
    problem = rerun()
    seconds = time.monotonic() - started
    result.check(problem is None, f"the rerun failed: {problem}")
    _check_takeover(result, _runs(db, before), lock, launched)
    result.add(compare(fingerprint(db), fingerprint(reference)), "after the takeover")
    result.check(integrity(db) == "ok", f"integrity_check {integrity(db)}")
    left = leftovers(db)
    result.check(not any(left.values()), f"left behind {left}")
    result.info |= {
        "staged when killed": _staged_at_kill(db, lock),
        "lease renewed for (s)": _seconds(parse_ts(lock.renewed_at) - parse_ts(lock.acquired_at)),
        "rerun seconds": round(seconds, 1),
    }
    return result


def _check_takeover(result: CaseResult, runs: list[tuple], lock: Lock, launched: datetime) -> None:
    """The killed run is abandoned, and the rerun here took its lock only once the lease ran out."""
    if len(runs) != 2:
        result.problems.append(f"runs after the kill: {runs}")
        return
    (killed, status, host, _, error), (new, new_status, new_host, started_at, _) = runs
    result.check(
        (killed, status, host) == (lock.run_id, "abandoned", OTHER_HOST),
        f"the killed run is {killed} {status} on {host}",
    )
    result.check(
        (new_status, new_host) == ("succeeded", socket.gethostname()),
        f"the rerun is {new_status} on {new_host}",
    )
    result.check(
        started_at >= lock.lease_expires_at,
        f"the rerun took the lock at {started_at}, before the lease ran out at "
        f"{lock.lease_expires_at}",
    )
    taken = f"(expired {lock.lease_expires_at}); lock taken over by run {new} "
    result.check(taken in (error or ""), f"the killed run's error is {error!r}")
    expires = parse_ts(lock.lease_expires_at)
    result.info["lease left when the rerun began (s)"] = _seconds(expires - launched)
    result.info["lock taken after the lease ran out (s)"] = _seconds(parse_ts(started_at) - expires)


def _seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 2)


def _staged_at_kill(db: Path, lock: Lock) -> int | None:
    conn = connect_ro(db)
    try:
        row = conn.execute(
            "SELECT staged_records FROM sync_runs WHERE id = ?", (lock.run_id,)
        ).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def run_cli_case(
    mode: str,
    stage: crash.Stage,
    workdir: Path,
    key: str,
    server: cli.PrefectServer,
    scanner: SecretScanner,
    rng: random.Random,
) -> CaseResult:
    """`stagewatch sync` under OTHER_HOST with a short lease, killed mid-listing; then a plain
    `stagewatch sync` here, which waits for the lease (the flow waits for a lock) and takes over."""
    name = f"lease-{mode}"
    db = workdir / f"{name}.db"
    copy_db(stage.base_db, db)
    args = crash._args(stage, db, mode)
    target = max(1, round(rng.uniform(0.1, 0.6) * stage.reference_seen[mode]))

    def spawn() -> subprocess.Popen:
        env = cli.sync_env(server, key, **{LEASE_ENV: str(CLI_LEASE_SECONDS)})
        return cli.spawn(under_other_host(args), env, workdir, f"{name}-killed")

    def rerun() -> str | None:
        done = cli.run(args, cli.sync_env(server, key), workdir, f"{name}-rerun")
        scanner.text(f"{name} rerun", done.stdout + done.stderr)
        return None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-300:]}"

    result = run_case(
        f"{name} cross-host takeover", db, stage.integration_id, stage.references[mode],
        spawn, rerun, target, CLI_LEASE_SECONDS,
    )  # fmt: skip
    scanner.text(f"{name} killed", (workdir / f"{name}-killed.err").read_text(errors="replace"))
    scanner.path(db)
    return result
