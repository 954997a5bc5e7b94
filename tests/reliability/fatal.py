"""Drill 5, fatal conditions: a bad API key, an unknown integration, a missing permission. The run
must stop after at most one request per integration, exit non-zero with one line naming the cause,
change nothing stored, and never retry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from stagewatch.kombo.errors import (
    AuthenticationError,
    IntegrationNotFoundError,
    PermissionDeniedError,
)
from stagewatch.simulator import SimulatorTransport, World, serve_in_thread
from tests.reliability import cli
from tests.reliability.badinput import copy_db
from tests.reliability.harness import (
    CaseResult,
    SecretScanner,
    compare,
    describe,
    drill_key,
    fingerprint,
    leftovers,
    sync_in_process,
)

SEED = 73
UNKNOWN_INTEGRATION = "greenhouse:NoSuchIntegration000000000"


@dataclass(frozen=True)
class FatalCase:
    name: str
    cause: str  # what the one error line must name
    error: type[Exception]


CASES = (
    FatalCase("invalid API key", "AUTHENTICATION_INVALID", AuthenticationError),
    FatalCase("unknown integration", "INTEGRATION_NOT_FOUND", IntegrationNotFoundError),
    FatalCase("missing permission", "PERMISSION_MISSING", PermissionDeniedError),
)


def _world(key: str) -> World:
    return World(seed=SEED, applications=200, jobs=6, api_key=key)


def _targets(case: FatalCase, world: World) -> list[str] | None:
    """The integrations the run names; None lets the command take every simulator integration."""
    if case.cause == "AUTHENTICATION_INVALID":
        return None
    if case.cause == "INTEGRATION_NOT_FOUND":
        return [UNKNOWN_INTEGRATION]
    return [world.integration_for("permission-missing")]


def _used_key(case: FatalCase, key: str, wrong_key: str) -> str:
    return wrong_key if case.cause == "AUTHENTICATION_INVALID" else key


@dataclass
class Served:
    """One simulator for the command cases, and a store holding a first sync of it."""

    world: World
    base_url: str
    stop: Callable[[], None]
    history_db: Path


def serve_history(workdir: Path, key: str, server: cli.PrefectServer, scanner: SecretScanner):
    workdir.mkdir(parents=True, exist_ok=True)
    world = _world(key)
    base_url, stop = serve_in_thread(world)
    served = Served(world, base_url, stop, workdir / "history.db")
    first = cli.run(
        cli.sync_args(base_url, served.history_db, "-i", world.normal_integration_id, "--json"),
        cli.sync_env(server, key),
        workdir,
        "history",
    )
    scanner.text("fatal: history run", first.stdout + first.stderr)
    if first.returncode != 0:
        stop()
        raise RuntimeError(f"the fatal drill's history sync failed: {first.stderr[-2000:]}")
    return served


def run_cli_case(
    case: FatalCase,
    served: Served,
    workdir: Path,
    key: str,
    server: cli.PrefectServer,
    scanner: SecretScanner,
) -> CaseResult:
    """`stagewatch sync` on a store that already holds history."""
    result = CaseResult(f"{case.name}, stagewatch sync")
    workdir.mkdir(parents=True, exist_ok=True)
    wrong_key = drill_key()
    scanner.needles.append(wrong_key.encode())  # the key a user configured, even a wrong one
    db = workdir / "store.db"
    copy_db(served.history_db, db)
    before, left_before = fingerprint(db), leftovers(db)
    targets = _targets(case, served.world)
    options = [arg for i in targets or [] for arg in ("-i", i)]
    httpx.post(f"{served.base_url}/_sim/stats/reset", timeout=10)
    done = cli.run(
        cli.sync_args(served.base_url, db, *options),
        cli.sync_env(server, _used_key(case, key, wrong_key)),
        workdir,
        "fatal",
    )
    stats = httpx.get(f"{served.base_url}/_sim/stats", timeout=10).json()
    scanner.text(f"{case.name}: fatal run", done.stdout + done.stderr)
    integrations = len(targets) if targets is not None else len(served.world.integrations)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    result.info = {
        "exit": done.returncode,
        "requests": stats["requests_total"],
        "integrations": integrations,
        "stderr": lines,
    }
    result.check(done.returncode != 0, "the command exited 0")
    result.check(
        len(lines) == 1 and case.cause in lines[0],
        f"stderr is not one line naming {case.cause}: {[line[:160] for line in lines[:5]]}",
    )
    result.check(
        stats["requests_total"] <= integrations,
        f"{stats['requests_total']} Kombo requests for {integrations} integration(s): retried",
    )
    result.add(compare(fingerprint(db), before), "the stored history")
    result.check(leftovers(db) == left_before, f"left behind {leftovers(db)}")
    scanner.path(workdir)
    return result


def run_in_process_case(
    case: FatalCase, workdir: Path, key: str, scanner: SecretScanner
) -> CaseResult:
    """The same through the pipeline in process: the client raises the right error after one
    request, and the store keeps what it had."""
    result = CaseResult(f"{case.name}, in process")
    workdir.mkdir(parents=True, exist_ok=True)
    wrong_key = drill_key()
    scanner.needles.append(wrong_key.encode())
    world = _world(key)
    transport = SimulatorTransport(world)
    db = workdir / f"{case.cause}.db"
    sync_in_process(db, transport, world.normal_integration_id, key)
    before = fingerprint(db)
    targets = _targets(case, world) or list(world.integrations)
    requests = 0
    for integration_id in targets:
        transport.simulator.reset_stats()
        synced = sync_in_process(db, transport, integration_id, _used_key(case, key, wrong_key))
        requests = transport.stats()["requests_total"]
        scanner.text(f"{case.name}: outcome", synced.outcome.model_dump_json())
        if synced.error is not None:
            scanner.text(f"{case.name}: error", describe(synced.error))
        result.check(
            isinstance(synced.error, case.error),
            f"{integration_id}: ended with {type(synced.error).__name__}, not {case.error.__name__}",
        )
        result.check(
            case.cause in (synced.outcome.message or ""),
            f"{integration_id}: message {synced.outcome.message!r} does not name {case.cause}",
        )
        result.check(requests == 1, f"{integration_id}: {requests} requests, expected 1")
    result.add(compare(fingerprint(db), before), "the stored history")
    left = leftovers(db)
    result.check(not any(left.values()), f"left behind {left}")
    scanner.path(workdir)
    return result
