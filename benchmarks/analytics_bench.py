"""Stage analytics benchmark: `funnel` and `stays` over a generated store.

    python -m benchmarks.analytics_bench [--applications 1000000] [--runs 10] [--jobs 1000]

Builds a store of N applications on J jobs (six stages each) seen by R daily runs, one event per
application per run (first_seen, then stage moves, three in ten hired or declined in the last run):
N x R events, written with set-based SQL straight into the tables a sync writes, as a store from
before migration 0010 held them; opening it then runs 0010, whose backfill of the kept stays is
timed, and so is 0012's build of every job's kept funnel. Then, each in its own subprocess (so
each peak RSS is its own, VmHWM over the timed call alone): the funnel of one job and of the whole
integration (kept rows); the whole integration's again with one job in ten marked stale (their rows
computed from the stays), then the refresh that rebuilds those jobs and the funnel after it; one
job's stays and every stay streamed (with the time to the first row), the stuck applications, and
stage_history counted.
Figures with the load average go into their size's section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import load

INTEGRATION = "greenhouse:BenchAnalytics0000000000"
STAGES = 6
TARGET_SECONDS = 2.0
RESULTS = Path(__file__).with_name("RESULTS.md")


def _markers(applications: int) -> tuple[str, str]:
    """Each size keeps its own section: a run at another size leaves it alone."""
    return (
        f"<!-- analytics-bench:{applications}:start -->",
        f"<!-- analytics-bench:{applications}:end -->",
    )


OBSERVED = "strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-05 09:00:00', '+' || :r || ' days')"


def _app(expr: str) -> str:
    return f"printf('app-%07d', {expr})"


def _job(expr: str, jobs: int) -> str:
    return f"printf('job-%04d', ({expr}) % {jobs})"


def _stage(app: str, stage: str, jobs: int) -> str:
    return f"printf('job-%04d-s%d', ({app}) % {jobs}, {stage})"


def _event_sql(kind: str, jobs: int, extra_columns: str, extra_values: str) -> str:
    return f"""
INSERT INTO events (event_key, integration_id, application_id, kind, observed_at,
    previous_observed_at, job_id, sync_run_id, snapshot_version{extra_columns})
SELECT printf('%016x%016x', c.i, :r), '{INTEGRATION}', {_app("c.i")}, '{kind}', {OBSERVED},
    CASE WHEN :r > 0 THEN strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-05 09:00:00',
        '+' || (:r - 1) || ' days') END,
    {_job("c.i", jobs)}, :r + 1, :r{extra_values}
