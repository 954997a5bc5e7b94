"""`stagewatch stack up|down` (`make stack`): Prefect's server on PostgreSQL, a process work pool with
its workers, the fan-out deployments of `deployments/stack.yaml` and the webhook receiver, on one
machine. Each process runs in its own process group; `down` stops them from the pid file in the
state directory.

Redis is not started: Prefect's self-hosting guide asks for it (as the messaging broker) only when
several server instances share one database; this stack runs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from stagewatch.errors import StagewatchError

PROJECT_DIR = Path(__file__).resolve().parents[1]
STACK_FILE = "deployments/stack.yaml"
STATE_FILE = "stack.json"
DEFAULT_STATE_DIR = Path(".stack")
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432"
DEFAULT_PREFECT_DB = "stagewatch_prefect"
DEFAULT_STORE_DB = "stagewatch"
POOL = "stagewatch-stack"
SERVER_START_TIMEOUT = 120.0
WORKERS_ONLINE_TIMEOUT = 60.0
STOP_TIMEOUT = 45.0
DAY = 24 * 3600
# Bounded by age: events for 7 days (heartbeats 1), flow runs with their logs and artifacts for 7
# days (Prefect keeps flow runs forever by default); the history itself lives in the store.
RETENTION = {
    "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": "P7D",  # a plain timedelta: ISO 8601, not seconds
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(7 * DAY),
    "PREFECT_SERVER_SERVICES_DB_VACUUM_EVENT_RETENTION_OVERRIDES": json.dumps(
        {"prefect.flow-run.heartbeat": DAY}
    ),
}
# SQLAlchemy's default pool (5 + 10 overflow) ran out under two workers' task-run traffic; this
# stays well inside PostgreSQL's default 100 connections.
SERVER_POOL = {
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "10",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "20",
}
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class StackConfig:
    """Everything `up` starts. The store is one setting (`STAGEWATCH_DB` for every process): by
    default the database `store_db` beside Prefect's on the same PostgreSQL server."""

    state_dir: Path = DEFAULT_STATE_DIR
    host: str = "127.0.0.1"
    port: int = 4200
    webhook_port: int = 8780
    postgres: str = DEFAULT_PG
    prefect_db: str = DEFAULT_PREFECT_DB
    store_db: str = DEFAULT_STORE_DB
    store: str | None = None
    workers: int = 2
    worker_limit: int = 4
    poll_seconds: float = 5.0
    account_limit: int = 8
    integration_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        for name in (self.prefect_db, self.store_db):
            if not _DB_NAME.match(name):
                raise StagewatchError(
                    f"database name {name!r} must be lower-case letters, digits and underscores"
                )
        if not self.postgres.startswith("postgresql+asyncpg://"):
            raise StagewatchError("the PostgreSQL URL must start with postgresql+asyncpg://")
        if self.workers < 1 or self.worker_limit < 2:
            raise StagewatchError("a stack needs at least one worker running two flow runs")

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def database_url(self) -> str:
        return f"{self.postgres.rstrip('/')}/{self.prefect_db}"

    @property
    def store_url(self) -> str:
        """`--store` as given, else the database `store_db` on the same PostgreSQL server."""
        server = self.postgres.replace("postgresql+asyncpg://", "postgresql://", 1).rstrip("/")
        return self.store or f"{server}/{self.store_db}"


