"""`deployments/receiver.py` against the session's Prefect test server: the secret from the Secret
block or the environment, the integrations variable in both of its forms, and a delivery through
the real receiver ending as a Prefect event and a changed variable."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.variables import Variable

from deployments import receiver
from stagewatch.errors import StagewatchError
from stagewatch.webhooks import (
    SIGNATURE_HEADER,
    Ledger,
    create_app,
    event_id,
    merged_event_id,
    sign,
)
from tests.flows.test_trigger_deployment import data_changed
from tests.webhooks.test_webhooks_app import Client

ID = "greenhouse:CBNMt7dSNCzBdnRTx87dev4E"


@pytest.fixture
def variable(prefect_harness):
    """The integrations variable, removed before and after the test."""
    Variable.unset(receiver.INTEGRATIONS_VARIABLE)
    yield receiver.INTEGRATIONS_VARIABLE
    Variable.unset(receiver.INTEGRATIONS_VARIABLE)


@pytest.fixture
def secret_block(prefect_harness):
    def save(value):
        Secret(value=value).save(receiver.SECRET_BLOCK, overwrite=True)

    yield save
    Secret.delete(receiver.SECRET_BLOCK)


def created_body(delivery_id: str) -> bytes:
    data = {
        "id": ID,
        "tool": "greenhouse",
        "category": "ATS",
        "end_user": {
            "organization_name": "Acme, Inc.",
            "creator_email": "user@example.com",
            "origin_id": "36123",
        },
    }
    return json.dumps({"id": delivery_id, "type": "integration-created", "data": data}).encode()


def test_the_secret_comes_from_the_environment_without_a_block(prefect_harness):
    secret = receiver.resolve_webhook_secret({"KOMBO_WEBHOOK_SECRET": " whsec_env \n"})
    assert secret.get_secret_value() == "whsec_env"
    assert "whsec_env" not in repr(secret)


def test_the_secret_block_wins_over_the_environment(secret_block):
    secret_block("whsec_block")
    secret = receiver.resolve_webhook_secret({"KOMBO_WEBHOOK_SECRET": "whsec_env"})
    assert secret.get_secret_value() == "whsec_block"


def test_no_secret_anywhere_is_a_clear_error(prefect_harness):
    with pytest.raises(StagewatchError) as caught:
        receiver.resolve_webhook_secret({})
    assert str(caught.value) == (
        "no Kombo webhook secret: neither the Prefect Secret block 'kombo-webhook-secret' nor the "
        "environment variable KOMBO_WEBHOOK_SECRET is set; the receiver refuses to start without "
        "one"
    )


def test_a_secret_block_holding_json_is_refused(secret_block):
    secret_block({"not": "a string"})
    with pytest.raises(StagewatchError, match="does not hold a string"):
        receiver.resolve_webhook_secret({"KOMBO_WEBHOOK_SECRET": "whsec_env"})


def test_adding_and_removing_keeps_a_json_list_and_its_tags(variable):
    Variable.set(variable, ["lever:a1"], tags=["stagewatch"])
    receiver.add_integration(ID)
    receiver.add_integration(ID)  # a redelivery
    assert Variable.get(variable) == ["lever:a1", ID]
    receiver.remove_integration("lever:a1")
    receiver.remove_integration("lever:a1")
    assert Variable.get(variable) == [ID]
    with get_client(sync_client=True) as client:
        assert client.read_variable_by_name(variable).tags == ["stagewatch"]


def test_a_comma_separated_variable_stays_a_string(variable):
    Variable.set(variable, "lever:a1, personio:b2")
    receiver.add_integration(ID)
    assert Variable.get(variable) == f"lever:a1, personio:b2, {ID}"
    assert receiver.integration_ids() == ["lever:a1", "personio:b2", ID]


def test_a_missing_variable_is_created_as_a_list(variable):
    receiver.remove_integration(ID)
    assert Variable.get(variable) is None
    receiver.add_integration(ID)
    assert Variable.get(variable) == [ID]


def test_a_variable_of_another_shape_is_left_alone(variable):
    Variable.set(variable, {"ids": [ID]})
    with pytest.raises(StagewatchError, match="holds dict, not a list of integration ids"):
        receiver.add_integration("lever:a1")
    assert Variable.get(variable) == {"ids": [ID]}


def test_an_unreachable_prefect_is_a_retry_not_a_lost_event():
    """Prefect's events worker would only log the failed send; the receiver's worker must see it."""
    unreachable = temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"})
    refused = pytest.raises(receiver.EventNotSent, match=r"does not answer \(ConnectError\)")
    with unreachable, refused:
        receiver.emit_event(
            event="kombo.data-changed",
            resource={"prefect.resource.id": f"kombo.integration.{ID}"},
            payload={},
            id=event_id("d-1"),
        )


def test_a_delivery_becomes_a_prefect_event_and_a_listed_integration(
    variable, recorded_events, tmp_path
):
    """The real receiver with Prefect's side effects: integration-created, end to end."""
    body = created_body("Cbfk5sHtDxrSrJBRjsDtbaN9")
    with Ledger(tmp_path / "ledger.db") as ledger:
        app = create_app("whsec_e2e", ledger, receiver.side_effects(), run_worker=False)
        answer = Client(app).request(
            "POST",
            "/kombo/webhooks",
            content=body,
            headers={SIGNATURE_HEADER: sign("whsec_e2e", body)},
        )
        assert answer.json() == {"status": "accepted"}
        assert app.state.worker.run_pending() == 1
        assert ledger.counts() == {"done": 1}
    assert Variable.get(variable) == [ID]
    (event,) = recorded_events("kombo.")
    assert event.id == event_id("Cbfk5sHtDxrSrJBRjsDtbaN9")
    assert isinstance(event.id, uuid.UUID)
    assert (event.event, dict(event.resource), event.payload, event.related) == (
        "kombo.integration-created",
        {"prefect.resource.id": f"kombo.integration.{ID}"},
        {
            "delivery_id": "Cbfk5sHtDxrSrJBRjsDtbaN9",
            "integration_id": ID,
            "integration_tool": "greenhouse",
            "integration_category": "ATS",
        },
        [],
    )


