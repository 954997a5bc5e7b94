"""`make ui`: a local Prefect server with its UI, the simulator on loopback, the webhook receiver
and the served deployments, all on 127.0.0.1. Ctrl-C stops them all.

Simulated time moves six hours every 30 seconds. Each advance that changes an integration sends
Kombo's signed `data-changed` webhook to the receiver (`stagewatch webhooks`), which emits a
`kombo.data-changed` event to this Prefect server, and the `sync-on-change` deployment syncs that
integration: the UI fills with triggered runs and `stage-changes-*` artifacts within a minute or
two. The incremental deployment runs every ten minutes here, as the safety net. SIGTERM works
too: Prefect's runner turns it into a graceful stop, and the cleanup below runs.
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
RECEIVER_PORT = 8780
UI_API_KEY = "sk_ui_simulator_only"
# Shared by the simulator's sender and the receiver only; never a real Kombo secret.
UI_WEBHOOK_SECRET = "whsec_ui_simulator_only"
ADVANCE_EVERY_SECONDS = 30.0
ADVANCE_HOURS = 6.0
SYNC_EVERY = timedelta(minutes=10)
SERVER_START_TIMEOUT = 90.0
# A triggered run over the deployment's concurrency limit is retried this soon, not after 30 s.
SLOT_WAIT_SECONDS = "2"


def wait_until_healthy(url: str, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    raise SystemExit(f"{what} did not answer within {SERVER_START_TIMEOUT:.0f} s; see {log}")


def _start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_prefect_server(home: Path, port: int) -> subprocess.Popen:
    """`prefect server start` on loopback, its log in `home`; PREFECT_HOME comes from the
    environment."""
    env = os.environ | {
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": SLOT_WAIT_SECONDS
    }
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST]
    return _start([*command, "--port", str(port)], home / "server.log", env)


def start_receiver(output: Path, port: int, secret: str) -> tuple[str, subprocess.Popen]:
    """`stagewatch webhooks` as a user runs it, passing webhooks on to PREFECT_API_URL; its log
    and ledger in `output`. Returns the webhook URL and the process."""
    log = output / "ui-webhooks.log"
    env = os.environ | {
        "KOMBO_WEBHOOK_SECRET": secret,
        "STAGEWATCH_WEBHOOK_LEDGER": str(output / "ui-webhooks.db"),
    }
    stagewatch = str(Path(sys.executable).parent / "stagewatch")
    receiver = _start([stagewatch, "webhooks", "--host", HOST, "--port", str(port)], log, env)
    base = f"http://{HOST}:{port}"
    wait_until_healthy(f"{base}/healthz", receiver, "stagewatch webhooks", log)
    return f"{base}/kombo/webhooks", receiver


def _advance_forever(world, stop: threading.Event) -> None:
    while not stop.wait(ADVANCE_EVERY_SECONDS):
        world.advance(hours=ADVANCE_HOURS)


def run(home: Path, output: Path, stop_advancing: threading.Event, stops: list) -> None:
    """Simulator, sender and receiver, then the deployments served until interrupted."""
    from deployments.serve import serve_deployments
    from stagewatch.simulator import World, serve_in_thread
    from stagewatch.simulator.webhooks import WebhookSender

    webhook_url, receiver = start_receiver(output, RECEIVER_PORT, UI_WEBHOOK_SECRET)
    stops.append(lambda: stop(receiver))
    world = World(seed=7, applications=2_000, jobs=40, api_key=UI_API_KEY)
    base_url, stop_simulator = serve_in_thread(world)
    stops.append(stop_simulator)
    sender = WebhookSender(world, webhook_url, UI_WEBHOOK_SECRET)
    sender.start()
    stops.append(sender.close)
    threading.Thread(target=_advance_forever, args=(world, stop_advancing), daemon=True).start()
    print(
        f"\nPrefect UI: http://{HOST}:{PORT}   (server log: {home / 'server.log'})\n"
        f"Simulated Kombo: {base_url}, {len(world.integrations)} integrations; "
        f"+{ADVANCE_HOURS:g} simulated hours every {ADVANCE_EVERY_SECONDS:g} s.\n"
        f"Webhooks: simulator -> {webhook_url} -> kombo.data-changed -> sync-on-change runs\n"
        f"  (receiver log: {output / 'ui-webhooks.log'}).\n"
        "Deployments: sync-on-change (each webhook), hourly-incremental (every ten minutes\n"
        "here), weekly-full, manual; the simulated integration without permission is left out\n"
        "of scheduled runs so they stay green.\n"
        "Ctrl-C stops the server, the receiver, the simulator and the deployments.\n",
        flush=True,
    )
    serve_deployments(
        [i for i, scenario in world.integrations.items() if scenario != "permission-missing"],
        base_url=base_url,
        db=str(output / "ui-stagewatch.db"),
        incremental_every=SYNC_EVERY,
    )


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
    server = start_prefect_server(home, PORT)
    stop_advancing = threading.Event()
    stops: list = []
    try:
        wait_until_healthy(f"{api_url}/health", server, "prefect server", home / "server.log")
        run(home, output, stop_advancing, stops)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this command ends; the cleanup below runs either way
    finally:
        stop_advancing.set()
        for stop_one in reversed(stops):
            stop_one()
        stop(server)
        print(
            "stopped the Prefect server, the receiver, the simulator and the deployments",
            flush=True,
        )


if __name__ == "__main__":
    main()
