"""A real Prefect server with its UI, the served deployments and the simulator, all on loopback, and
Debian's Chromium driven by Playwright to look at what a reviewer sees.

`running_stack` starts the lot once per session: `prefect server start` on a free port with a
temporary PREFECT_HOME, `python -m deployments.serve` (the production entry point) pointed at the
simulator, then two runs of the manual deployment: a baseline of the normal integration, and, a few
simulated days later, a full run of a normal, a not-ready, an unsupported and a bogus integration.
Every wait is on an event (a line in a process's output, a run reaching a final state), not a sleep.

Without /usr/bin/chromium or Playwright the tests here are skipped with the reason, which pytest's
summary lists (-ra) and a last line repeats (`make test` installs Chromium when it runs as root).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Screenshots go to a scratch directory, so `make test` leaves the tree as it found it; set
# STAGEWATCH_SCREENSHOTS=docs/screenshots to refresh the committed ones (docs/screenshots/README.md).
SCREENSHOTS = Path(
    os.environ.get("STAGEWATCH_SCREENSHOTS")
    or Path(tempfile.gettempdir()) / "stagewatch-screenshots"
)
CHROMIUM = "/usr/bin/chromium"
# Closed network: no QUIC, no background fetches, no component updates; no sandbox as root.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The UI asks an analytics host for its config: no name but loopback resolves. (Playwright's
    # request routing would do it too, but routing turns the HTTP cache off.)
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
VIEWPORT = {"width": 1400, "height": 900}
HOST = "127.0.0.1"
API_KEY = "sk_browser_tests_simulator_only"
BOGUS_ID = "greenhouse:AAAAAAAAAAAAAAAAAAAAAAAA"
MANUAL = "sync-many/manual"
# Small pages so the normal integration's listing passes the progress artifact's 20-page mark.
PAGE_SIZE = 10
APPLICATIONS = 300
ADVANCE_HOURS = 72  # enough simulated activity for moves, hires, declines, job changes, deletions
START_TIMEOUT = 90.0
RUN_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"{CHROMIUM} is missing: `make test` installs it as root (apt-get install -y "
            "chromium); otherwise install it by hand"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: `make install` installs the dev extra"
    return None


def pytest_collection_modifyitems(config, items):
    # Skipped at collection, so no server starts for tests that cannot look at it.
    reason = skip_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=f"browser tests skipped: {reason}"))


def pytest_terminal_summary(terminalreporter):
    reason = skip_reason()
    if reason:
        terminalreporter.write_line(f"BROWSER TESTS SKIPPED: {reason}", yellow=True, bold=True)


class Service:
    """A child process in its own process group whose output goes to a log file; `ready` is set
    when a line matches `marker`, so callers wait on an event rather than poll."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, marker: str):
        self.name = name
        self.log = log
        self.ready = threading.Event()
        self._marker = re.compile(marker)
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: teardown reaches the runs it starts
        )
        self._pump = threading.Thread(target=self._copy_output, name=f"{name}-log", daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        # Drained continuously: a full pipe would block the served runs' logging.
        with self.log.open("wb") as out:
            for line in self.process.stdout:
                out.write(line)
                out.flush()
                if not self.ready.is_set() and self._marker.search(line.decode(errors="replace")):
                    self.ready.set()
        self.ready.set()  # EOF: wake the waiter, who then sees the process has exited

    def wait_ready(self, timeout: float) -> None:
        if not self.ready.wait(timeout) or self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} did not start within {timeout:.0f} s:\n{tail}")

    def stop(self) -> None:
        """SIGTERM to the group (Prefect's runner and uvicorn stop gracefully on it), then
        SIGKILL if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        self._pump.join(STOP_TIMEOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    ui_url: str
    api_url: str
    world: Any
    ids: dict[str, str]
    logs: Path
    runs: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A Prefect client on this server, whatever other fixtures set PREFECT_API_URL to."""
        from prefect import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings({PREFECT_API_URL: self.api_url}),
            get_client(sync_client=True) as client,
        ):
            yield client

    def run_manual(self, integration_ids: list[str], **params: Any) -> Any:
        """Run the manual deployment as the UI's form would, and return it once it is final."""
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            run = run_deployment(
                MANUAL,
                parameters={"params": {"integration_ids": integration_ids, **params}},
                timeout=RUN_TIMEOUT,
                poll_interval=1,
            )
        if not run.state or not run.state.is_final():
            raise RuntimeError(
                f"{MANUAL} run {run.id} not final after {RUN_TIMEOUT:.0f} s; logs in {self.logs}"
            )
        return run