def test_a_burst_through_the_real_receiver_is_one_prefect_event_per_integration(
    prefect_harness, recorded_events, tmp_path
):
    """Six signed data-changed webhooks for two integrations, then one worker pass: Prefect gets
    two `kombo.data-changed` events, each naming its integration's deliveries and models."""
    lever = "lever:8eTZkF3xMDd3o5mWUvYgJxQy"
    burst = [
        ("g-1", ID, "ats_applications"),
        ("l-1", lever, "ats_jobs"),
        ("g-2", ID, "ats_application_stages"),
        ("g-3", ID, "ats_applications"),
        ("l-2", lever, "ats_applications"),
        ("g-4", ID, "ats_candidates"),  # acknowledged and ignored: no change to merge
    ]
    with Ledger(tmp_path / "ledger.db") as ledger:
        app = create_app("whsec_burst", ledger, receiver.side_effects(), run_worker=False)
        client = Client(app)
        for delivery_id, integration_id, model in burst:
            body = data_changed(delivery_id, integration_id, [model])
            headers = {SIGNATURE_HEADER: sign("whsec_burst", body)}
            assert client.request("POST", "/kombo/webhooks", content=body, headers=headers)
        assert app.state.worker.run_pending() == 5
        assert ledger.counts() == {"done": 5, "ignored": 1}
    events = recorded_events("kombo.")
    assert [(e.event, e.resource.id, e.id, e.payload) for e in events] == [
        (
            "kombo.data-changed",
            f"kombo.integration.{ID}",
            merged_event_id(["g-1", "g-2", "g-3"]),
            {
                "delivery_id": "g-3",
                "integration_id": ID,
                "integration_tool": "greenhouse",
                "integration_category": "ATS",
                "changed_models": ["ats_applications", "ats_application_stages"],
                "delivery_ids": ["g-1", "g-2", "g-3"],
            },
        ),
        (
            "kombo.data-changed",
            f"kombo.integration.{lever}",
            merged_event_id(["l-1", "l-2"]),
            {
                "delivery_id": "l-2",
                "integration_id": lever,
                "integration_tool": "lever",
                "integration_category": "ATS",
                "changed_models": ["ats_jobs", "ats_applications"],
                "delivery_ids": ["l-1", "l-2"],
            },
        ),
    ]


