"""The funnels kept per job (migration 0012): which jobs are stale, and their rebuild.

commit_run marks a job stale in the run's transaction (diff.py), with the run's id. A rebuild
reads a few stale jobs' marks and computes their rows from the stays in a read transaction, which
blocks no sync (SQLite's readers do not block its writer); then, in a write transaction of a few
milliseconds, it replaces the kept rows of each job whose mark is still the one it read, and clears
that mark. A job marked again meanwhile stays stale, so job_funnel keeps computing it from its
stays: a rebuild never leaves a job's kept rows older than its stays, whatever runs beside it.
"""

from __future__ import annotations

from typing import Any

from stagewatch.store.connection import Database
from stagewatch.store.pg_schema import pg_temp
from stagewatch.store.schema import FUNNEL_JOBS_TABLE, KEPT_COLUMNS, KEPT_ROWS

# Jobs per rebuild step: at 10k stays a job, about 10 s of reading and 50 rows to write.
CHUNK_JOBS = 50

_PICK = (
    "INSERT INTO temp.sw_funnel_jobs (integration_id, job_key, marked) "
    "SELECT integration_id, job_key, marked FROM funnel_stale "
    "WHERE integration_id = ? AND job_key {op} ? ORDER BY job_key LIMIT ?"
)
_CLEAR = "DELETE FROM funnel_stale WHERE integration_id = ? AND job_key = ? AND marked = ?"
_DROP_KEPT = "DELETE FROM job_funnel_kept WHERE integration_id = ? AND job_key = ?"
_INSERT_KEPT = (
    f"INSERT INTO job_funnel_kept ({KEPT_COLUMNS}) "
    f"VALUES ({', '.join('?' for _ in KEPT_COLUMNS.split(','))})"
)

KeptRows = dict[str, list[tuple[Any, ...]]]  # each job's kept rows, by job_key
Computed = tuple[dict[str, int], KeptRows]


class Funnels:
    """The kept funnels of a store."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def stale_jobs(self, integration_id: str) -> int:
        """Jobs of the integration whose kept funnel rows are out of date."""
        return self._db.conn.execute(
            "SELECT count(*) FROM funnel_stale WHERE integration_id = ?", (integration_id,)
        ).fetchone()[0]

    def refresh(self, integration_id: str, *, chunk: int = CHUNK_JOBS) -> int:
        """Rebuild the kept funnel rows of the integration's stale jobs, `chunk` jobs a step, in
        one pass in job order (a job marked again behind the pass waits for the next refresh);
        returns how many jobs it rebuilt. Costs about 21 us per stay of those jobs
        (benchmarks/RESULTS.md); none stale, one cheap read."""
        rebuilt, after = 0, None
        while True:
            marks, rows = self.compute(integration_id, after, chunk)
            if not marks:
                return rebuilt
            rebuilt += self.apply(integration_id, marks, rows)
            after = max(marks)

    def compute(self, integration_id: str, after: str | None, chunk: int) -> Computed:
        """The marks of the next `chunk` stale jobs after `after` (all from the first with None),
        and their kept rows as the stays give them now, read in one read transaction."""
        with self._db.transaction(write=False) as conn:
            execute = self._temp_runner(conn)
            execute(FUNNEL_JOBS_TABLE)
            execute("DELETE FROM temp.sw_funnel_jobs")
            op = ">=" if after is None else ">"
            execute(_PICK.format(op=op), (integration_id, after or "", chunk))
            marks = dict(execute("SELECT job_key, marked FROM temp.sw_funnel_jobs").fetchall())
            rows: KeptRows = {key: [] for key in marks}
            if marks:
                for row in execute(KEPT_ROWS):
                    rows[row[1]].append(tuple(row))
            execute("DELETE FROM temp.sw_funnel_jobs")
        return marks, rows

    def apply(self, integration_id: str, marks: dict[str, int], rows: KeptRows) -> int:
        """Replace the kept rows of each job whose mark is still the one `compute` read, clearing
        it; returns how many. A job marked again, or rebuilt by another refresh, is left alone."""
        rebuilt = 0
        with self._db.transaction() as conn:
            if self._db.postgres:  # one rebuild's writes at a time: the marks decide, not the order
                self._db.lock_integration(conn, f"funnel:{integration_id}")
            for job_key, marked in sorted(marks.items()):
                if not conn.execute(_CLEAR, (integration_id, job_key, marked)).rowcount:
                    continue
                conn.execute(_DROP_KEPT, (integration_id, job_key))
                if rows[job_key]:
                    conn.executemany(_INSERT_KEPT, rows[job_key])
                rebuilt += 1
        return rebuilt

    def _temp_runner(self, conn):
        """conn.execute, with SQLite's `temp.` spelled as PostgreSQL's `pg_temp.` there."""
        if not self._db.postgres:
            return conn.execute
        return lambda sql, params=(): conn.execute(pg_temp(sql), params)
