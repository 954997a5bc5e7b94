"""The store's errors and its run handle, shared by every part of the store."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

import psycopg

from stagewatch.errors import StagewatchError

# What a database driver raises: a busy file, a lost server, a statement refused.
DATABASE_ERRORS = (sqlite3.Error, psycopg.Error)


class StoreError(StagewatchError):
    """The database cannot be used as asked: missing, not a stagewatch store, misused run."""


class LockedError(StoreError):
    """Another live run holds the integration's lock."""

    def __init__(
        self,
        integration_id: str,
        run_id: int,
        pid: int,
        hostname: str,
        since: str,
        lease_expires_at: str,
    ):
        self.integration_id = integration_id
        self.run_id = run_id
        self.pid = pid
        self.hostname = hostname
        self.since = since
        self.lease_expires_at = lease_expires_at
        super().__init__(
            f"integration {integration_id!r} is locked by run {run_id} "
            f"(pid {pid} on {hostname}, started {since}, lease expires {lease_expires_at})"
        )

    @classmethod
    def held_by(cls, holder: sqlite3.Row) -> LockedError:
        return cls(
            holder["integration_id"],
            holder["run_id"],
            holder["pid"],
            holder["hostname"],
            holder["acquired_at"],
            holder["lease_expires_at"],
        )


class LeaseLostError(StoreError):
    """The run's lock was taken over (its lease ran out, or an operator released it): the run must
    stop without committing. `reason` names who took it over."""

    def __init__(self, run_id: int, integration_id: str, reason: str):
        self.run_id = run_id
        self.integration_id = integration_id
        self.reason = reason
        super().__init__(f"sync run {run_id} lost the lock of {integration_id!r}: {reason}")


@dataclass(frozen=True)
class Run:
    id: int
    integration_id: str
    mode: str
    started_at: datetime
    window_start: datetime | None
