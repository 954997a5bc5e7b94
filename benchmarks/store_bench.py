"""Store benchmark: apply a full listing with 5% of applications changed to a store holding the last one.

    python -m benchmarks.store_bench [--sizes 100000,1000000] [--jobs 2000] [--postgres URL]

For each size, two subprocesses (so each peak RSS is its own): `store` builds the previous snapshot
with a first full run, then times a second full run (staging every page of 250 plus `commit_run`);
`baseline` does the same job with the least plain-`sqlite3` code (stage every record with its JSON,
one INSERT ... SELECT diff, one upsert). Only the store calls are timed: building the pydantic records
is the client's cost. Peak RSS is the kernel's high-water mark over the timed run alone (VmHWM reset
through /proc/self/clear_refs), so memory that grows with the data set shows as growth across sizes.
The store's WAL checkpoint runs in a background thread once `commit_run` has returned; the run is
committed (durable, visible) before it. Its time, waited for after the commit, is printed apart.
With `--postgres URL` a third subprocess, `postgres`, runs the store on that server, in a schema of
its own (dropped after); its peak RSS is the client's, the server's memory is its own.

The second listing changes 5% of applications: 2% move stage, 1% get an outcome (declined or hired),
0.5% vanish (deleted by absence), 0.5% are deleted in the ATS (`remote_deleted_at`), 1% change only
untracked fields; 0.5% more are new.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

PAGE_SIZE = 250
STAGES_PER_JOB = 6
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=6)


_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _id(prefix: str, number: int) -> str:
    """A Kombo-like id (24 base58 characters, random-looking but deterministic).

    Kombo's ids carry no order, so each listed id lands anywhere in the store's indexes; sequential
    ids would make every insert an append and hide that cost.
    """
    value = int.from_bytes(hashlib.blake2b(f"{prefix}{number}".encode(), digest_size=18).digest())
    chars = []
    for _ in range(24):
        value, digit = divmod(value, 58)
        chars.append(_ALPHABET[digit])
    return "".join(chars)


def _change(i: int) -> str | None:
    """The deterministic fate of application i in the second listing (None: unchanged)."""
    bucket = (i * 7919) % 1000
    if bucket < 20:
        return "stage"
    if bucket < 30:
        return "outcome"
    if bucket < 35:
        return "vanish"
    if bucket < 40:
        return "remote_delete"
    if bucket < 50:
        return "untracked"
    return None


class World:
    """Builds jobs and application pages as the client would hand them over: parsed models."""

    def __init__(self, size: int, jobs: int) -> None:
        from stagewatch.kombo.models import Application, Candidate, CurrentStage, Job, JobRef

        self.size = size
        self.n_jobs = jobs
        self._candidate = Candidate
        self.jobs = [
            Job.model_validate(
                {
                    "id": _id("job", j),
                    "remote_id": str(j),
                    "name": f"Job {j}",
                    "status": "OPEN",
                    "stages": [
                        {
                            "id": _id(f"st{k}", j),
                            "remote_id": f"{j}-{k}",
                            "name": f"Stage {k}",
                            "index": k,
                        }
                        for k in range(STAGES_PER_JOB)
                    ],
                    "remote_data": {"internal": "x" * 100},
                }
            )
            for j in range(jobs)
        ]
        self._stage = {
            (j, k): CurrentStage(
                id=_id(f"st{k}", j), remote_id=f"{j}-{k}", name=f"Stage {k}", index=k
            )
            for j in range(jobs)
            for k in range(STAGES_PER_JOB)
        }
        self._job = {
            j: JobRef(id=_id("job", j), remote_id=str(j), name=f"Job {j}") for j in range(jobs)
        }
        self._template = Application.model_validate(
            {
                "id": "template",
                "outcome": "PENDING",
                "changed_at": "2026-01-02T10:00:00.123Z",
                "remote_created_at": "2026-01-01T10:00:00.000Z",
                "remote_updated_at": "2026-01-02T10:00:00.123Z",
                "custom_fields": {},
                "integration_fields": [],
                "remote_url": "https://ats.example.com/applications/0",
                "interviews": [],
                "offers": [],
                "remote_data": {"internal": "y" * 200},
            }
        )

    def _application(self, i: int, second: bool):
        j = i % self.n_jobs
        k = (i // self.n_jobs) % (STAGES_PER_JOB - 1)
        fate = _change(i) if second else None
        update = {
            "id": _id("app", i),
            "remote_id": str(i),
            "job_id": _id("job", j),
            "job": self._job[j],
            "current_stage_id": None,
            "current_stage": self._stage[(j, k + 1 if fate == "stage" else k)],
            "candidate_id": _id("cand", i),
            "candidate": self._candidate(
                id=_id("cand", i), first_name=f"First{i}", last_name="Last"
            ),
        }
        if fate == "outcome":
            if i % 2:
                update["outcome"] = "HIRED"
            else:
                update["outcome"] = "DECLINED"
                update["rejection_reason_name"] = "Not a fit"
                update["rejected_at"] = T1 - timedelta(hours=1)
        elif fate == "remote_delete":
            update["remote_deleted_at"] = T1 - timedelta(hours=2)
        elif fate == "untracked":
            update["remote_updated_at"] = T1 - timedelta(hours=3)
        return self._template.model_copy(update=update)

    def pages(self, second: bool) -> Iterator[list]:
        total = self.size + (self.size // 200 if second else 0)
        page = []
        for i in range(total):
            if second and _change(i) == "vanish":
                continue
            page.append(self._application(i, second))
            if len(page) == PAGE_SIZE:
                yield page
                page = []
        if page:
            yield page


def _reset_peak() -> None:
    """Start the kernel's high-water mark afresh, so the peak covers the timed run alone."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class Timer:
    """Wall and CPU seconds spent inside `with timer:` blocks: only the store's own calls."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def __enter__(self) -> Timer:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def _result(
    staging: Timer, commit: Timer, setup: float, events: dict, checkpoint: float = 0.0
) -> dict:
    return {
        "setup_seconds": setup,
        "staging_seconds": staging.wall,
        "commit_seconds": commit.wall,
        "checkpoint_seconds": checkpoint,
        "cpu_seconds": staging.cpu + commit.cpu,
        "peak_rss_mb": _peak_rss_mb(),
        "events": events,
    }


# -- stagewatch ----------------------------------------------------------------------------------


def _store_run(
    store, world: World, second: bool, observed: datetime
) -> tuple[Timer, Timer, Timer, dict]:
    from stagewatch.store import wait_for_checkpoints

    staging, commit, checkpoint = Timer(), Timer(), Timer()
    with staging:
        run = store.begin_run("bench:integration", "full", started_at=observed)
        store.stage_jobs(run.id, world.jobs)
        stage = store.application_stager(run.id)
    for page in world.pages(second):
        with staging:
            stage(run.id, page)
    with staging:
        stage.flush()
        stage.close()
    with commit:
        counts = store.commit_run(run.id, observed_at=observed, next_watermark=observed)
    with checkpoint:
        wait_for_checkpoints()
    return staging, commit, checkpoint, counts


def run_store(size: int, jobs: int, directory: Path, db: str | None = None) -> dict:
    from stagewatch.store import Store

    world = World(size, jobs)
    store = Store(db or directory / "store.db")
    setup = _store_run(store, world, False, T0)
    _reset_peak()
    staging, commit, checkpoint, counts = _store_run(store, world, True, T1)
    setup_seconds = sum(timer.wall for timer in setup[:3])
    return _result(staging, commit, setup_seconds, counts, checkpoint.wall)


# -- plain sqlite3 baseline ------------------------------------------------------------------------

_BASELINE_SCHEMA = """
CREATE TABLE snapshot (id TEXT PRIMARY KEY, job_id TEXT, stage_id TEXT, outcome TEXT,
    remote_deleted_at TEXT, deleted INTEGER NOT NULL DEFAULT 0, raw TEXT NOT NULL);
