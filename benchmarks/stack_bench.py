"""Issue 21, target 1 and Prefect's own costs, measured through `stagewatch stack up`.

    python -m benchmarks.stack_bench                   # 1,000 integrations, about 10 min on 2 cores
    python -m benchmarks.stack_bench --integrations 50 --no-write   # a smoke run

The simulator (its own process) serves 1,000 integrations at 100 ms per request. A first cycle
(`sync-fanout/manual`, incremental) lists every integration's jobs and applications; the second,
the one measured against the target, finds nothing changed: one empty page per integration, jobs
from the task cache. Per cycle: wall time from trigger to the fan-out's final state, Kombo requests
(the simulator's count), CPU of the two workers with the flow-run processes they started, CPU of
the Prefect server, and the growth of Prefect's PostgreSQL database. Then `--profile N` idle integrations
run serially in a flow run of this process under cProfile (their per-integration CPU and the top
of the profile). Figures go to `benchmarks/RESULTS.md` between the `stack-bench` markers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks import machine
from benchmarks.simulator_process import SimulatorProcess

API_KEY = "sk_stack_bench_loopback_only"
LATENCY_MS = 100.0
TARGET_SECONDS = 60.0
TARGET_REQUESTS_PER_INTEGRATION = 1.0
TARGET_CPU_MS_PER_INTEGRATION = 40.0
PREFECT_DB = "stagewatch_prefect_bench"
STORE_DB = "stagewatch_store_bench"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START, END = "<!-- stack-bench:start -->", "<!-- stack-bench:end -->"
KEPT = "<!-- stack-bench:kept -->"
TIMEOUT = 1800.0


@dataclass
class Cycle:
    name: str
    seconds: float
    state: str
    requests: int
    worker_cpu: float
    server_cpu: float
    db_growth: int
    flow_runs: int
    task_runs: int
    run_seconds: float = 0.0  # the started flow run's own start to end, without its pick-up


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants and the children it has reaped."""
    try:
        root = psutil.Process(pid)
        total = sum(root.cpu_times()[:4])
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:2])
        return total
    except psutil.NoSuchProcess:
        return 0.0


def _db_size(postgres: str, name: str) -> int:
    import asyncpg

    async def size() -> int:
        dsn = postgres.replace("postgresql+asyncpg://", "postgresql://") + "/postgres"
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT pg_database_size($1)", name)
        finally:
            await conn.close()

    return asyncio.run(size())


def _count(api_url: str) -> tuple[int, int]:
    """(flow runs, task runs) the server holds."""
    return tuple(  # type: ignore[return-value]
        httpx.post(f"{api_url}/{kind}/count", json={}, timeout=60).json()
        for kind in ("flow_runs", "task_runs")
    )


def _settled(api_url: str, quiet: float = 10.0, limit: float = 300.0) -> tuple[int, int]:
    """The counts once they stop moving: task runs reach the database through events, which
    the server records after the flow run has ended."""
    counts, deadline = _count(api_url), time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = _count(api_url)
        if now == counts:
            break
        counts = now
    return counts