# -- PostgreSQL ---------------------------------------------------------------------------------


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _ensure_database(postgres: str, name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(_asyncpg_dsn(f"{postgres.rstrip('/')}/postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    db = await asyncpg.connect(_asyncpg_dsn(f"{postgres.rstrip('/')}/{name}"))
    try:
        await db.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    finally:
        await db.close()


async def drop_named_database(postgres: str, name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(_asyncpg_dsn(f"{postgres.rstrip('/')}/postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _ensure_databases(config: StackConfig) -> None:
    await _ensure_database(config.postgres, config.prefect_db)
    if config.store is None:
        await _ensure_database(config.postgres, config.store_db)


def ensure_database(config: StackConfig) -> None:
    """Create Prefect's database (and the pg_trgm extension Prefect needs) and, unless `--store`
    names another, the store's, when missing; the store creates its schema itself."""
    try:
        asyncio.run(_ensure_databases(config))
    except Exception as exc:  # asyncpg's errors, refused connections: one line for the user
        raise StagewatchError(
            f"cannot prepare PostgreSQL database {config.prefect_db!r} at "
            f"{_redacted(config.postgres)}: {type(exc).__name__}: {exc}"
        ) from None


def _redacted(url: str) -> str:
    """The URL without a password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Started:
    name: str
    pid: int
    log: str
    argv: list[str]


def _spawn(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Started:
    """Start `argv` in a new session (its own process group), output to `logs/<name>.log`."""
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT_DIR,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Started(name, process.pid, str(log), argv)


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        if finished:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ours(started: Started) -> bool:
    """Still the process we started (not a reused pid): same command line."""
    try:
        cmdline = Path(f"/proc/{started.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(started.pid)
    return [part.decode() for part in cmdline if part] == started.argv


def stop_process(started: Started, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM the process group, SIGKILL it after `timeout`; True if it had to be killed."""
    if not _ours(started):
        return False
    try:
        os.killpg(started.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(started.pid):
            break
        time.sleep(0.1)
    else:
        os.killpg(started.pid, signal.SIGKILL)
        return True
    with contextlib.suppress(ProcessLookupError):  # children that outlived their group leader
        os.killpg(started.pid, signal.SIGKILL)
    return False


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise StagewatchError(f"{what} within {timeout:.0f} s")


# -- the stack ----------------------------------------------------------------------------------


def _base_env(config: StackConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_API_URL": config.api_url,
            "PREFECT_HOME": str(config.state_dir / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "STAGEWATCH_DB": config.store_url,
            "STAGEWATCH_PROJECT_DIR": str(PROJECT_DIR),
        }
    )
    return env


def _server_env(config: StackConfig) -> dict[str, str]:
    return (
        _base_env(config)
        | RETENTION
        | SERVER_POOL
        | {"PREFECT_SERVER_DATABASE_CONNECTION_URL": config.database_url}
    )


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start_server(config: StackConfig, logs: Path) -> Started:
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", config.host]
    argv += ["--port", str(config.port)]
    return _spawn("server", argv, _server_env(config), logs)


def wait_for_server(config: StackConfig, server: Started) -> None:
    def ready() -> bool:
        if not _alive(server.pid):
            raise StagewatchError(f"the Prefect server exited; see {server.log}")
        return _healthy(config.api_url)

    _wait_until(ready, SERVER_START_TIMEOUT, f"the Prefect server did not answer ({server.log})")


def prepare_server(config: StackConfig) -> None:
    """The work pool, the account's concurrency limit and the list of integrations."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
        VariableCreate,
        VariableUpdate,
        WorkPoolCreate,
    )
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    from flows.fanout import INTEGRATIONS_VARIABLE
    from flows.limits import ACCOUNT_LIMIT

    template = ProcessWorker.get_default_base_job_template()
    with temporary_settings({PREFECT_API_URL: config.api_url}), get_client(sync_client=True) as c:
        try:
            c.read_work_pool(POOL)
        except ObjectNotFound:
            c.create_work_pool(
                WorkPoolCreate(name=POOL, type="process", base_job_template=template)
            )
        try:
            c.read_global_concurrency_limit_by_name(ACCOUNT_LIMIT)
            c.update_global_concurrency_limit(
                ACCOUNT_LIMIT, GlobalConcurrencyLimitUpdate(limit=config.account_limit)
            )
        except ObjectNotFound:
            c.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=ACCOUNT_LIMIT, limit=config.account_limit)
            )
        if config.integration_ids:
            variable = c.read_variable_by_name(INTEGRATIONS_VARIABLE)
            if variable is None:
                c.create_variable(
                    VariableCreate(name=INTEGRATIONS_VARIABLE, value=config.integration_ids)
                )
            else:
                c.update_variable(
                    VariableUpdate(name=INTEGRATIONS_VARIABLE, value=config.integration_ids)
                )


def deploy(config: StackConfig, logs: Path) -> None:
    """`prefect deploy` of `deployments/stack.yaml`, as a user would run it."""
    argv = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    argv += ["--prefect-file", STACK_FILE]
    log = logs / "deploy.log"
    with log.open("ab") as out:
        done = subprocess.run(
            argv, env=_base_env(config), cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode:
        raise StagewatchError(f"prefect deploy failed ({done.returncode}); see {log}")


def start_workers(config: StackConfig, logs: Path) -> list[Started]:
    env = _base_env(config) | {"PREFECT_WORKER_QUERY_SECONDS": str(config.poll_seconds)}
    started = []
    for number in range(1, config.workers + 1):
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL]
        argv += ["--type", "process", "--limit", str(config.worker_limit)]
        argv += ["--name", f"stack-worker-{number}", "--install-policy", "never"]
        started.append(_spawn(f"worker-{number}", argv, env, logs))
    return started


def wait_for_workers(config: StackConfig) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def online() -> bool:
        with (
            temporary_settings({PREFECT_API_URL: config.api_url}),
            get_client(sync_client=True) as client,
        ):
            workers = client.read_workers_for_work_pool(POOL)
        return sum(w.status == "ONLINE" for w in workers) >= config.workers

    _wait_until(online, WORKERS_ONLINE_TIMEOUT, f"{config.workers} workers were not online")


def start_receiver(config: StackConfig, logs: Path) -> Started | None:
    """`stagewatch webhooks`, when a webhook secret is configured (it refuses to start without)."""
    if not os.environ.get("KOMBO_WEBHOOK_SECRET", "").strip():
        return None
    argv = [sys.executable, "-c", "from stagewatch.cli import app; app()", "webhooks"]
    argv += ["--host", config.host, "--port", str(config.webhook_port)]
    return _spawn("webhooks", argv, _base_env(config), logs)


# -- up and down --------------------------------------------------------------------------------


def _state_path(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / STATE_FILE


def _write_state(config: StackConfig, processes: list[Started], **extra: Any) -> None:
    state = {
        "config": asdict(config) | {"state_dir": str(config.state_dir)},
        "processes": [asdict(p) for p in processes],
        **extra,
    }
    path = _state_path(config.state_dir)
    path.with_suffix(".tmp").write_text(json.dumps(state, indent=2))
    path.with_suffix(".tmp").replace(path)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = _state_path(state_dir)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def running(state_dir: Path) -> list[Started]:
    """The stack's processes that still run."""
    state = read_state(state_dir) or {"processes": []}
    return [p for p in (Started(**item) for item in state["processes"]) if _ours(p)]


def up(config: StackConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the stack; returns what `stack.json` records. Stops what it started if a step fails."""
    if running(config.state_dir):
        raise StagewatchError(
            f"a stack already runs from {config.state_dir}; `stagewatch stack down` stops it"
        )
    logs = config.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[Started] = []
    try:
        ensure_database(config)
        processes.append(start_server(config, logs))
        _write_state(config, processes)
        wait_for_server(config, processes[0])
        prepare_server(config)
        processes += start_workers(config, logs)  # they start while `prefect deploy` runs
        receiver = start_receiver(config, logs)
        processes += [receiver] if receiver else []
        _write_state(config, processes)
        deploy(config, logs)
        wait_for_workers(config)
    except BaseException:
        for process in reversed(processes):
            stop_process(process)
        _state_path(config.state_dir).unlink(missing_ok=True)
        raise
    ui = f"http://{config.host}:{config.port}"
    webhooks = f"http://{config.host}:{config.webhook_port}/kombo/webhooks" if receiver else None
    _write_state(config, processes, ui_url=ui, api_url=config.api_url, webhook_url=webhooks)
    say(f"Prefect UI: {ui}   (API {config.api_url}; logs in {logs})")
    say(f"work pool {POOL}: {config.workers} process workers, {config.worker_limit} runs each")
    say(f"store: {_redacted(config.store_url)}")
    say(
        f"webhook receiver: {webhooks}"
        if webhooks
        else "webhook receiver not started: set KOMBO_WEBHOOK_SECRET to start it"
    )
    say("stop with `stagewatch stack down`")
    return read_state(config.state_dir) or {}


def down(
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    drop_database: bool = False,
    say: Callable[[str], None] = print,
) -> list[str]:
    """Stop the stack's processes (receiver and workers first, the server last); returns the
    names of those that had to be killed. `drop_database` drops Prefect's database too."""
    state = read_state(state_dir)
    if state is None:
        say(f"no stack recorded in {Path(state_dir).resolve()}")
        return []
    processes = [Started(**item) for item in state["processes"]]
    # The workers and the receiver together (each may take a while to wind down), the server last.
    clients = [p for p in processes if p.name != "server"]
    with ThreadPoolExecutor(max_workers=max(1, len(clients))) as pool:
        stopped = list(pool.map(stop_process, clients))
    killed = [p.name for p, was_killed in zip(clients, stopped, strict=True) if was_killed]
    killed += [p.name for p in processes if p.name == "server" and stop_process(p)]
    if drop_database:
        config = state["config"]
        asyncio.run(drop_named_database(config["postgres"], config["prefect_db"]))
    _state_path(state_dir).unlink(missing_ok=True)  # a second `down` may have run meanwhile
    say(
        f"stopped {len(processes)} processes" + (f" (killed {', '.join(killed)})" if killed else "")
    )
    return killed
