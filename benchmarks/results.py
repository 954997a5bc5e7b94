"""Turn measured samples into `benchmarks/RESULTS.md` (pure functions, no I/O).

Two times per sample: `wall`, the whole subprocess (interpreter start, imports, and for stagewatch
Prefect's ephemeral API server), and `work`, what the contender timed itself from its start to its
end (the flow run for stagewatch, `sync()` for the floor, `pipeline.run` for dlt). Ratios compare
medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

COMPARED = ("stagewatch", "floor", "dlt")  # what every workload runs
CONTENDERS = (*COMPARED, "pager")  # the pager only runs (c): see `contenders.Pager`
SUBJECT = "stagewatch"
FULL = "a full"
INCREMENTAL = "b incremental 1%"
NO_CHANGE = "b no change"

# The targets this benchmark exists to check.
MAX_WORK_OVER_FLOOR = 1.5
MIN_DLT_OVER_WORK = 2.0
MAX_RSS_MB = 400.0
MAX_RSS_GROWTH_MB = 50.0
MAX_INCREMENTAL_SHARE = 0.10
MAX_WORK_OVER_IDEAL = 1.3


@dataclass(frozen=True)
class Sample:
    workload: str
    size: str
    contender: str
    wall: float
    work: float
    rss_main_mb: float
    rss_tree_mb: float
    requests: int
    rows: int
    max_concurrency: int | None = None
    throttled: int = 0  # 429 answers the simulator gave
    ideal: float | None = None  # requests x latency / concurrency, for latency-bound workloads
    server_cpu: float = 0.0  # CPU seconds the simulator spent serving this run
    phases: dict[str, float] = field(default_factory=dict)  # stagewatch's task run seconds
    cpu_main: float = 0.0  # CPU seconds of the contender's own process
    cpu_tree: float = 0.0  # ... and of its children (Prefect's server)


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, digits: int = 2) -> str:
        if self.n == 1 or round(self.low, digits) == round(self.high, digits):
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


@dataclass(frozen=True)
class Row:
    workload: str
    size: str
    contender: str
    wall: Spread
    work: Spread
    rss_main_mb: Spread
    rss_tree_mb: Spread
    server_cpu: Spread
    cpu_main: Spread
    cpu_tree: Spread
    requests: tuple[int, ...]
    rows: tuple[int, ...]
    max_concurrency: int | None
    throttled: int
    ideal: Spread | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # median seconds per task name


def summarize(samples: Iterable[Sample]) -> list[Row]:
    """One row per (workload, size, contender): workloads and sizes in first-seen order."""
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.workload, s.size, s.contender), []).append(s)
    rows = []
    for (workload, size, contender), group in groups.items():
        ideals = [s.ideal for s in group if s.ideal is not None]
        phase_names = dict.fromkeys(name for s in group for name in s.phases)
        concurrency = [s.max_concurrency for s in group if s.max_concurrency is not None]
        rows.append(
            Row(
                workload=workload,
                size=size,
                contender=contender,
                wall=Spread.of([s.wall for s in group]),
                work=Spread.of([s.work for s in group]),
                rss_main_mb=Spread.of([s.rss_main_mb for s in group]),
                rss_tree_mb=Spread.of([s.rss_tree_mb for s in group]),
                server_cpu=Spread.of([s.server_cpu for s in group]),
                cpu_main=Spread.of([s.cpu_main for s in group]),
                cpu_tree=Spread.of([s.cpu_tree for s in group]),
                requests=tuple(sorted({s.requests for s in group})),
                rows=tuple(sorted({s.rows for s in group})),
                max_concurrency=max(concurrency) if concurrency else None,
                throttled=sum(s.throttled for s in group),
                ideal=Spread.of(ideals) if ideals else None,
                phases={
                    name: statistics.median(s.phases.get(name, 0.0) for s in group)
                    for name in phase_names
                },
            )
        )
    rank = {c: i for i, c in enumerate(CONTENDERS)}
    first_seen = {key: i for i, key in enumerate(dict.fromkeys((r.workload, r.size) for r in rows))}
    rows.sort(key=lambda r: (first_seen[(r.workload, r.size)], rank.get(r.contender, len(rank))))
    return [_with_ratios(r, rows) for r in rows]


def _with_ratios(row: Row, rows: list[Row]) -> Row:
    if row.contender != SUBJECT:
        return row
    ratios = {}
    for other in rows:
        if (other.workload, other.size) == (row.workload, row.size) and other.contender != SUBJECT:
            ratios[f"work/{other.contender}"] = row.work.median / other.work.median
            ratios[f"wall/{other.contender}"] = row.wall.median / other.wall.median
    if row.ideal is not None:
        ratios["work/ideal"] = row.work.median / row.ideal.median
    return replace(row, ratios=ratios)


def find(rows: Sequence[Row], workload: str, size: str, contender: str) -> Row | None:
    for r in rows:
        if (r.workload, r.size, r.contender) == (workload, size, contender):
            return r
    return None


def _ints(values: tuple[int, ...]) -> str:
    return "/".join(f"{v:,}" for v in values)


def _table(head: Sequence[str], lines: Iterable[Sequence[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def _cells(r: Row) -> tuple[str, ...]:
    concurrency = "" if r.max_concurrency is None else str(r.max_concurrency)
    return (
        r.workload, r.size, r.contender, r.work.fmt(), r.wall.fmt(), r.rss_main_mb.fmt(0),
        r.rss_tree_mb.fmt(0), f"{r.cpu_main.median:.1f} / {r.cpu_tree.median:.1f}",
        r.server_cpu.fmt(1), _ints(r.requests), _ints(r.rows), concurrency, str(r.throttled),
    )  # fmt: skip


def markdown_table(rows: Sequence[Row]) -> str:
    """Every measured row: seconds as median (min-max), memory in MB."""
    head = (
        "workload", "size", "contender", "work s", "wall s", "RSS main MB", "RSS tree MB",
        "CPU s main / tree", "server CPU s", "requests", "rows stored", "max conc.", "429s",
    )  # fmt: skip
    return _table(head, (_cells(r) for r in rows))


def ratio_table(rows: Sequence[Row]) -> str:
    """stagewatch's medians over the others' medians, per workload and size."""
    keys = ("work/floor", "work/dlt", "wall/floor", "wall/dlt", "work/ideal")
    head = ("workload", "size", *(k.replace("/", " / ") for k in keys))
    return _table(
        head,
        (
            (r.workload, r.size, *(f"{r.ratios[k]:.2f}" if k in r.ratios else "" for k in keys))
            for r in rows
            if r.contender == SUBJECT
        ),
    )


def phase_table(rows: Sequence[Row]) -> str:
    """Where stagewatch's flow time goes: median seconds per Prefect task (summed over the
    integrations of a run, so under concurrency the tasks add up to more than the flow)."""
    names = list(dict.fromkeys(name for r in rows if r.contender == SUBJECT for name in r.phases))
    head = ("workload", "size", "flow s", *names)
    return _table(
        head,
        (
            (
                r.workload,
                r.size,
                f"{r.work.median:.2f}",
                *(f"{r.phases.get(n, 0):.2f}" for n in names),
            )
            for r in rows
            if r.contender == SUBJECT
        ),
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def verdicts(rows: Sequence[Row], *, concurrency: int) -> list[str]:
    """One line per target, with the figure that decides it; targets with no data are skipped."""
    lines = []
    for size in ("100k", "1M"):
        sw, floor, dlt = (find(rows, FULL, size, c) for c in COMPARED)
        if sw and floor:
            ratio = sw.work.median / floor.work.median
            lines.append(
                f"(a) {size}: stagewatch flow / floor = {ratio:.2f} "
                f"(target <= {MAX_WORK_OVER_FLOOR}): {_verdict(ratio <= MAX_WORK_OVER_FLOOR)}"
            )
        if sw and dlt:
            speedup = dlt.work.median / sw.work.median
            lines.append(
                f"(a) {size}: dlt / stagewatch flow = {speedup:.2f}x "
                f"(target >= {MIN_DLT_OVER_WORK}x): {_verdict(speedup >= MIN_DLT_OVER_WORK)}"
            )
    big, mid = find(rows, FULL, "1M", SUBJECT), find(rows, FULL, "100k", SUBJECT)
    if big:
        peak = big.rss_main_mb.high
        lines.append(
            f"(a) 1M: stagewatch peak RSS {peak:.0f} MB in the sync process, "
            f"{big.rss_tree_mb.high:.0f} MB with Prefect's server "
            f"(target < {MAX_RSS_MB:.0f} MB): {_verdict(peak < MAX_RSS_MB)}"
        )
        if mid:
            growth = peak - mid.rss_main_mb.high
            lines.append(
                f"(a) 100k -> 1M: stagewatch peak RSS grows {growth:.0f} MB "
                f"(target < {MAX_RSS_GROWTH_MB:.0f} MB): {_verdict(growth < MAX_RSS_GROWTH_MB)}"
            )
    for row in rows:
        if row.workload != INCREMENTAL or row.contender != SUBJECT:
            continue
        full = find(rows, FULL, row.size, SUBJECT)
        if not full:
            continue
        share = row.wall.median / full.wall.median
        flow_share = row.work.median / full.work.median
        idle = find(rows, NO_CHANGE, row.size, SUBJECT)
        startup = f"; Prefect start-up {idle.wall.median - idle.work.median:.1f} s" if idle else ""
        lines.append(
            f"(b) {row.size}: incremental {row.wall.median:.1f} s = {share:.0%} of the full "
            f"sync's {full.wall.median:.1f} s, start-up included (flow alone {flow_share:.0%}"
            f"{startup}; target < {MAX_INCREMENTAL_SHARE:.0%}): "
            f"{_verdict(share < MAX_INCREMENTAL_SHARE)}"
        )
    for row in rows:
        if row.contender != SUBJECT or row.ideal is None:
            continue
        ratio = row.ratios["work/ideal"]
        within = (row.max_concurrency or 0) <= concurrency and row.throttled == 0
        others = {
            label: find(rows, row.workload, row.size, name)
            for name, label in (("floor", "the floor's"), ("pager", "a client that only pages"))
        }
        bound = "".join(
            f", {label} {other.work.median / other.ideal.median:.2f}"
            for label, other in others.items()
            if other and other.ideal
        )
        lines.append(
            f"({row.workload[0]}) {row.workload[2:]}: flow / ideal = {ratio:.2f} "
            f"(ideal {row.ideal.median:.2f} s{bound}; target <= {MAX_WORK_OVER_IDEAL}): "
            f"{_verdict(ratio <= MAX_WORK_OVER_IDEAL)}; max concurrency {row.max_concurrency} "
            f"(limit {concurrency}), {row.throttled} 429s: {_verdict(within)}"
        )
    return lines


def render(
    rows: Sequence[Row],
    *,
    command: str,
    environment: Mapping[str, str],
    wall_seconds: float,
    concurrency: int,
    latency_ms: float,
    rate_limit: int,
    failures: Sequence[str] = (),
) -> str:
    """The generated part of RESULTS.md."""
    machine = "\n".join(f"- {key}: {value}" for key, value in environment.items())
    targets = "\n".join(f"- {line}" for line in verdicts(rows, concurrency=concurrency))
    if failures:
        targets += "\n\nRuns that failed (not in the figures):\n" + "\n".join(
            f"- {line}" for line in failures
        )
    return f"""# Benchmark results

