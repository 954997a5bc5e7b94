"""The `import-tracked-applications` flow under the Prefect harness, against the simulator on
loopback, and its manual deployment in prefect.yaml and serve.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from prefect import get_client
from prefect.cli.deploy._config import _load_deploy_configs_and_actions
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.flows import load_flow_from_entrypoint
from rich.console import Console

from flows.imports import ImportParams, import_tracked_applications
from stagewatch.importer import artifact_key
from stagewatch.simulator import World, serve_in_thread
from stagewatch.store import Store
from tests.imports.conftest import KEY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(monkeypatch):
    world = World(seed=11, applications=40, jobs=3, api_key=KEY, scenarios=("normal",))
    base_url, stop = serve_in_thread(world)
    monkeypatch.setenv("KOMBO_API_KEY", KEY)
    yield world, base_url
    stop()


def read_artifact(key: str, state) -> str:
    """The artifact `key` the flow run of `state` published (each run adds a version)."""
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
            )
        )
    return artifact.data


def test_the_flow_imports_the_rows_and_publishes_the_results(prefect_harness, served, tmp_path):
    world, base_url = served
    integration_id = world.normal_integration_id
    backlog = world.integration(integration_id).backlog
    params = ImportParams(
        integration_id=integration_id,
        rows=[{"application_id": backlog[0].remote_id}, {"application_id": "555"}, {"x": "1"}],
        base_url=base_url,
        db=str(tmp_path / "sw.db"),
    )
    state = import_tracked_applications(params, return_state=True)
    assert (state.name, state.message) == ("NeedsAttention", "1 imported, 1 rejected, 1 invalid")
    results = state.result()
    assert [(r["line"], r["status"]) for r in results] == [
        (1, "imported"),
        (2, "rejected"),
        (3, "invalid"),
    ]
    markdown = read_artifact(artifact_key(integration_id), state)
    assert markdown.startswith("# Import of tracked applications\n")
    assert "| imported | 1 |" in markdown and "| rejected | 1 |" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| 1 |")]
    assert rows == [
        f"| 1 | imported | application\\_id\\={backlog[0].remote_id} | "
        f"{results[0]['application_id']} | - |"
    ]
    assert KEY not in markdown
    with Store(tmp_path / "sw.db") as store:
        entries = store.import_ledger().entries(integration_id)
    assert sorted(e["status"] for e in entries.values()) == ["imported", "rejected"]

    dry = import_tracked_applications(
        params.model_copy(update={"dry_run": True}), return_state=True
    )
    # The ledger says the first row is done; Kombo refused the second, so it would go again.
    assert (dry.name, dry.message) == ("NeedsAttention", "1 skipped, 1 would send, 1 invalid")
    stats = httpx.get(f"{base_url}/_sim/stats", timeout=10).json()
    assert stats["requests"] == {"POST /ats/import-tracked-application": 2}
    assert read_artifact(artifact_key(integration_id), dry).startswith("# Dry run: nothing sent\n")


def test_the_manual_deployment_in_prefect_yaml_and_serve_py(monkeypatch):
    from deployments.serve import build_import_deployment

    monkeypatch.chdir(ROOT)
    path = ROOT / "deployments" / "prefect.yaml"
    configs, _ = _load_deploy_configs_and_actions(path, console=Console(quiet=True))
    (config,) = [c for c in configs if c["name"] == "import-tracked-applications"]
    assert load_flow_from_entrypoint(config["entrypoint"]).name == "import-tracked-applications"
    assert "schedules" not in config and "parameters" not in config  # manual: rows per run
    served = build_import_deployment()
    assert (served.entrypoint, served.concurrency_limit) == (config["entrypoint"], 1)
    assert served.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert config["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert served.description == yaml.safe_load(path.read_text())["deployments"][-1]["description"]


def test_rows_are_required_and_tracked_at_must_be_kombos_format():
    with pytest.raises(ValueError, match="rows"):
        ImportParams(integration_id="greenhouse:a", rows=[])
    with pytest.raises(ValueError, match="tracked_at"):
        ImportParams(integration_id="greenhouse:a", rows=[{}], tracked_at="2026-01-01")
