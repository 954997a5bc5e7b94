"""`make bench`: stagewatch beside the floor script and dlt, same simulator, same invocation.

    python -m benchmarks.run              # the full plan (about 18-20 min on 2 cores)
    python -m benchmarks.run --quick      # a smoke run (about 1-2 min)

Workloads, against `stagewatch simulator` in its own process on loopback:
(a) first full sync of one integration (2k jobs) at each size; (b) incremental sync after about 1% of
the applications changed (simulated time advanced through `POST /_sim/advance`), and once more with
nothing changed, which shows each contender's fixed start-up cost; (c) many integrations of 2k
applications each behind a simulated per-request latency, synced with the same concurrency by all,
and by a pager that only reads each page's cursor (the machine's bound for (c)).
Contenders alternate in a rotating order within each repetition. Results go to
`benchmarks/RESULTS.md`; raw samples to `benchmarks/out/samples.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import machine, results
from benchmarks.contenders import CONTENDERS, REPO, Job
from benchmarks.measure import ContenderFailed, run_measured
from benchmarks.simulator_process import SimulatorProcess, count_changed

API_KEY = "sk_bench_loopback_only"
SIZES = {"2k": 2_000, "10k": 10_000, "100k": 100_000, "1M": 1_000_000}
JOBS = 2_000
CHANGED_FRACTION = 0.01
CALIBRATION_HOURS = 1.0
FAN_OUT_JOBS = 50
FAN_OUT_LATENCY_MS = 30.0
FAN_OUT_RATE_LIMIT = (
    1_200  # requests per 60 s window: above what one run needs, so 429s mean bursts
)
BOUND = "pager"  # (c) only: the least a client can take, see `contenders.Pager`
CONCURRENCY = 4  # stagewatch sync-many's default max_concurrency; floor and dlt get the same
RESULTS_PATH = REPO / "benchmarks" / "RESULTS.md"
OUT_DIR = REPO / "benchmarks" / "out"
NOTES_MARKER = "<!-- hand-written notes below this line are kept when the file is regenerated -->"


@dataclass(frozen=True)
class Plan:
    sizes: tuple[str, ...]
    reps: dict[str, int]
    fan_out_integrations: int
    fan_out_applications: int
    fan_out_reps: int
    contenders: tuple[str, ...]


FULL_PLAN = Plan(
    sizes=("10k", "100k", "1M"),
    reps={"10k": 3, "100k": 2, "1M": 1},  # dlt alone needs 5-8 min at 1M: 20 min holds no more
    fan_out_integrations=50,
    fan_out_applications=2_000,
    fan_out_reps=2,
    contenders=results.COMPARED,
)
QUICK_PLAN = Plan(
    sizes=("10k",),
    reps={"10k": 1},
    fan_out_integrations=8,
    fan_out_applications=500,
    fan_out_reps=1,
    contenders=results.COMPARED,
)


class Bench:
    """Runs the plan, printing one progress line per measured run, and collects the samples."""

    def __init__(self, plan: Plan, out_dir: Path) -> None:
        self.plan = plan
        self.out = out_dir
        self.samples: list[results.Sample] = []
        self.failures: list[str] = []
        self.started = time.monotonic()
        self.env = {
            **os.environ,
            "KOMBO_API_KEY": API_KEY,
            "PREFECT_HOME": str(out_dir / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)

    def order(self, rep: int) -> list[str]:
        names = list(self.plan.contenders)
        shift = rep % len(names)
        return names[shift:] + names[:shift]

    def measure(
        self,
        sim: SimulatorProcess,
        name: str,
        job: Job,
        workload: str,
        size: str,
        ideal: Callable[[int], float] | None = None,
    ) -> results.Sample | None:
        """Run one contender once and record it; a failure is recorded and the bench goes on."""
        contender = CONTENDERS[name]
        sim.reset_stats()
        cpu_before = sim.cpu_seconds()
        env = {**self.env, **contender.env(job)}
        try:
            measured = run_measured(contender.command(job), env=env, cwd=str(REPO))
            report = contender.parse(measured.stdout, env)
        except (ContenderFailed, ValueError) as exc:
            last = [line for line in str(exc).splitlines() if line.strip()][-1][:300]
            self.failures.append(f"{workload} {size} {name}: {last}")
            self.say(f"{workload} {size} {name} FAILED: {str(exc)[-2000:]}")
            return None
        stats = sim.stats()
        requests = stats["requests_total"]
        sample = results.Sample(
            workload=workload,
            size=size,
            contender=name,
            wall=measured.wall,
            work=report.work,
            rss_main_mb=measured.rss_main_mb,
            rss_tree_mb=measured.rss_tree_mb,
            cpu_main=measured.cpu_main,
            cpu_tree=measured.cpu_tree,
            requests=requests,
            rows=report.rows,
            max_concurrency=stats["max_concurrent"],
            throttled=stats["rate_limited"],
            ideal=ideal(requests) if ideal else None,
            server_cpu=sim.cpu_seconds() - cpu_before,
            phases=report.phases,
        )
        self.samples.append(sample)
        self.say(
            f"{workload} {size} {name}: work {sample.work:.2f} s, wall {sample.wall:.2f} s, "
            f"RSS {sample.rss_main_mb:.0f}/{sample.rss_tree_mb:.0f} MB, "
            f"CPU {sample.cpu_main:.1f}/{sample.cpu_tree:.1f} s, {requests} requests, "
            f"{sample.rows} rows, server CPU {sample.server_cpu:.1f} s"
        )
        return sample

    def workdir(self, *parts: str) -> Path:
        path = self.out.joinpath(*parts)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def warm_up(self) -> None:
        """One unrecorded run of each contender: Prefect's home database, bytecode, page cache."""
        self.say("warm-up (not recorded)")
        with SimulatorProcess(
            api_key=API_KEY, applications=2_000, jobs=50, log_path=self.out / "sim-warmup.log"
        ) as sim:
            iid = sim.normal_integrations()[0]
            for name in self.plan.contenders:
                job = Job(sim.base_url, (iid,), self.workdir("warmup", name), False, CONCURRENCY)
                self.measure(sim, name, job, "warm-up", "2k")
        self.samples = [s for s in self.samples if s.workload != "warm-up"]
        shutil.rmtree(self.out / "warmup", ignore_errors=True)

    def calibrate(self, sim: SimulatorProcess, iid: str, applications: int) -> float:
        """Simulated hours after which about `CHANGED_FRACTION` of the applications changed."""
        before = sim.stats()["now"]
        sim.advance(CALIBRATION_HOURS)
        changed = count_changed(sim.base_url, API_KEY, iid, before)
        if not changed:
            raise RuntimeError(f"advancing {CALIBRATION_HOURS} h changed no application")
        hours = CALIBRATION_HOURS * CHANGED_FRACTION * applications / changed
        self.say(f"calibration: {changed} changed in {CALIBRATION_HOURS} h; {hours:.2f} h for 1%")
        return hours

    def sizes(self) -> None:
        for size in self.plan.sizes:
            applications = SIZES[size]
            self.say(f"simulator: {applications:,} applications on {JOBS:,} jobs")
            with SimulatorProcess(
                api_key=API_KEY,
                applications=applications,
                jobs=JOBS,
                log_path=self.out / f"sim-{size}.log",
            ) as sim:
                iid = sim.normal_integrations()[0]
                hours = self.calibrate(sim, iid, applications)
                reps = self.plan.reps[size]
                for rep in range(reps):
                    self.say(f"{size}: repetition {rep + 1}/{reps}")
                    self.repetition(sim, iid, size, rep, hours)

    def repetition(
        self, sim: SimulatorProcess, iid: str, size: str, rep: int, hours: float
    ) -> None:
        """Full syncs into fresh state, ~1% changes, incremental syncs (and, once, a no-op)."""
        order = self.order(rep)
        dirs = {name: self.workdir(size, name) for name in order}
        jobs = {
            (name, incremental): Job(sim.base_url, (iid,), dirs[name], incremental, CONCURRENCY)
            for name in order
            for incremental in (False, True)
        }
        for name in order:
            self.measure(sim, name, jobs[name, False], results.FULL, size)
        before = sim.stats()["now"]
        sim.advance(hours)
        changed = count_changed(sim.base_url, API_KEY, iid, before)
        self.say(f"advanced {hours:.2f} h: {changed} applications changed")
        for name in order:
            self.measure(sim, name, jobs[name, True], results.INCREMENTAL, size)
        if rep == 0:
            for name in order:
                self.measure(sim, name, jobs[name, True], results.NO_CHANGE, size)
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)

    def fan_out(self) -> None:
        plan = self.plan
        n, apps = plan.fan_out_integrations, plan.fan_out_applications
        label = f"c {n}x{apps} @{FAN_OUT_LATENCY_MS:.0f}ms"
        latency = FAN_OUT_LATENCY_MS / 1000

        def ideal(requests: int) -> float:
            return requests * latency / CONCURRENCY

        for rep in range(plan.fan_out_reps):
            self.say(f"{label}: repetition {rep + 1}/{plan.fan_out_reps}")
            for name in [*self.order(rep), BOUND]:
                # A fresh simulator per run: the rate-limit window counts this run alone.
                with SimulatorProcess(
                    api_key=API_KEY,
                    applications=apps,
                    jobs=FAN_OUT_JOBS,
                    normal_integrations=n,
                    latency_ms=FAN_OUT_LATENCY_MS,
                    rate_limit=FAN_OUT_RATE_LIMIT,
                    log_path=self.out / "sim-fan-out.log",
                ) as sim:
                    ids = tuple(sim.normal_integrations())
                    job = Job(sim.base_url, ids, self.workdir("fan-out", name), False, CONCURRENCY)
                    self.measure(sim, name, job, label, f"{n * apps // 1000}k", ideal)
                shutil.rmtree(job.workdir, ignore_errors=True)


