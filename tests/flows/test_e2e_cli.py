"""`stagewatch sync` as a user runs it: a subprocess against the simulator served on loopback.

The subprocess talks to the session's Prefect harness through PREFECT_API_URL (the command's "server
in PREFECT_API_URL" mode), so the test can read back the artifacts it published.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from stagewatch import report
from stagewatch.cli import app
from stagewatch.simulator import World, serve_in_thread
from stagewatch.store import Store

KEY = "sk_e2e_cli_key_never_printed_77"
STAGEWATCH = str(Path(sys.executable).parent / "stagewatch")


@pytest.fixture
def served_world():
    world = World(
        seed=21,
        applications=80,
        jobs=5,
        api_key=KEY,
        scenarios=("normal", "setup-pending", "no-applications"),
    )
    base_url, stop = serve_in_thread(world)
    yield world, base_url
    stop()


def run_cli(args, tmp_path, key=KEY):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "KOMBO_", "STAGEWATCH_"))
    }
    env.update(
        {
            "KOMBO_API_KEY": key,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    return subprocess.run(
        [STAGEWATCH, "sync", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_sync_command_end_to_end(prefect_harness, served_world, tmp_path):
    world, base_url = served_world
    db = tmp_path / "sw.db"
    first = run_cli(["--base-url", base_url, "--db", str(db), "--page-size", "25"], tmp_path)
    assert first.returncode == 0, first.stderr
    for integration_id in world.integrations:
        assert integration_id in first.stdout
    assert "not ready" in first.stdout and "unsupported" in first.stdout

    world.advance(hours=24)
    normal = world.normal_integration_id
    second = run_cli(["-i", normal, "--base-url", base_url, "--db", str(db), "--json"], tmp_path)
    assert second.returncode == 0, second.stderr
    (outcome,) = json.loads(second.stdout)["integrations"]
    assert (outcome["integration_id"], outcome["status"], outcome["mode"]) == (
        normal,
        "synced",
        "incremental",
    )

    with Store(db, readonly=True) as store:
        status = {row["integration_id"]: row["last_run_status"] for row in store.status()}
        events = list(store.events(run_id=outcome["run_id"]))
        first_seen = list(store.events(integration_id=normal, kind="first_seen"))
    assert status == {
        normal: "succeeded",
        world.integration_for("setup-pending"): "not_ready",
        world.integration_for("no-applications"): "unsupported",
    }
    assert len(first_seen) == world.integration(normal).application_count
    assert sum(outcome["counts"].values()) == len(events) > 0
    assert {e["observed_at"] for e in events} == {"2026-01-06T00:00:00.000Z"}

    wrong = run_cli(["-i", normal, "--base-url", base_url, "--db", str(db)], tmp_path, key="sk_bad")
    assert wrong.returncode == 1
    (line,) = wrong.stderr.strip().splitlines()
    assert line.startswith(f"error: {normal}: PLATFORM.AUTHENTICATION_INVALID (HTTP 401)")

    with get_client(sync_client=True) as client:
        published = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[report.artifact_key(i) for i in world.integrations])
            )
        )
    assert len(published) == 3 + 1 + 1
    outputs = [r.stdout + r.stderr for r in (first, second, wrong)]
    for text in [*outputs, *(a.data for a in published), db.read_bytes().decode("latin-1")]:
        assert KEY not in text and "sk_bad" not in text


def test_sync_without_integrations_names_the_cause(monkeypatch):
    for name in ("KOMBO_BASE_URL", "STAGEWATCH_INTEGRATION_IDS"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["sync", "--base-url", "https://api.kombo.dev/v1"])
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: name at least one --integration-id (or set STAGEWATCH_INTEGRATION_IDS): Kombo "
        "has no endpoint that lists a key's integrations"
    )
