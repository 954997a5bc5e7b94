"""`sync-on-change`: the same deployment in `prefect.yaml` and `serve.py`, and, on the session's
Prefect test server, a real `kombo.data-changed` event (made by the receiver from a signed
webhook) starting a run of exactly the integration it names, with parameters the flow accepts."""

from __future__ import annotations

import contextlib
import json

import pytest
import yaml
from prefect.cli.deploy._triggers import _initialize_deployment_triggers
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.exceptions import ObjectNotFound

from deployments import receiver
from deployments.serve import build_deployments, ensure_on_change_limit, on_change_deployment
from flows.sync import ON_CHANGE_LIMIT, ON_CHANGE_SLOTS, SyncIntegrationParams, sync_on_change
from stagewatch.webhooks import parse_delivery, perform, plan
from tests.flows.flowkit import wait_on_flow_run_events
from tests.flows.test_deployments import IDS, PREFECT_FILE, ROOT, loaded  # noqa: F401 (a fixture)

GREENHOUSE = "greenhouse:CBNMt7dSNCzBdnRTx87dev4E"
LEVER = "lever:8eTZkF3xMDd3o5mWUvYgJxQy"


def data_changed(delivery_id: str, integration_id: str, models: list[str]) -> bytes:
    data = {
        "integration_id": integration_id,
        "integration_tool": integration_id.split(":")[0],
        "integration_category": "ATS",
        "changed_models": [{"name": name} for name in models],
    }
    return json.dumps({"id": delivery_id, "type": "data-changed", "data": data}).encode()


def test_prefect_yaml_and_serve_define_the_same_sync_on_change(loaded):  # noqa: F811
    configs, _ = loaded
    config = configs["sync-on-change"]
    served = {d.name: d for d in build_deployments(IDS)}["sync-on-change"]
    assert (served.entrypoint, config["entrypoint"]) == ("flows/sync.py:sync_on_change",) * 2
    # No deployment limit (it would hold runs before they could coalesce): the flow takes a slot
    # of the global limit once it is the run that syncs.
    assert served.concurrency_limit is None and "concurrency_limit" not in config
    assert ON_CHANGE_LIMIT in served.description
    assert " ".join(config["description"].split()) == served.description
    assert served.schedules == [] and "schedules" not in config
    (from_yaml,) = _initialize_deployment_triggers("sync-on-change", config["triggers"])
    (from_serve,) = served.triggers
    assert isinstance(from_yaml, DeploymentEventTrigger)
    assert from_yaml.model_dump() == from_serve.model_dump()
    assert from_yaml.parameters == {
        "params": {
            "integration_id": "{{ event.payload.integration_id }}",
            "mode": "incremental",
            "jobs_cache_hours": 0,
        }
    }


def test_the_stack_deploys_the_same_sync_on_change_on_its_own_pool():
    def on_change(path):
        (deployment,) = (
            d for d in yaml.safe_load(path.read_text())["deployments"] if d["name"] == "sync-on-change"
        )
        return deployment

    stack, single = on_change(ROOT / "deployments/stack.yaml"), on_change(PREFECT_FILE)
    assert stack.pop("work_pool")["name"] == "stagewatch-stack"
    assert single.pop("work_pool")["name"] == "stagewatch"
    assert stack == single


def test_served_triggers_carry_the_served_database_and_kombo():
    deployment = on_change_deployment(base_url="http://127.0.0.1:9/v1", db="/data/s.db")
    (trigger,) = deployment.triggers
    assert trigger.parameters["params"] == {
        "integration_id": "{{ event.payload.integration_id }}",
        "mode": "incremental",
        "jobs_cache_hours": 0,
        "base_url": "http://127.0.0.1:9/v1",
        "db": "/data/s.db",
    }
    with pytest.raises(ValueError, match="base_url"):
        on_change_deployment(base_url="not a url")


def test_serving_creates_the_global_limit_once_and_keeps_its_size(prefect_harness):
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectNotFound):
            client.delete_global_concurrency_limit_by_name(ON_CHANGE_LIMIT)
        try:
            assert ensure_on_change_limit() is True
            created = client.read_global_concurrency_limit_by_name(ON_CHANGE_LIMIT)
            assert (created.limit, created.active) == (ON_CHANGE_SLOTS, True)
            client.update_global_concurrency_limit(
                ON_CHANGE_LIMIT, GlobalConcurrencyLimitUpdate(limit=9)
            )
            assert ensure_on_change_limit() is False  # an operator's size stays
            assert client.read_global_concurrency_limit_by_name(ON_CHANGE_LIMIT).limit == 9
        finally:
            client.delete_global_concurrency_limit_by_name(ON_CHANGE_LIMIT)


def _runs(deployment_id, count: int, timeout: float = 60.0):
    """The deployment's runs once there are `count` (read again on each flow-run event)."""

    def read():
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
        return sorted(runs, key=lambda run: run.parameters["params"]["integration_id"])

    return wait_on_flow_run_events(read, lambda runs: len(runs) >= count, timeout)


def test_a_data_changed_webhook_starts_a_run_of_exactly_its_integration(
    prefect_harness, recorded_events, tmp_path
):
    db = str(tmp_path / "stagewatch.db")
    deployment_id = on_change_deployment(db=db).apply()
    effects = receiver.side_effects()
    for delivery_id, integration_id, models in [
        ("d-greenhouse", GREENHOUSE, ["ats_applications"]),
        ("d-lever", LEVER, ["ats_jobs", "ats_application_stages"]),
        ("d-candidates", GREENHOUSE, ["ats_candidates"]),  # ignored by the receiver: no event
    ]:
        perform(plan(parse_delivery(data_changed(delivery_id, integration_id, models))), effects)

    runs = _runs(deployment_id, 2)
    expected = [
        {"integration_id": i, "mode": "incremental", "jobs_cache_hours": 0, "db": db}
        for i in (GREENHOUSE, LEVER)
    ]
    assert [run.parameters for run in runs] == [{"params": params} for params in expected]
    for run in runs:
        assert run.created_by.type == "AUTOMATION"
        assert run.state.name == "Scheduled"
        params = sync_on_change.validate_parameters(run.parameters)["params"]
        assert params.model_dump() == SyncIntegrationParams(**run.parameters["params"]).model_dump()
    # The ignored webhook made no event, so no third run can follow.
    changed = [e.resource.id for e in recorded_events("kombo.data-changed")]
    assert changed == [f"kombo.integration.{i}" for i in (GREENHOUSE, LEVER)]
    assert len(_runs(deployment_id, 2)) == 2