def write_results(
    path: Path,
    samples: Sequence[results.Sample],
    *,
    command: str,
    environment: dict[str, str],
    wall_seconds: float,
    failures: Sequence[str] = (),
) -> None:
    """Regenerate the measured part of RESULTS.md, keeping hand-written notes below the marker."""
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1]
    rows = results.summarize(samples)
    text = results.render(
        rows,
        command=command,
        environment=environment,
        wall_seconds=wall_seconds,
        concurrency=CONCURRENCY,
        latency_ms=FAN_OUT_LATENCY_MS,
        rate_limit=FAN_OUT_RATE_LIMIT,
        failures=failures,
    )
    path.write_text(text + "\n" + NOTES_MARKER + (notes or "\n"))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10k, one repetition")
    parser.add_argument("--sizes", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--reps", type=int, help="repetitions for every size and for (c)")
    parser.add_argument("--contenders", help=f"comma-separated, from {', '.join(results.COMPARED)}")
    parser.add_argument("--skip-sizes", action="store_true", help="leave out workloads (a), (b)")
    parser.add_argument("--skip-fan-out", action="store_true", help="leave out workload (c)")
    parser.add_argument(
        "--fan-out",
        metavar="NxM",
        help="workload (c) with N integrations of M applications each (default 50x2000)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="results markdown file")
    args = parser.parse_args(argv)

    plan = QUICK_PLAN if args.quick else FULL_PLAN
    if args.sizes:
        sizes = tuple(s.strip() for s in args.sizes.split(","))
        unknown = [s for s in sizes if s not in SIZES]
        if unknown:
            parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")
        plan = dataclasses.replace(plan, sizes=sizes)
    if args.reps is not None:
        if args.reps < 1:
            parser.error("--reps must be >= 1")
        plan = dataclasses.replace(
            plan, reps=dict.fromkeys(plan.sizes, args.reps), fan_out_reps=args.reps
        )
    plan = dataclasses.replace(plan, reps={s: plan.reps.get(s, 1) for s in plan.sizes})
    if args.fan_out:
        shape = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", args.fan_out)
        if not shape:
            parser.error(f"--fan-out wants NxM with N, M >= 1, e.g. 200x100; got {args.fan_out!r}")
        plan = dataclasses.replace(
            plan, fan_out_integrations=int(shape[1]), fan_out_applications=int(shape[2])
        )
    if args.contenders:
        names = tuple(c.strip() for c in args.contenders.split(","))
        unknown = [c for c in names if c not in results.COMPARED]
        if unknown:
            parser.error(f"unknown contender(s) {unknown}; choose from {list(results.COMPARED)}")
        plan = dataclasses.replace(plan, contenders=names)

    # SIGTERM unwinds like Ctrl-C, so the simulator and any running contender are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m benchmarks.run", *given])
    bench = Bench(plan, OUT_DIR)
    environment = machine.describe()
    bench.say(f"plan: {plan}")
    bench.say(f"machine: {environment}")
    bench.warm_up()
    if not args.skip_sizes:
        bench.sizes()
    if not args.skip_fan_out:
        bench.fan_out()
    environment["load after"] = machine.load()
    wall = time.monotonic() - bench.started
    (OUT_DIR / "samples.json").write_text(
        json.dumps([dataclasses.asdict(s) for s in bench.samples], indent=1)
    )
    write_results(
        args.out,
        bench.samples,
        command=command,
        environment=environment,
        wall_seconds=wall,
        failures=bench.failures,
    )
    bench.say(f"done in {wall / 60:.1f} min; wrote {args.out}")
    print(results.ratio_table(results.summarize(bench.samples)))
    for failure in bench.failures:
        print(f"FAILED: {failure}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