FROM temp.cur AS c WHERE {{where}} ORDER BY c.i
"""


def before_0010(conn) -> None:
    """Take a store back to 0009's layout: the stays and funnels derived by views, none kept (a
    test upgrades such a store too); opening it runs 0010 and 0012."""
    from stagewatch.store import schema

    for view in ("job_funnel", "stage_stays", "stage_history"):
        conn.execute(f"DROP VIEW {view}")
    for table in ("stage_stays_kept", "job_funnel_kept", "funnel_stale"):
        conn.execute(f"DROP TABLE {table}")
    history = next(s for s in schema.RUN_FACTS if s.strip().startswith("CREATE VIEW"))
    for statement in (history, *schema.STAGE_ANALYTICS[:2]):
        conn.execute(statement.strip())
    conn.execute(
        "DELETE FROM _sqlite_migrations WHERE name IN ('0010_stays_kept', '0012_funnels_kept')"
    )


def backfill(path: Path) -> float:
    """Seconds to open the pre-0010 store once, which runs 0010 and its backfill."""
    from stagewatch.store import Store

    started = time.perf_counter()
    Store(path).close()
    return time.perf_counter() - started


def build(path: Path, applications: int, runs: int, jobs: int) -> None:
    """The store, written set-based: what R syncs of N applications would leave before 0010."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from stagewatch.store import Store

    Store(path).close()
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    before_0010(conn)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    conn.execute("BEGIN")
    for r in range(runs):
        conn.execute(
            "INSERT INTO sync_runs (id, integration_id, mode, status, started_at, finished_at, "
            f"observed_at, pid, hostname) VALUES (:r + 1, '{INTEGRATION}', 'full', 'succeeded', "
            f"{OBSERVED}, {OBSERVED}, {OBSERVED}, 1, 'bench')",
            {"r": r},
        )
    conn.execute(
        "WITH RECURSIVE n(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM n WHERE j < :jobs - 1) "
        f"INSERT INTO jobs SELECT '{INTEGRATION}', printf('job-%04d', j), NULL, printf('Job %d', j),"
        " 'OPEN', NULL, NULL, NULL, NULL, '2026-01-05T09:00:00.000Z', '2026-01-05T09:00:00.000Z',"
        " '', '{}' FROM n",
        {"jobs": jobs},
    )
    conn.execute(
        f"INSERT INTO job_stages SELECT j.integration_id, j.job_id, j.job_id || '-s' || s.k, NULL,"
        f" 'Stage ' || s.k, s.k, s.k, 'ACTIVE', j.first_seen_at, j.last_seen_at FROM jobs AS j,"
        f" (WITH RECURSIVE m(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM m WHERE k < {STAGES - 1})"
        f" SELECT k FROM m) AS s"
    )
    conn.execute("CREATE TEMP TABLE cur (i INTEGER PRIMARY KEY, stage INTEGER, next INTEGER)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :n - 1) "
        "INSERT INTO temp.cur SELECT i, i % 3, NULL FROM n",
        {"n": applications},
    )
    _events(conn, runs, jobs)
    _snapshot(conn, runs, jobs)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def _events(conn, runs: int, jobs: int) -> None:
    first = _event_sql(
        "first_seen",
        jobs,
        ", to_stage_id, to_stage_name, to_outcome, to_job_id",
        f", {_stage('c.i', 'c.stage', jobs)}, 'Stage ' || c.stage, 'PENDING', {_job('c.i', jobs)}",
    )
    moved = _event_sql(
        "stage_changed",
        jobs,
        ", from_stage_id, from_stage_name, to_stage_id, to_stage_name, direction",
        f", {_stage('c.i', 'c.stage', jobs)}, 'Stage ' || c.stage, {_stage('c.i', 'c.next', jobs)},"
        " 'Stage ' || c.next, CASE WHEN c.next > c.stage THEN 'forward' ELSE 'backward' END",
    )
    decided = _event_sql(
        "outcome_changed",
        jobs,
        ", from_outcome, to_outcome",
        ", 'PENDING', CASE WHEN c.i % 10 = 0 THEN 'HIRED' ELSE 'DECLINED' END",
    )
    last = runs - 1
    for r in range(runs):
        started = time.perf_counter()
        if r == 0:
            conn.execute(first.format(where="1"), {"r": r})
            continue
        # Mostly one stage on, every third application one back (wrapping round the six).
        conn.execute(
            "UPDATE temp.cur SET next = (stage + CASE WHEN (i + :r) % 3 = 0 THEN 5 ELSE 1 END) % 6",
            {"r": r},
        )
        decide = "c.i % 10 IN (0, 1, 2)"
        conn.execute(moved.format(where=f"NOT ({decide})" if r == last else "1"), {"r": r})
        if r == last:
            conn.execute(decided.format(where=decide), {"r": r})
        conn.execute("UPDATE temp.cur SET stage = next")
        print(f"  run {r + 1}/{runs} written in {time.perf_counter() - started:.1f} s", flush=True)


def _snapshot(conn, runs: int, jobs: int) -> None:
    conn.execute(
        f"INSERT INTO applications (integration_id, application_id, job_id, stage_id, outcome,"
        f" remote_created_at, first_seen_at, version_observed_at, last_run_id, version,"
        f" content_hash, raw) SELECT '{INTEGRATION}', {_app('i')}, {_job('i', jobs)},"
        f" {_stage('i', 'stage', jobs)}, CASE WHEN i % 10 = 0 THEN 'HIRED' WHEN i % 10 IN (1, 2)"
        f" THEN 'DECLINED' ELSE 'PENDING' END, '2026-01-01T09:00:00.000Z',"
        f" '2026-01-05T09:00:00.000Z', '2026-01-05T09:00:00.000Z', {runs}, {runs}, '', '{{}}'"
        f" FROM temp.cur ORDER BY i"
    )


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: Path, what: str) -> dict:
    """One timed call in this (fresh) process."""
    from stagewatch import analytics
    from stagewatch.store import Store

    stale = what in ("funnel-stale", "refresh-stale")
    store = Store(path, readonly=not stale)
    conn, as_of = store._conn, datetime(2026, 2, 1, tzinfo=UTC)
    if what == "funnel-stale":  # as a day's sync touching one job in ten leaves them
        conn.execute(
            "INSERT INTO funnel_stale SELECT integration_id, job_id, 1 FROM jobs "
            "WHERE rowid % 10 = 0 ON CONFLICT DO NOTHING"
        )
    _reset_peak()
    started = time.perf_counter()
    first_row = None
    if what == "refresh-stale":
        rows = store.refresh_funnels(INTEGRATION)
    elif what == "stage_history":
        rows = conn.execute("SELECT count(*), max(left_at) FROM stage_history").fetchone()[0]
    elif what == "stuck":
        rows = sum(
            1 for _ in analytics.stuck(conn, days=7, as_of=as_of, integration_id=INTEGRATION)
        )
    elif what.startswith("funnel"):
        job = "job-0007" if what == "funnel-job" else None
        rows = len(analytics.funnel(conn, INTEGRATION, job_id=job))
    else:
        job = "job-0007" if what == "stays-job" else None
        rows = 0
        for _ in analytics.stays(conn, as_of=as_of, integration_id=INTEGRATION, job_id=job):
            if rows == 0:
                first_row = time.perf_counter() - started
            rows += 1
    seconds = time.perf_counter() - started
    return {
        "what": what,
        "seconds": seconds,
        "first_row": first_row,
        "rows": rows,
        "peak_mib": _peak_mib(),
    }


