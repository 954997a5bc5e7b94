"""Run one contender as a subprocess and measure it: wall time, peak memory and CPU time.

Peak memory is polled with psutil every 50 ms, two ways: `rss_main` is the contender's own process
and `rss_tree` the sum over its whole process tree, so a helper process such as Prefect's ephemeral
API server shows up in the second but does not hide the first. A spike shorter than a poll can be
missed; memory that grows with the data set cannot.

CPU time (user + system seconds) is counted the same two ways: `cpu_main` as last polled (it misses
at most a poll's worth), `cpu_tree` from the kernel's account when the contender is reaped, which
includes every descendant it waited for, or the polled sum if that is more.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

POLL_SECONDS = 0.05
MB = 1024 * 1024


class ContenderFailed(RuntimeError):
    """A contender exited non-zero; the message carries its command and the tail of its output."""


@dataclass(frozen=True)
class Measured:
    wall: float
    rss_main_mb: float
    rss_tree_mb: float
    cpu_main: float
    cpu_tree: float
    stdout: str
    stderr: str


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _poll(root: psutil.Process, cpu: dict[int, float]) -> tuple[int, int]:
    """(root's RSS, the tree's total RSS) in bytes, and each process's CPU seconds into `cpu`;
    (0, 0) once the root has exited."""
    try:
        main = root.memory_info().rss
        cpu[root.pid] = _cpu(root)
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    total = main
    for proc in children:
        try:
            total += proc.memory_info().rss
            cpu[proc.pid] = _cpu(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # exited between listing and reading: its memory is gone anyway
    return main, total


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float = 900.0,
) -> Measured:
    """Run `cmd` to completion; raise `ContenderFailed` if it fails or outlives `timeout`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=dict(env or os.environ), cwd=cwd)
        root = psutil.Process(proc.pid)
        peak_main = peak_tree = 0
        cpu: dict[int, float] = {}  # last polled CPU seconds per pid of the tree
        done = threading.Event()

        def poll() -> None:
            nonlocal peak_main, peak_tree
            while not done.is_set():
                main, tree = _poll(root, cpu)
                peak_main = max(peak_main, main)
                peak_tree = max(peak_tree, tree)
                done.wait(POLL_SECONDS)

        def kill_tree() -> None:
            for child in root.children(recursive=True):
                child.kill()
            proc.kill()

        def kill_after_timeout() -> None:
            if not done.wait(timeout):
                kill_tree()

        poller = threading.Thread(target=poll, daemon=True)
        killer = threading.Thread(target=kill_after_timeout, daemon=True)
        poller.start()
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: leave no contender (or its server) running
            done.set()
            kill_tree()
            os.waitpid(proc.pid, 0)
            raise
        wall = time.perf_counter() - started
        done.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((stdout + "\n" + stderr).strip().splitlines()[-25:])
        raise ContenderFailed(
            f"{' '.join(cmd)} exited {proc.returncode} after {wall:.1f} s:\n{tail}"
        )
    return Measured(
        wall=wall,
        rss_main_mb=peak_main / MB,
        rss_tree_mb=peak_tree / MB,
        cpu_main=cpu.get(proc.pid, 0.0),
        cpu_tree=max(usage.ru_utime + usage.ru_stime, sum(cpu.values())),
        stdout=stdout,
        stderr=stderr,
    )
