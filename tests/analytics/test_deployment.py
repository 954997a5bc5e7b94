"""weekly-pipeline-report: declared in prefect.yaml, served by serve.py, the same both ways."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[2]
IDS = ["greenhouse:AbC123"]


def test_weekly_pipeline_report_in_prefect_yaml_and_serve(monkeypatch):
    from deployments.serve import build_deployments

    monkeypatch.chdir(ROOT)
    text = (ROOT / "deployments" / "prefect.yaml").read_text()
    PrefectYamlModel.model_validate(yaml.safe_load(text))
    (config,) = [
        d for d in yaml.safe_load(text)["deployments"] if d["name"] == "weekly-pipeline-report"
    ]
    flow = load_flow_from_entrypoint(config["entrypoint"])
    assert flow.name == "pipeline-report"
    params = config["parameters"]["params"] | {"integration_ids": IDS}
    assert flow.validate_parameters({"params": params})["params"].stuck_days == 14
    served = {d.name: d for d in build_deployments(IDS, db="/data/sw.db")}
    report = served["weekly-pipeline-report"]
    assert report.entrypoint == config["entrypoint"]
    assert (
        [s.schedule.cron for s in report.schedules]
        == ["0 6 * * 1"]
        == [s["cron"] for s in config["schedules"]]
    )
    assert report.parameters["params"] == {
        "integration_ids": IDS,
        "stuck_days": 14,
        "db": "/data/sw.db",
    }
    assert report.concurrency_limit == 1