CREATE TABLE staging (id TEXT PRIMARY KEY, job_id TEXT, stage_id TEXT, outcome TEXT,
    remote_deleted_at TEXT, raw TEXT NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY, application_id TEXT, kind TEXT, from_stage_id TEXT,
    to_stage_id TEXT, observed_at TEXT);
"""

_BASELINE_DIFF = (
    """INSERT INTO events (application_id, kind, from_stage_id, to_stage_id, observed_at)
    SELECT s.id, CASE WHEN p.id IS NULL THEN 'first_seen' ELSE 'changed' END, p.stage_id,
        s.stage_id, :observed
    FROM staging AS s LEFT JOIN snapshot AS p ON p.id = s.id
    WHERE p.id IS NULL OR p.stage_id IS NOT s.stage_id OR p.outcome IS NOT s.outcome
        OR p.job_id IS NOT s.job_id OR p.remote_deleted_at IS NOT s.remote_deleted_at
        OR p.deleted""",
    """INSERT INTO events (application_id, kind, observed_at)
    SELECT p.id, 'deleted', :observed FROM snapshot AS p
    WHERE NOT p.deleted AND NOT EXISTS (SELECT 1 FROM staging AS s WHERE s.id = p.id)""",
    """UPDATE snapshot SET deleted = 1
    WHERE NOT deleted AND NOT EXISTS (SELECT 1 FROM staging AS s WHERE s.id = snapshot.id)""",
    """INSERT INTO snapshot (id, job_id, stage_id, outcome, remote_deleted_at, deleted, raw)
    SELECT s.id, s.job_id, s.stage_id, s.outcome, s.remote_deleted_at, 0, s.raw
    FROM staging AS s LEFT JOIN snapshot AS p ON p.id = s.id
    WHERE p.id IS NULL OR p.raw IS NOT s.raw OR p.deleted
    ON CONFLICT (id) DO UPDATE SET job_id = excluded.job_id, stage_id = excluded.stage_id,
        outcome = excluded.outcome, remote_deleted_at = excluded.remote_deleted_at,
        deleted = 0, raw = excluded.raw""",
    "DELETE FROM staging",
)


def _baseline_run(conn, world: World, second: bool, observed: datetime) -> tuple[Timer, Timer]:
    staging, commit = Timer(), Timer()
    for page in world.pages(second):
        with staging:
            rows = [
                (
                    app.id,
                    app.effective_job_id,
                    app.stage_id,
                    app.outcome,
                    app.remote_deleted_at and app.remote_deleted_at.isoformat(),
                    app.model_dump_json(exclude={"remote_data"}),
                )
                for app in page
            ]
            conn.execute("BEGIN")
            conn.executemany("INSERT OR REPLACE INTO staging VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
    with commit:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _BASELINE_DIFF:
            conn.execute(statement, {"observed": observed.isoformat()})
        conn.execute("COMMIT")
    return staging, commit


def run_baseline(size: int, jobs: int, directory: Path) -> dict:
    import sqlite3

    world = World(size, jobs)
    conn = sqlite3.connect(directory / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -32768")
    conn.execute("PRAGMA secure_delete = FAST")
    conn.executescript(_BASELINE_SCHEMA)
    setup_staging, setup_commit = _baseline_run(conn, world, False, T0)
    _reset_peak()
    staging, commit = _baseline_run(conn, world, True, T1)
    events = conn.execute("SELECT count(*) FROM events WHERE observed_at = ?", (T1.isoformat(),))
    return _result(
        staging, commit, setup_staging.wall + setup_commit.wall, {"all": events.fetchone()[0]}
    )


# -- driver ----------------------------------------------------------------------------------------


def run_postgres(size: int, jobs: int, directory: Path, url: str) -> dict:
    import psycopg

    schema = f"sw_bench_{size}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        try:
            return run_store(
                size, jobs, directory, f"{url}{'&' if '?' in url else '?'}schema={schema}"
            )
        finally:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _child(impl: str, size: int, jobs: int, url: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="store-bench-") as directory:
        if impl == "postgres":
            result = run_postgres(size, jobs, Path(directory), url)
        else:
            runner = run_store if impl == "store" else run_baseline
            result = runner(size, jobs, Path(directory))
    return {"impl": impl, "size": size, **result}


def _spawn(impl: str, size: int, jobs: int, url: str | None) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.store_bench",
        "--child",
        impl,
        "--sizes",
        str(size),
        "--jobs",
        str(jobs),
        *(["--postgres", url] if url else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--postgres", metavar="URL", help="also run the store on this server")
    parser.add_argument(
        "--child", choices=("store", "baseline", "postgres"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.child:
        print(json.dumps(_child(args.child, sizes[0], args.jobs, args.postgres)))
        return
    print(
        f"{'size':>9} {'impl':>8} {'staging s':>10} {'commit s':>9} {'total s':>8} {'cpu s':>6} "
        f"{'rows/s':>9} {'peak MB':>8} {'setup s':>8} {'ckpt s':>7}"
    )
    for size in sizes:
        impls = ("store", "baseline", *(("postgres",) if args.postgres else ()))
        results = {impl: _spawn(impl, size, args.jobs, args.postgres) for impl in impls}
        totals = {}
        for impl, result in results.items():
            totals[impl] = result["staging_seconds"] + result["commit_seconds"]
            print(
                f"{size:>9} {impl:>8} {result['staging_seconds']:>10.2f} "
                f"{result['commit_seconds']:>9.2f} {totals[impl]:>8.2f} "
                f"{result['cpu_seconds']:>6.2f} {size / totals[impl]:>9,.0f} "
                f"{result['peak_rss_mb']:>8.0f} {result['setup_seconds']:>8.1f} "
                f"{result['checkpoint_seconds']:>7.2f}"
            )
        print(
            f"{size:>9}    ratio store/baseline {totals['store'] / totals['baseline']:.2f}; "
            f"store events {json.dumps(results['store']['events'])}"
        )
        if args.postgres:
            same = results["postgres"]["events"] == results["store"]["events"]
            print(
                f"{size:>9}    ratio postgres/store {totals['postgres'] / totals['store']:.2f}; "
                f"same event counts: {same}"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
