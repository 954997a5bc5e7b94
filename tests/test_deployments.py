"""`deployments/prefect.yaml` through Prefect's own loader and validators, and `serve.py` building
the same three deployments, so a broken entrypoint, schedule, parameter or limit fails here."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._config import _load_deploy_configs_and_actions
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.importtools import import_object
from prefect.utilities.templating import resolve_variables
from prefect.variables import Variable
from rich.console import Console

from flows.sync import SyncManyParams

ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"
IDS = ["greenhouse:AbC123", "lever:xyz789"]
SYNC_ENTRYPOINT = "flows/sync.py:sync_many"  # others are tested with their flows (tests/analytics)


def syncs(deployments: dict) -> dict:
    return {n: d for n, d in deployments.items() if _entrypoint(d) == SYNC_ENTRYPOINT}


def _entrypoint(deployment) -> str:
    return deployment["entrypoint"] if isinstance(deployment, dict) else deployment.entrypoint

# The deployments of sync-many; sync-on-change has tests of its own (tests/test_trigger_deployment.py).
SYNC_MANY = ["hourly-incremental", "weekly-full", "manual"]


@pytest.fixture
def loaded(monkeypatch):
    monkeypatch.chdir(ROOT)  # entrypoints are relative to the project root, as for `prefect deploy`
    PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_FILE.read_text()))  # raises if invalid
    configs, actions = _load_deploy_configs_and_actions(PREFECT_FILE, console=Console(quiet=True))
    return {config["name"]: config for config in configs}, actions


def test_prefect_yaml_deployments_load_and_validate(loaded, prefect_harness):
    configs, actions = loaded
    configs = syncs(configs)
    assert list(configs) == ["hourly-incremental", "weekly-full", "manual"]
    ((step, inputs),) = (item for step in actions["pull"] for item in step.items())
    import_object(step)
    assert (step, inputs) == (
        "prefect.deployments.steps.set_working_directory",
        {"directory": "{{ $STAGEWATCH_PROJECT_DIR }}"},
    )
    Variable.set("stagewatch_integration_ids", IDS, overwrite=True)
    modes = {}
    for name, config in configs.items():
        flow = load_flow_from_entrypoint(config["entrypoint"])
        assert flow.name == "sync-many"
        parameters = asyncio.run(resolve_variables(config["parameters"]))
        params = flow.validate_parameters(parameters)["params"]
        # The entrypoint is loaded as a file, so its model is a twin of SyncManyParams.
        assert (
            params.model_dump()
            == SyncManyParams(integration_ids=IDS, mode=params.mode).model_dump()
        )
        modes[name] = params.mode
        limit = ConcurrencyLimitConfig(**config["concurrency_limit"])
        assert limit.limit == 1
        schedules = [
            _schedule_config_to_deployment_schedule(s) for s in config.get("schedules", [])
        ]
        config["built_schedules"] = [s["schedule"] for s in schedules]
    assert modes == {
        "hourly-incremental": "incremental",
        "weekly-full": "full",
        "manual": "incremental",
    }
    assert [s.cron for s in configs["hourly-incremental"]["built_schedules"]] == ["0 * * * *"]
    assert [s.cron for s in configs["weekly-full"]["built_schedules"]] == ["30 3 * * 0"]
    assert configs["manual"]["built_schedules"] == []


def test_served_deployments_match_prefect_yaml(loaded):
    from deployments.serve import build_deployments

    configs = syncs(loaded[0])
    served = syncs({d.name: d for d in build_deployments(IDS, db="/data/stagewatch.db")})
    assert list(served) == list(configs)
    for name in SYNC_MANY:
        deployment = served[name]
        config = configs[name]
        assert deployment.entrypoint == config["entrypoint"]
        assert deployment.concurrency_limit == 1
        assert (
            deployment.concurrency_options.collision_strategy.value
            == (config["concurrency_limit"]["collision_strategy"])
        )
        crons = [s.schedule.cron for s in deployment.schedules or []]
        assert crons == [s["cron"] for s in config.get("schedules", [])]
        assert deployment.parameters["params"] == {
            "integration_ids": IDS,
            "db": "/data/stagewatch.db",
            "mode": config["parameters"]["params"]["mode"],
        }
        assert deployment.enforce_parameter_schema


def test_served_deployments_reject_bad_integration_ids():
    from deployments.serve import build_deployments

    with pytest.raises(ValueError, match="integration_ids"):
        build_deployments(["{{ prefect.variables.unset }}"])


def test_the_clients_retry_notes_reach_a_runs_logs():
    """With the extra-logger setting every entry point uses, a retry note from the client passes
    the `stagewatch` logger's level and reaches Prefect's API handler (a fresh interpreter: Prefect
    configures logging once, on import)."""
    code = (
        "import logging\n"
        "import flows.sync\n"
        "log = logging.getLogger('stagewatch.kombo.client')\n"
        "handlers = [type(h).__name__ for h in logging.getLogger('stagewatch').handlers]\n"
        "print(log.isEnabledFor(logging.INFO), log.isEnabledFor(logging.DEBUG), *handlers)\n"
    )
    env = {**os.environ, "PREFECT_LOGGING_EXTRA_LOGGERS": "stagewatch"}
    env.pop("PREFECT_LOGGING_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert done.stdout.split() == ["True", "False", "APILogHandler"]
