"""Issue 21 targets 2 and 3 against a running `stagewatch stack` (`stack_bench --target 2|3`).

Target 2: one integration at each size; a full sync, then about 1% of its applications changed
(simulated time advanced), then an incremental sync, each one run of `sync-batch/batch` on the
stack's workers: no ephemeral Prefect start-up, the stack's own start-up reported once. Target 3:
`--fan-out` integrations of 2,000 applications at 30 ms under a rate limit, synced by
`sync-fanout/manual` in two batches (one per worker), against the pager (`benchmarks.floor
--pages-only`) at the same total concurrency on a fresh simulator. Figures go to RESULTS.md
between the `stack-target-2` or `stack-target-3` markers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks import machine
from benchmarks.contenders import Job, Pager
from benchmarks.measure import run_measured
from benchmarks.simulator_process import SimulatorProcess, count_changed
from benchmarks.stack_bench import API_KEY, Cycle, cycle, running_stack


def markers(target: int) -> tuple[str, str]:
    return f"<!-- stack-target-{target}:start -->", f"<!-- stack-target-{target}:end -->"


SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
JOBS = 2_000
CHANGED_FRACTION = 0.01
BATCH = "sync-batch/batch"
FAN_OUT_APPLICATIONS = 2_000
FAN_OUT_JOBS = 50
FAN_OUT_LATENCY_MS = 30.0
# Requests per 60 s, as in benchmarks.run's (c): above what one run needs (8 application pages, a
# job page and a little per integration), so a 429 means a burst, not a budget spent.
FAN_OUT_REQUESTS_PER_INTEGRATION = 12
TARGET_RATIO = 0.10
TARGET_PAGER_RATIO = 1.5


def run(args: argparse.Namespace, work: Path, say) -> list[str]:
    load = machine.load()
    lines = target_2(args, work, say) if args.target == 2 else target_3(args, work, say)
    facts = f"Load before {load}, after {machine.load()}; commit {machine._commit()}."
    return [*lines[:2], facts, "", *lines[2:]]


def _one_percent(sim: SimulatorProcess, iid: str, applications: int) -> float:
    """Simulated hours after which about 1% of the applications changed (an hour's sample)."""
    before = sim.stats()["now"]
    sim.advance(1.0)
    changed = count_changed(sim.base_url, API_KEY, iid, before)
    return CHANGED_FRACTION * applications / max(changed, 1)


def target_2(args: argparse.Namespace, work: Path, say) -> list[str]:
    rows: list[tuple[str, Cycle, Cycle, int]] = []
    sizes = [s.strip() for s in args.sizes.split(",")]
    os.environ["KOMBO_API_KEY"] = API_KEY  # each run names its simulator's URL as a parameter
    with running_stack(work, args, say) as (_, stack, startup):
        for seed, size in enumerate(sizes, 2):  # a seed per size: integration ids never repeat
            n = SIZES[size]
            with SimulatorProcess(
                api_key=API_KEY, applications=n, jobs=JOBS, seed=seed,
                log_path=work / f"sim-{size}.log",
            ) as sim:  # fmt: skip
                iid = sim.normal_integrations()[0]
                hours = _one_percent(sim, iid, n)
                base = {"integration_ids": [iid], "base_url": sim.base_url}
                full = cycle(f"{size} full", stack, sim, base | {"mode": "full"}, BATCH)
                say(f"{size} full: {full.seconds:.1f} s ({full.state})")
                before = sim.stats()["now"]
                sim.advance(hours)
                changed = count_changed(sim.base_url, API_KEY, iid, before)
                inc = cycle(f"{size} 1%", stack, sim, base | {"mode": "incremental"}, BATCH)
                say(f"{size} incremental ({changed} changed): {inc.seconds:.1f} s ({inc.state})")
                rows.append((size, full, inc, changed))
    return _target_2_lines(args, startup, rows)


def _target_2_lines(args, startup: float, rows) -> list[str]:
    lines = [
        "## Stack: incremental against full through `make stack` (issue 21, target 2)",
        "",
        f"`python -m benchmarks.stack_bench --target 2 --sizes {args.sizes}`: one integration "
        f"({JOBS:,} jobs) per size, each sync one run of `{BATCH}` on the running stack (2 process "
        f"workers; no ephemeral Prefect start-up). Stack start-up, once: {startup:.1f} s. Wall: "
        "trigger to final state (a worker's pick-up and the flow-run process's start included); "
        "run: the flow run's own start to end; worker CPU: both workers and their flow-run "
        "processes.",
        "",
        "| size | changed | full wall s | full run s | full worker CPU s | 1% wall s | 1% run s "
        "| 1% worker CPU s | 1% / full (wall) | 1% / full (run) | 1% / full (CPU) | requests full / 1% |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for size, full, inc, changed in rows:
        wall, own, cpu = (inc.seconds / full.seconds, inc.run_seconds / full.run_seconds,
                          inc.worker_cpu / full.worker_cpu)  # fmt: skip
        lines.append(
            f"| {size} | {changed:,} | {full.seconds:.1f} | {full.run_seconds:.1f} "
            f"| {full.worker_cpu:.1f} | {inc.seconds:.1f} | {inc.run_seconds:.1f} "
            f"| {inc.worker_cpu:.1f} | {wall:.1%} | {own:.1%} | {cpu:.1%} "
            f"| {full.requests:,} / {inc.requests:,} |"
        )
        verdicts.append(
            f"- {size}: 1% incremental at {wall:.1%} of the full sync's wall time "
            f"({'met' if wall < TARGET_RATIO else 'MISSED'}: under {TARGET_RATIO:.0%})"
        )
    return [*lines, "", *verdicts]


def target_3(args: argparse.Namespace, work: Path, say) -> list[str]:
    n, per_batch = args.fan_out, args.fan_out_concurrency
    total = 2 * per_batch  # two batches, one per worker
    rate_limit = max(1_200, n * FAN_OUT_REQUESTS_PER_INTEGRATION)
    sim_args = dict(
        api_key=API_KEY, applications=FAN_OUT_APPLICATIONS, jobs=FAN_OUT_JOBS,
        normal_integrations=n, latency_ms=FAN_OUT_LATENCY_MS, rate_limit=rate_limit,
    )  # fmt: skip
    with SimulatorProcess(log_path=work / "sim-fan-out.log", **sim_args) as sim:
        ids = sim.normal_integrations()
        os.environ.update({"KOMBO_API_KEY": API_KEY, "KOMBO_BASE_URL": sim.base_url})
        args.account_limit = max(args.account_limit, total)
        with running_stack(work, args, say) as (_, stack, startup):
            params = {
                "integration_ids": ids,
                "batch_size": -(-n // 2),
                "max_concurrency": per_batch,
            }
            synced = cycle("stack", stack, sim, params)
            limited = sim.stats()["rate_limited"]
    say(f"stack: {synced.seconds:.1f} s ({synced.state}), {limited} 429s")
    with SimulatorProcess(log_path=work / "sim-pager.log", **sim_args) as sim:
        job = Job(sim.base_url, tuple(ids), work / "pager", False, total)
        job.workdir.mkdir(parents=True, exist_ok=True)
        pager = run_measured(Pager().command(job), cwd=str(Path(__file__).resolve().parents[1]))
        pager_limited, pager_requests = sim.stats()["rate_limited"], sim.stats()["requests_total"]
    ratio = synced.seconds / pager.wall
    return [
        "## Stack: many integrations through `make stack` (issue 21, target 3)",
        "",
        f"`python -m benchmarks.stack_bench --target 3 --fan-out {n} --fan-out-concurrency "
        f"{per_batch}`: {n} integrations x {FAN_OUT_APPLICATIONS:,} applications "
        f"({FAN_OUT_JOBS} jobs) at {FAN_OUT_LATENCY_MS:.0f} ms, rate limit {rate_limit} "
        f"requests a minute; `sync-fanout/manual` (first sync) in 2 batches x {per_batch} in "
        f"flight on 2 workers, the pager at {total} on a fresh simulator. Stack start-up, once: "
        f"{startup:.1f} s.",
        "",
        "| run | wall s | requests | 429s | worker CPU s | server CPU s | state |",
        "|---|---|---|---|---|---|---|",
        f"| stack | {synced.seconds:.1f} | {synced.requests:,} | {limited} "
        f"| {synced.worker_cpu:.1f} | {synced.server_cpu:.1f} | {synced.state} |",
        f"| pager | {pager.wall:.1f} | {pager_requests:,} | {pager_limited} | "
        f"{pager.cpu_tree:.1f} | - | - |",
        "",
        f"- stack / pager: {ratio:.2f}x ({'met' if ratio <= TARGET_PAGER_RATIO else 'MISSED'}: "
        f"within {TARGET_PAGER_RATIO}x); 429s: {limited} ({'met' if not limited else 'MISSED'})",
    ]