def _child(path: Path, what: str, timeout: float) -> dict:
    code = (
        "import json, sys; from benchmarks.analytics_bench import measure; "
        f"print(json.dumps(measure(sys.argv[1], {what!r})))"
    )
    failed = {"what": what, "seconds": None, "rows": None, "first_row": None, "peak_mib": None}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=Path(__file__).resolve().parents[1],
        )
    except subprocess.TimeoutExpired:
        return failed | {"note": f"stopped after {timeout:.0f} s"}
    if done.returncode:
        return failed | {"note": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(
    results: list[dict],
    *,
    applications: int,
    events: int,
    build_s: float,
    backfill_s: float | None,
    size_mib: float,
    load_before: str,
    load_after: str,
) -> str:
    start, end = _markers(applications)
    lines = [
        start,
        "## Stage analytics (`python -m benchmarks.analytics_bench`)",
        "",
        f"{applications:,} applications, {events:,} events, {size_mib:,.0f} MiB store, built in "
        f"{build_s:.0f} s; the upgrade (0010's backfill of the kept stays, 0012's kept funnels) "
        f"{_fmt(backfill_s, 1)} s; measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Load before: "
        f"{load_before}; after: {load_after} (2 cores, shared with other work).",
        "",
        "| call | seconds | first row s | rows | peak RSS MiB | target 2 s |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        ok = r["seconds"] is not None and r["seconds"] < TARGET_SECONDS
        verdict = (
            "met" if ok else f"missed ({_fmt(r['seconds'], 1) if r['seconds'] else r.get('note')})"
        )
        lines.append(
            f"| {r['what']} | {_fmt(r['seconds'])} | {_fmt(r['first_row'], 3)} | "
            f"{r['rows'] if r['rows'] is not None else '-'} | {_fmt(r['peak_mib'], 0)} | {verdict} |"
        )
    return "\n".join(lines) + "\n" + end + "\n"


def write_results(section: str, applications: int) -> None:
    start, end = _markers(applications)
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if start in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.analytics_bench", description=__doc__
    )
    parser.add_argument("--applications", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per timed call")
    parser.add_argument("--db", type=Path, help="reuse (or keep) the generated store here")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    load_before = load()
    scratch = tempfile.TemporaryDirectory(prefix="analytics-bench-")
    path = args.db or Path(scratch.name) / "bench.db"
    started = time.perf_counter()
    built = not path.exists()
    if built:
        print(f"building {path}: {args.applications:,} applications x {args.runs} runs", flush=True)
        build(path, args.applications, args.runs, args.jobs)
    build_s = time.perf_counter() - started
    backfill_s = backfill(path) if built else None  # a reused --db is migrated already
    results = []
    whats = ("funnel-job", "stays-job", "stuck", "funnel", "funnel-stale", "refresh-stale")
    for what in (*whats, "funnel", "stays", "stage_history"):
        results.append(_child(path, what, args.timeout))
        if what == "funnel" and len(results) > 4:
            results[-1]["what"] = "funnel, refreshed"
        print(json.dumps(results[-1]), flush=True)
    section = report(
        results,
        applications=args.applications,
        events=args.applications * args.runs,
        build_s=build_s,
        backfill_s=backfill_s,
        size_mib=os.path.getsize(path) / 2**20,
        load_before=load_before,
        load_after=load(),
    )
    print(section)
    if not args.no_write:
        write_results(section, args.applications)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