# -- `stagewatch webhooks`, as a user runs it ---------------------------------------------------

STAGEWATCH = str(Path(sys.executable).parent / "stagewatch")
CLI_SECRET = "whsec_cli_never_printed_41"


def cli_env(tmp_path, **extra: str) -> dict[str, str]:
    api_url = PREFECT_API_URL.value()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "KOMBO_", "STAGEWATCH_"))
    }
    return env | {
        "PREFECT_API_URL": api_url or "",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "STAGEWATCH_DB": str(tmp_path / "data" / "stagewatch.db"),
        **extra,
    }


def test_the_command_refuses_to_start_without_a_secret(prefect_harness, tmp_path):
    done = subprocess.run(
        [STAGEWATCH, "webhooks", "--port", "0"],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: no Kombo webhook secret: neither the Prefect Secret block 'kombo-webhook-secret' "
        "nor the environment variable KOMBO_WEBHOOK_SECRET is set; the receiver refuses to start "
        "without one"
    )


def test_the_command_needs_a_prefect_server(tmp_path):
    env = cli_env(tmp_path, KOMBO_WEBHOOK_SECRET=CLI_SECRET)
    del env["PREFECT_API_URL"]
    done = subprocess.run(
        [STAGEWATCH, "webhooks"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "set PREFECT_API_URL=http://127.0.0.1:4200/api" in done.stderr


def test_the_command_receives_a_webhook_end_to_end(prefect_harness, variable, tmp_path):
    """A subprocess on port 0 with the ledger defaulting next to STAGEWATCH_DB: a signed
    integration-created is answered, recorded, and puts the integration into the variable."""
    (tmp_path / "data").mkdir()
    env = cli_env(tmp_path, KOMBO_WEBHOOK_SECRET=CLI_SECRET)
    process = subprocess.Popen(
        [STAGEWATCH, "webhooks", "--port", "0"], env=env, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        url = _wait_for(process, lines, r"Uvicorn running on (http://\S+)")
        body = created_body("cli-1")
        headers = {SIGNATURE_HEADER: sign(CLI_SECRET, body)}
        answer = httpx.post(f"{url}/kombo/webhooks", content=body, headers=headers, timeout=10)
        assert (answer.status_code, answer.json()) == (200, {"status": "accepted"})
        _wait_for(process, lines, r"webhook cli-1 \(integration-created\): done")
    finally:
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    output = "\n".join(lines) + rest
    assert process.returncode == 0, output
    assert f"ledger {tmp_path / 'data' / 'stagewatch-webhooks.db'}" in output
    assert CLI_SECRET not in output
    assert Variable.get(variable) == [ID]
    with Ledger(tmp_path / "data" / "stagewatch-webhooks.db") as ledger:
        assert ledger.counts() == {"done": 1}


def _wait_for(process: subprocess.Popen, lines: list[str], pattern: str) -> str:
    """Read the command's stderr until a line matches; returns the first group, if any."""
    for line in process.stderr:
        lines.append(line)
        match = re.search(pattern, line)
        if match:
            return match.group(1) if match.groups() else match.group(0)
    raise AssertionError(f"the command exited before {pattern!r}:\n{''.join(lines)}")
