"""Does rebuilding kept funnels block a sync's commit? Time a writer's BEGIN IMMEDIATE meanwhile.

    python -m benchmarks.funnel_contention STORE

STORE is a SQLite store built by `python -m benchmarks.analytics_bench --db STORE` (kept: it is
reused as is). One job in ten is marked stale, a child process rebuilds them
(`Store.refresh_funnels`), and this process takes and releases the write lock every 50 ms until the
child is done, as a sync's commit would, printing the longest wait.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

from benchmarks.analytics_bench import INTEGRATION

REBUILD = (
    "import sys, time; from stagewatch.store import Store; store = Store(sys.argv[1]); "
    "started = time.perf_counter(); jobs = store.refresh_funnels(sys.argv[2]); "
    "print(f'rebuilt {jobs} jobs in {time.perf_counter() - started:.1f} s')"
)


def main(argv: list[str] | None = None) -> int:
    (db,) = argv if argv is not None else sys.argv[1:]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 120000")
    conn.execute(
        "INSERT INTO funnel_stale SELECT integration_id, job_id, 1 FROM jobs "
        "WHERE rowid % 10 = 0 ON CONFLICT DO NOTHING"
    )
    child = subprocess.Popen([sys.executable, "-c", REBUILD, db, INTEGRATION])
    time.sleep(0.5)  # the child opens the store and starts reading
    waits = []
    while child.poll() is None:
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        waits.append(time.perf_counter() - started)
        conn.execute("ROLLBACK")
        time.sleep(0.05)
    longest = max(waits, default=0.0) * 1000
    print(f"a writer took the lock {len(waits)} times meanwhile; longest wait {longest:.1f} ms")
    return child.returncode


if __name__ == "__main__":
    raise SystemExit(main())