def _run(api_url: str, name: str, params: dict[str, Any], **options: Any) -> Any:
    """Start a run of deployment `name` and wait for its final state."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        run = run_deployment(name, parameters={"params": params}, timeout=0, **options)
        deadline = time.monotonic() + TIMEOUT
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                run = client.read_flow_run(run.id)
                if run.state and run.state.is_final():
                    return run
                time.sleep(0.5)
    raise TimeoutError(f"{name} did not finish within {TIMEOUT:.0f} s")


def cycle(
    name: str,
    stack: dict[str, Any],
    sim: SimulatorProcess,
    params: dict,
    deployment: str = "sync-fanout/manual",
) -> Cycle:
    pids = {p["name"]: p["pid"] for p in stack["processes"]}
    workers = [pid for n, pid in pids.items() if n.startswith("worker")]
    config, api_url = stack["config"], stack["api_url"]
    before = (
        sum(_cpu(p) for p in workers),
        _cpu(pids["server"]),
        _db_size(config["postgres"], config["prefect_db"]),
        _count(api_url),
    )
    sim.reset_stats()
    started = time.perf_counter()
    run = _run(api_url, deployment, params)
    seconds = time.perf_counter() - started
    counts = _settled(api_url)
    return Cycle(
        name=name,
        seconds=seconds,
        state=f"{run.state.name}: {run.state.message}",
        requests=sim.stats()["requests_total"],
        worker_cpu=sum(_cpu(p) for p in workers) - before[0],
        server_cpu=_cpu(pids["server"]) - before[1],
        db_growth=_db_size(config["postgres"], config["prefect_db"]) - before[2],
        flow_runs=counts[0] - before[3][0],
        task_runs=counts[1] - before[3][1],
        run_seconds=(run.end_time - run.start_time).total_seconds(),
    )


def profile_checks(store_url: str, ids: list[str]) -> tuple[float, str]:
    """What an idle cycle's fan-out does per integration (`stagewatch.checks`: the plan query,
    one request each, the check records), serially in this process's main thread so cProfile
    sees it all; returns (CPU seconds of this process per integration, the top of the profile)."""
    from flows.sync import open_client
    from stagewatch import checks
    from stagewatch.settings import Settings
    from stagewatch.store import Store

    settings = Settings()
    profiler = cProfile.Profile()
    with (
        open_client(settings.kombo_api_key, None, os.environ["KOMBO_BASE_URL"], settings) as client,
        Store(store_url) as store,
    ):
        checks.check_all(store, client, ids[:1], max_concurrency=1)  # warm: the first connection
        cpu = time.process_time()
        profiler.enable()
        found = [checks.check_one(client, plan) for plan in store.check_plan(ids)]
        store.record_checks(checks._records(found))
        profiler.disable()
        per_integration = (time.process_time() - cpu) / len(ids)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    top = [line for line in out.getvalue().splitlines() if line.strip()]
    return per_integration, "\n".join(top[2:])


def _table(cycles: list[Cycle], n: int) -> list[str]:
    rows = [
        "| cycle | wall s | requests / integration | worker CPU ms / integration "
        "| server CPU s | Prefect DB growth MB | flow runs | task runs | state |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cycles:
        rows.append(
            f"| {c.name} | {c.seconds:.1f} | {c.requests / n:.2f} | {1000 * c.worker_cpu / n:.0f} "
            f"| {c.server_cpu:.1f} | {c.db_growth / 1e6:.1f} | {c.flow_runs} | {c.task_runs} "
            f"| {c.state} |"
        )
    return rows


def _targets(idle: Cycle, n: int) -> list[str]:
    checks = [
        ("cycle under 60 s", idle.seconds, TARGET_SECONDS, "s"),
        ("at most 1 request per integration", idle.requests / n, 1.0, ""),
        ("under 40 ms worker CPU per integration", 1000 * idle.worker_cpu / n, 40.0, " ms"),
    ]
    return [
        f"- {what}: {value:.2f}{unit} ({value / limit:.2f}x the limit) "
        f"{'met' if value <= limit else 'MISSED'}"
        for what, value, limit, unit in checks
    ]


def write_results(section: list[str], start: str = START, end: str = END) -> None:
    """Replace the section between the markers, keeping its hand-written part (from `KEPT`)."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    old = text[text.index(start) : text.index(end)] if start in text and end in text else ""
    kept = old[old.index(KEPT) :].rstrip("\n").splitlines() if KEPT in old else []
    block = "\n".join([start, *section, *(["", *kept] if kept else []), end])
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--integrations", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=125)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--account-limit", type=int, default=32)
    parser.add_argument("--worker-limit", type=int, default=5)
    parser.add_argument("--idle-cycles", type=int, default=2)
    parser.add_argument(
        "--profile", type=int, default=200, help="integrations checked under cProfile (0: none)"
    )
    parser.add_argument(
        "--target",
        type=int,
        choices=(1, 2, 3),
        default=1,
        help="1: idle integrations (above); 2: a 1%% incremental against a full sync at --sizes; "
        "3: --fan-out integrations of 2,000 applications at 30 ms against the pager",
    )
    parser.add_argument("--sizes", default="10k,100k", help="target 2: from 10k, 100k, 1M")
    parser.add_argument("--fan-out", type=int, default=200, help="target 3: integrations")
    parser.add_argument(
        "--fan-out-concurrency", type=int, default=4, help="target 3: in flight per batch"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


@contextlib.contextmanager
def running_stack(work: Path, args: argparse.Namespace, say) -> Iterator[tuple[Any, dict, float]]:
    """`stagewatch stack up` on its own databases; yields (config, stack, start-up seconds) and
    stops it, dropping both databases, however the measurement ends."""
    from deployments.stack import StackConfig, down, drop_named_database, up

    config = StackConfig(
        state_dir=work / "stack", port=_free_port(), webhook_port=_free_port(),
        prefect_db=PREFECT_DB, store_db=STORE_DB, workers=2, worker_limit=args.worker_limit,
        poll_seconds=1, account_limit=args.account_limit,
    )  # fmt: skip
    started = time.perf_counter()
    stack = up(config, say=say)
    try:
        yield config, stack, time.perf_counter() - started
    finally:
        down(config.state_dir, drop_database=True, say=say)
        asyncio.run(drop_named_database(config.postgres, STORE_DB))


def run(args: argparse.Namespace, work: Path, say) -> list[str]:
    sim_args = dict(applications=2, jobs=1, normal_integrations=args.integrations)
    with SimulatorProcess(
        api_key=API_KEY, latency_ms=LATENCY_MS, log_path=work / "sim.log", **sim_args
    ) as sim:
        ids = sim.normal_integrations()
        os.environ.update({"KOMBO_API_KEY": API_KEY, "KOMBO_BASE_URL": sim.base_url})
        with running_stack(work, args, say) as (config, stack, startup):
            params = {
                "integration_ids": ids,
                "batch_size": args.batch_size,
                "max_concurrency": args.max_concurrency,
            }
            cycles = [cycle("first (lists everything)", stack, sim, params)]
            say(_table(cycles, len(ids))[-1])
            for number in range(1, args.idle_cycles + 1):
                cycles.append(cycle(f"idle {number}", stack, sim, params))
                say(_table(cycles, len(ids))[-1])
            profile = (
                profile_checks(config.store_url, ids[: args.profile]) if args.profile else None
            )
    return _section(args, startup, cycles, len(ids), profile)


def _section(
    args: argparse.Namespace,
    startup: float,
    cycles: list[Cycle],
    n: int,
    profile: tuple[float, str] | None,
) -> list[str]:
    idle = [c for c in cycles if c.name.startswith("idle")]
    worst = Cycle(
        name="worst idle",
        seconds=max(c.seconds for c in idle),
        state="",
        requests=max(c.requests for c in idle),
        worker_cpu=max(c.worker_cpu for c in idle),
        server_cpu=max(c.server_cpu for c in idle),
        db_growth=max(c.db_growth for c in idle),
        flow_runs=0,
        task_runs=max(c.task_runs for c in idle),
    )
    week_mb = worst.db_growth * 24 * 7 / 1e6
    lines = [
        "## Stack: idle integrations through `make stack` (issue 21, target 1)",
        "",
        f"`python -m benchmarks.stack_bench --integrations {args.integrations} --batch-size "
        f"{args.batch_size} --max-concurrency {args.max_concurrency} --account-limit "
        f"{args.account_limit} --worker-limit {args.worker_limit}`; load before "
        f"{LOAD_BEFORE}, after {machine.load()}; commit {machine._commit()}.",
        "",
        f"{n} integrations, each one empty page at {LATENCY_MS:.0f} ms, through `stagewatch stack "
        f"up` (Prefect server and the store on PostgreSQL, 2 process workers x "
        f"{args.worker_limit} runs); "
        f"`sync-fanout/manual` in batches of {args.batch_size}. Stack start-up (one-time): "
        f"{startup:.1f} s. Worker CPU counts the workers and every flow-run process they started.",
        "",
        *_table(cycles, n),
        "",
        "Target 1 (the worse of the idle cycles):",
        *_targets(worst, n),
        "",
        f"Prefect's own cost per 1,000 idle integrations (checked, not synced): server CPU "
        f"{1000 * worst.server_cpu / n:.1f} s, database growth {1000 * worst.db_growth / n / 1e6:.1f}"
        f" MB ({1000 * worst.task_runs / n:.0f} task runs). Hourly, with the 7-day retention of "
        f"events and flow runs the stack sets, Prefect's database levels off near {week_mb:,.0f} MB "
        "(what a month needs: the vacuum deletes what is older).",
    ]
    if profile:
        per, top = profile
        lines += [
            "",
            f"Profile: {args.profile} idle integrations checked the way the fan-out checks them "
            f"(`stagewatch.checks`: plan, one request each, records), serially, cost "
            f"{1000 * per:.1f} ms of CPU each in this process; cProfile's top (own time: `recv` is the wait for Kombo, the rest CPU):",
            "",
            "```",
            *top.splitlines()[:40],
            "```",
        ]
    return lines


LOAD_BEFORE = machine.load()


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="stack-bench-"))
    say = lambda line: print(line, flush=True)  # noqa: E731
    if args.target == 1:
        section, markers = run(args, work, say), (START, END)
    else:
        from benchmarks import stack_targets

        section, markers = stack_targets.run(args, work, say), stack_targets.markers(args.target)
    shutil.rmtree(work)  # kept, with the stack's logs, when the run fails
    print("\n".join(section))
    if not args.no_write:
        write_results(section, *markers)
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
