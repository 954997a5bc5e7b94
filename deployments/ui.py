"""`make ui`: a local Prefect server with its UI, the simulator on loopback and the served deployments
pointed at it, all on 127.0.0.1. Ctrl-C stops the three.

Simulated time moves six hours every 30 seconds and the incremental deployment runs every minute,
so the UI fills with runs and `stage-changes-*` artifacts within a few minutes. SIGTERM works too:
Prefect's runner turns it into a graceful stop, and the cleanup below runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx

HOST = "127.0.0.1"
PORT = 4200
UI_API_KEY = "sk_ui_simulator_only"
ADVANCE_EVERY_SECONDS = 30.0
ADVANCE_HOURS = 6.0
SYNC_EVERY = timedelta(minutes=1)
SERVER_START_TIMEOUT = 90.0


def _wait_for_server(api_url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"prefect server exited with {server.returncode}; see {log}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    raise SystemExit(
        f"prefect server did not answer within {SERVER_START_TIMEOUT:.0f} s; see {log}"
    )


def _advance_forever(world, stop: threading.Event) -> None:
    while not stop.wait(ADVANCE_EVERY_SECONDS):
        world.advance(hours=ADVANCE_HOURS)


def main() -> None:
    home = Path(".prefect").resolve()
    output = Path("demo-output").resolve()
    home.mkdir(exist_ok=True)
    output.mkdir(exist_ok=True)
    api_url = f"http://{HOST}:{PORT}/api"
    os.environ.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "KOMBO_API_KEY": UI_API_KEY,  # the simulator's key, for the served runs only
        }
    )
    log = home / "server.log"
    with log.open("ab") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                HOST,
                "--port",
                str(PORT),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stop_advancing = threading.Event()
    stop_simulator = None
    try:
        _wait_for_server(api_url, server, log)
        from deployments.serve import serve_deployments
        from stagewatch.simulator import World, serve_in_thread

        world = World(seed=7, applications=2_000, jobs=40, api_key=UI_API_KEY)
        base_url, stop_simulator = serve_in_thread(world)
        threading.Thread(target=_advance_forever, args=(world, stop_advancing), daemon=True).start()
        print(
            f"\nPrefect UI: http://{HOST}:{PORT}   (server log: {log})\n"
            f"Simulated Kombo: {base_url}, {len(world.integrations)} integrations; "
            f"+{ADVANCE_HOURS:g} simulated hours every {ADVANCE_EVERY_SECONDS:g} s.\n"
            "Deployments: hourly-incremental (every minute here), weekly-full, manual; the\n"
            "simulated integration without permission is left out so scheduled runs stay green.\n"
            "Ctrl-C stops the server, the simulator and the deployments.\n",
            flush=True,
        )
        serve_deployments(
            [i for i, scenario in world.integrations.items() if scenario != "permission-missing"],
            base_url=base_url,
            db=str(output / "ui-stagewatch.db"),
            incremental_every=SYNC_EVERY,
        )
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this command ends; the cleanup below runs either way
    finally:
        stop_advancing.set()
        if stop_simulator is not None:
            stop_simulator()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print("stopped the Prefect server, the simulator and the deployments", flush=True)


if __name__ == "__main__":
    main()