def _environment(home: Path, api_url: str) -> dict[str, str]:
    # The child processes see only this test's Prefect, Kombo and stagewatch settings.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "KOMBO_", "STAGEWATCH_"))
    }
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            # The served hourly and weekly schedules must not add runs while the tests look.
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
            # uvicorn's "Application startup complete" is the server's ready line.
            "PREFECT_SERVER_LOGGING_LEVEL": "INFO",
        }
    )
    return env


@contextlib.contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    from stagewatch.simulator import World, serve_in_thread

    port = free_port()
    ui_url = f"http://{HOST}:{port}"
    api_url = f"{ui_url}/api"
    home = workdir / "prefect-home"
    home.mkdir()
    env = _environment(home, api_url)
    world = World(
        seed=17,
        applications=APPLICATIONS,
        jobs=8,
        api_key=API_KEY,
        scenarios=("normal", "setup-pending", "no-applications"),
    )
    ids = {
        "normal": world.normal_integration_id,
        "not-ready": world.integration_for("setup-pending"),
        "unsupported": world.integration_for("no-applications"),
        "bogus": BOGUS_ID,
    }
    services: list[Service] = []
    stop_simulator = None
    try:
        server = Service(
            "prefect server",
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                HOST,
                "--port",
                str(port),
            ],
            env,
            workdir / "server.log",
            # Logged once the socket listens ("Application startup complete" comes before it,
            # and a request then was refused).
            r"Uvicorn running on",
        )
        services.append(server)
        base_url, stop_simulator = serve_in_thread(world)
        server.wait_ready(START_TIMEOUT)
        httpx.get(f"{api_url}/health", timeout=10).raise_for_status()
        serve = Service(
            "deployments.serve",
            [sys.executable, "-m", "deployments.serve"],
            env
            | {
                "KOMBO_API_KEY": API_KEY,
                "KOMBO_BASE_URL": base_url,
                "STAGEWATCH_DB": str(workdir / "stagewatch.db"),
                "STAGEWATCH_INTEGRATION_IDS": ids["normal"],
                "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            },
            workdir / "serve.log",
            r"being served",
        )
        services.append(serve)
        serve.wait_ready(START_TIMEOUT)
        stack = Stack(ui_url=ui_url, api_url=api_url, world=world, ids=ids, logs=workdir)
        stack.runs["baseline"] = stack.run_manual([ids["normal"]], mode="full", page_size=PAGE_SIZE)
        world.advance(hours=ADVANCE_HOURS)
        stack.runs["review"] = stack.run_manual(
            [ids["normal"], ids["not-ready"], ids["unsupported"], ids["bogus"]],
            mode="full",
            page_size=PAGE_SIZE,
        )
        yield stack
    finally:
        for service in reversed(services):
            service.stop()
        if stop_simulator is not None:
            stop_simulator()


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("browser-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped, so Playwright's event loop is gone before other modules run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def browser_context(browser, stack) -> Iterator[Any]:
    """One context per module at 1400x900 on the server's UI: its pages share the HTTP cache, so
    a test does not fetch the UI's 75 scripts again."""
    context = browser.new_context(viewport=VIEWPORT, base_url=stack.ui_url)
    context.set_default_timeout(60_000)  # the UI under a loaded 2-core machine
    yield context
    context.close()


@pytest.fixture
def page(browser_context) -> Iterator[Any]:
    page = browser_context.new_page()
    yield page
    page.close()


def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


# The run's log view loads more lines as its box scrolls: scroll until the pattern shows.
SCROLL_LOG_UNTIL = """pattern => { const log = document.querySelector('[role=log]');
  if (!log) return false;
  if (new RegExp(pattern).test(log.innerText)) return true;
  log.scrollBy(0, 300);
  return false; }"""


def find_in_log(page, pattern: str) -> None:
    """Wait until the log shows a line matching `pattern`, from the top of its box."""
    page.get_by_role("log").evaluate("log => { log.scrollTop = 0; }")
    page.wait_for_function(SCROLL_LOG_UNTIL, arg=pattern, polling=200)