Generated by `make bench`: `{command}`, which took {wall_seconds / 60:.1f} min.

## Machine

{machine}

## How to read

Each contender runs as its own process against `stagewatch simulator` (a separate process on
loopback, sharing the 2 cores). *work* is the contender's own start-to-end time (stagewatch: the
Prefect flow run; floor: its `sync()`; dlt: `pipeline.run`), *wall* the whole process including
interpreter start, imports and, for stagewatch, Prefect's ephemeral API server. Times are medians in
seconds with (min-max) over the repetitions. RSS main is the contender's own process, RSS tree adds its
children (Prefect's server); *CPU s main / tree* counts their CPU seconds (medians) the same two ways.
Requests, max concurrency and 429s are counted by the simulator. *server CPU* is what the simulator
spent rendering the answers: when it is close to *work*, the simulator, not the contender, sets the
pace. On 2 cores, when *CPU s tree* plus *server CPU* come near twice *wall*, the machine is full.
(c) runs {concurrency} integrations at a time in every contender, with {latency_ms:.0f} ms added to
each response and a rate limit of {rate_limit} requests per 60 s; its ideal is
requests x latency / {concurrency}. (c) also runs *pager*, the floor with nothing to do: it reads
only each page's cursor and stores nothing, so its ratio to the ideal is what the simulator and
loopback alone add, a bound no contender can beat on this machine.

## Ratios (stagewatch / other, medians)

{ratio_table(rows)}

## Targets

{targets}

## Where stagewatch's flow time goes (median seconds per task)

{phase_table(rows)}

## All measurements

{markdown_table(rows)}
"""
