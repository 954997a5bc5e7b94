"""The funnels kept per job (migration 0012): which jobs are stale, and their rebuild.

commit_run marks a job stale in the run's transaction (diff.py); `refresh` rebuilds the kept rows
of an integration's stale jobs in a transaction of its own, so a sync never waits on a funnel and
a crash between the two leaves the job stale, never wrong: job_funnel computes a stale job's rows
from its stays until the rebuild.
"""

from __future__ import annotations

from stagewatch.store.connection import Database
from stagewatch.store.pg_schema import pg_temp
from stagewatch.store.schema import REFRESH_FUNNELS

_STATEMENTS = [s.strip().replace("{where}", "WHERE integration_id = ?") for s in REFRESH_FUNNELS]
_WITH_PARAMETER = next(i for i, s in enumerate(REFRESH_FUNNELS) if "{where}" in s)


class Funnels:
    """The kept funnels of a store."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def stale_jobs(self, integration_id: str) -> int:
        """Jobs of the integration whose kept funnel rows are out of date."""
        return self._db.conn.execute(
            "SELECT count(*) FROM funnel_stale WHERE integration_id = ?", (integration_id,)
        ).fetchone()[0]

    def refresh(self, integration_id: str) -> int:
        """Rebuild the kept funnel rows of the integration's stale jobs; how many were stale.

        Costs about the stale jobs' stays (benchmarks/RESULTS.md); none stale, one cheap read.
        On PostgreSQL one refresh per integration runs at a time (an advisory lock), and a run
        that marks a job again meanwhile leaves it stale (the marks read are the ones cleared).
        """
        if not self.stale_jobs(integration_id):
            return 0
        with self._db.transaction() as conn:
            if self._db.postgres:
                self._db.lock_integration(conn, f"funnel:{integration_id}")
            stale = 0
            for i, statement in enumerate(_STATEMENTS):
                sql = pg_temp(statement) if self._db.postgres else statement
                cursor = conn.execute(sql, (integration_id,) if i == _WITH_PARAMETER else ())
                if i == _WITH_PARAMETER:
                    stale = cursor.rowcount
        return stale
