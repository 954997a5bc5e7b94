"""The simulator over real loopback HTTP: uvicorn in a thread, and the `stagewatch simulator` CLI."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from stagewatch.simulator import FaultConfig, SimulatorTransport, World, serve_in_thread

KEY = "sk_http"


def make_world() -> World:
    return World(seed=12, applications=150, jobs=5, api_key=KEY)


@pytest.fixture
def serve():
    stops = []

    def start(world: World, faults: FaultConfig | None = None) -> str:
        base_url, stop = serve_in_thread(world, faults)
        stops.append(stop)
        return base_url

    yield start
    for stop in stops:
        stop()


def kombo(base_url: str, transport=None, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        transport=transport,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=timeout,
    )


def test_http_and_in_process_answers_are_the_same_bytes(serve):
    served, local = make_world(), make_world()
    base_url = serve(served)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
    over_http = kombo(base_url)
    in_process = kombo("https://api.kombo.dev/v1", SimulatorTransport(local))
    headers = {"X-Integration-Id": served.normal_integration_id}

    def exchange(client: httpx.Client) -> list[tuple[int, bytes]]:
        answers = []
        cursor = None
        for _ in range(3):
            params = {"page_size": 50} | ({"cursor": cursor} if cursor else {})
            page = client.get("/ats/applications", params=params, headers=headers)
            answers.append((page.status_code, page.content))
            cursor = page.json()["data"]["next"]
        answers.append(
            (client.post("/_sim/advance", params={"hours": 48}).status_code, b"advanced")
        )
        changed = client.get(
            "/ats/applications",
            params={"updated_after": "2026-01-06T00:00:00.000Z", "include_deleted": "true"},
            headers=headers,
        )
        answers.append((changed.status_code, changed.content))
        answers.append((client.get("/ats/jobs", params={"page_size": 1}).status_code, b""))
        return answers

    http_answers = exchange(over_http)
    assert http_answers == exchange(in_process)
    assert [status for status, _ in http_answers] == [200, 200, 200, 200, 200, 400]
    stats = over_http.get(base_url.removesuffix("/v1") + "/_sim/stats").json()
    assert stats["requests"] == {"GET /ats/applications": 4, "GET /ats/jobs": 1}
    assert stats["in_flight"] == 0


def test_faults_over_http_cut_connections_truncate_bodies_and_really_delay(serve):
    world = make_world()
    headers = {"X-Integration-Id": world.normal_integration_id}
    intact = kombo("https://api.kombo.dev/v1", SimulatorTransport(make_world())).get(
        "/ats/applications", headers=headers
    )

    cut = serve(world, FaultConfig(rate=1.0, kinds=["disconnect"]))
    with pytest.raises(httpx.RemoteProtocolError):
        kombo(cut).get("/ats/applications", headers=headers)

    half = serve(make_world(), FaultConfig(rate=1.0, kinds=["truncated"]))
    truncated = kombo(half).get("/ats/applications", headers=headers)
    assert truncated.status_code == 200
    assert truncated.content == intact.content[: len(intact.content) // 2]

    slow = serve(make_world(), FaultConfig(rate=1.0, kinds=["timeout"], slow_seconds=0.3))
    with pytest.raises(httpx.ReadTimeout):
        kombo(slow, timeout=0.05).get("/check-api-key")


def test_the_cli_serves_on_loopback_announces_each_integration_and_advances_time():
    script = Path(sys.executable).parent / "stagewatch"
    options = f"--port 0 --seed 3 --api-key {KEY} --applications 40 --jobs 3"
    options += " --normal-integrations 2 --advance-every-seconds 0.2 --advance-hours 24"
    command = [str(script), "simulator", *options.split()]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline().strip() for _ in range(7)]
        serving = proc.stderr.readline().strip()
        port = re.fullmatch(r"serving Kombo's API at http://127\.0\.0\.1:(\d+)/v1", serving)
        assert port, serving
        expected = World(
            seed=3,
            applications=40,
            jobs=3,
            api_key=KEY,
            scenarios=[
                "normal",
                "normal",
                "no-applications",
                "no-outcomes",
                "no-stages",
                "setup-pending",
                "permission-missing",
            ],
        ).integrations
        assert lines == [f"integration {i} {s}" for i, s in expected.items()]
        client = kombo(f"http://127.0.0.1:{port.group(1)}/v1")
        page = client.get(
            "/ats/applications",
            params={"page_size": 5},
            headers={"X-Integration-Id": next(iter(expected))},
        )
        assert page.status_code == 200
        assert len(page.json()["data"]["results"]) == 5
        advanced = proc.stderr.readline().strip()  # the timer moves simulated time by itself
        assert re.fullmatch(r"advanced to 2026-01-06T00:00:00\.000Z: \d+ changes", advanced)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean shutdown
        proc.wait(10)
    assert proc.returncode == 0
    assert KEY not in proc.stdout.read() + proc.stderr.read()


def test_the_cli_refuses_a_non_loopback_host():
    script = Path(sys.executable).parent / "stagewatch"
    result = subprocess.run(
        [str(script), "simulator", "--host", "0.0.0.0", "--api-key", KEY],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    words = " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())
    assert "Invalid value for '--host': the simulator serves loopback only; got '0.0.0.0'" in words
