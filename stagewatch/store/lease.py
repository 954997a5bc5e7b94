"""What a run's lock lease needs besides SQL: who holds it, and a thread that keeps it renewed.

A running sync holds its integration's lock as a lease: a `LeaseKeeper` renews it every tenth of
its length, and a lease left unrenewed past its expiry is taken over by the next run from any host.
Only a holder provably on this machine (same host name, boot and pid namespace) with a dead pid is
taken over at once: a host name alone proves nothing, as containers on two hosts can share one and
a restarted container reuses its name and its pids.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from functools import cache

from stagewatch.store.errors import DATABASE_ERRORS

DEFAULT_LEASE_SECONDS = 300.0
# Renewing ten times per lease leaves a live run nine missed renewals before anyone may take over.
RENEWALS_PER_LEASE = 10
LEASE_THREAD = "stagewatch-lease"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
PID_NAMESPACE = "/proc/self/ns/pid"

log = logging.getLogger(__name__)


@cache
def machine_id() -> str | None:
    """This boot of this machine and this process's pid namespace, as text; None when either
    cannot be read (not Linux, no /proc): then no holder is provably on this machine."""
    try:
        with open(BOOT_ID, encoding="ascii") as file:
            boot = file.read().strip()
        namespace = os.stat(PID_NAMESPACE).st_ino
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeaseKeeper:
    """Renews one run's lease every `interval` seconds from a daemon thread, on a connection of
    its own (sqlite3 connections stay in one thread), until `stop` or until a renewal finds the
    lease gone: the run's next write then raises `LeaseLostError`.

    `renew` is one renewal on the given connection, returning False once the lease is gone; the
    thread calls it, and so may a test, to drive the keeper without waiting."""

    def __init__(
        self,
        run_id: int,
        conn: sqlite3.Connection,
        renew: Callable[[sqlite3.Connection], bool],
        interval: float,
    ) -> None:
        self.run_id = run_id
        self._conn = conn
        self._renew = renew
        self._interval = interval
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"{LEASE_THREAD}-{run_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def renew(self) -> bool:
        """Renew the lease now; False once it is gone (or the keeper stopped)."""
        with self._lock:
            if self._stopped.is_set():
                return False
            return self._renew(self._conn)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                if not self.renew():
                    if not self._stopped.is_set():
                        log.warning("sync run %s lost its lock; it stops renewing", self.run_id)
                    return
            except DATABASE_ERRORS as exc:  # busy, or gone a moment: the next interval tries again
                log.warning(
                    "sync run %s could not renew its lease (%s; a long commit holds the "
                    "database, or it was gone a moment); it tries again in %.0f s",
                    self.run_id, exc, self._interval,
                )  # fmt: skip

    def stop(self) -> None:
        """Stop renewing (the lease then runs out unless the run ends first) and close the
        connection."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            self._conn.close()
