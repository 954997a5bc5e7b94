"""The drills' whole-stack runs: the `stagewatch sync` command in a subprocess, against a Prefect
server the drills start once (an ephemeral server per command would cost 5-12 s each, and a SIGKILLed
command would leave its server behind)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

BIN = Path(sys.executable).parent
STAGEWATCH = BIN / "stagewatch"
SERVER_START_SECONDS = 120.0
# Variables of ours and Prefect's that must come from the drill, never from the caller's shell.
_OWN_PREFIXES = ("KOMBO_", "STAGEWATCH_", "PREFECT_")
# A fast retry policy for loopback runs: faults still retry, but waits stay short.
FAST_RETRIES = {
    "STAGEWATCH_TIMEOUT": "2",
    "STAGEWATCH_INITIAL_DELAY": "0.02",
    "STAGEWATCH_MAX_DELAY": "0.2",
    "STAGEWATCH_MAX_TOTAL_WAIT": "30",
}


T = TypeVar("T")


def wait_until(
    process: subprocess.Popen, check: Callable[[], T], timeout: float, every: float
) -> T | None:
    """`check()`'s first true answer, asked every `every` seconds while `process` runs; None once
    the process has ended or `timeout` has passed. Between checks it waits on the process itself,
    so the process ending ends the wait at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        answer = check()
        if answer:
            return answer
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=every)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectServer:
    """`prefect server start` on loopback with its own PREFECT_HOME (scanned for the key later)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.log = home / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
        env |= {
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        return env

    def start(self) -> float:
        """Start and wait until healthy; returns the seconds it took."""
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log.open("wb") as log:
            command = ["server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
            self.process = subprocess.Popen(
                [str(BIN / "prefect"), *command, "--no-ui"],
                env=self.env(),
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait_until(self.process, self._healthy, SERVER_START_SECONDS, every=0.5):
            return time.monotonic() - started
        if self.process.poll() is not None:
            raise RuntimeError(f"prefect server exited: {self.log.read_text()[-2000:]}")
        self.stop()
        raise RuntimeError(f"prefect server not healthy after {SERVER_START_SECONDS:.0f} s")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop the server and any process it started, each by its own pid."""
        if self.process is None or self.process.poll() is not None:
            return
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        for child in children:
            if child.is_running():
                child.kill()


def sync_env(server: PrefectServer, key: str, **extra: str) -> dict[str, str]:
    return server.env() | {"PREFECT_API_URL": server.api_url, "KOMBO_API_KEY": key} | extra


@dataclass
class CliRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def sync_args(base_url: str, db: Path, *options: str) -> list[str]:
    return [str(STAGEWATCH), "sync", "--base-url", base_url, "--db", str(db), *options]


def spawn(args: list[str], env: dict[str, str], workdir: Path, name: str) -> subprocess.Popen:
    """Start a command with its output in `workdir/name.out|err` (the secret scan reads them)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / f"{name}.out").open("wb") as out, (workdir / f"{name}.err").open("wb") as err:
        return subprocess.Popen(args, env=env, cwd=workdir, stdout=out, stderr=err)


def finish(
    process: subprocess.Popen, workdir: Path, name: str, started: float, timeout: float = 180
) -> CliRun:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    return CliRun(
        args=list(process.args),
        returncode=process.returncode,
        stdout=(workdir / f"{name}.out").read_text(errors="replace"),
        stderr=(workdir / f"{name}.err").read_text(errors="replace"),
        seconds=time.monotonic() - started,
    )


def run(args: list[str], env: dict[str, str], workdir: Path, name: str) -> CliRun:
    started = time.monotonic()
    return finish(spawn(args, env, workdir, name), workdir, name, started)


def kill_hard(process: subprocess.Popen) -> int:
    """SIGKILL the command (and, by pid, anything it started); returns its exit status."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(30)
    for child in children:
        if child.is_running():
            child.kill()
    return process.returncode
