"""The simulator's webhooks: integrations that come and go (world and control endpoints, same seed
same world), signed deliveries that validate against Kombo's webhook schemas and verify with the
receiver, retries, and end to end: an advance in the simulator becomes a recorded event."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from stagewatch.simulator import SimulatorTransport, World
from stagewatch.simulator.webhooks import WebhookSender
from stagewatch.webhooks import SIGNATURE_HEADER, Ledger, create_app, event_id, verify
from tests.spec import load_spec
from tests.webhooks.test_webhooks_app import served
from tests.webhooks.test_webhooks_ledger import Recorder

SECRET = "whsec_simulator_77"
KEY = "sk_sim_webhooks"
SCHEMAS = {
    "data-changed": "DataChangedWebhookPayload",
    "integration-created": "IntegrationCreatedWebhookPayload",
    "integration-deleted": "IntegrationDeletedWebhookPayload",
}


def world(seed: int = 5) -> World:
    return World(seed=seed, applications=120, jobs=6, api_key=KEY)


def validate(envelope: dict) -> None:
    """Against the spec's webhook schema for its type, formats (email, date-time) included."""
    spec = load_spec()
    webhook = spec["webhooks"][envelope["type"]]["post"]
    ref = webhook["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == f"#/components/schemas/{SCHEMAS[envelope['type']]}"
    schema = spec["components"]["schemas"][SCHEMAS[envelope["type"]]]
    Draft202012Validator(schema, format_checker=FormatChecker()).validate(envelope)


class Captured:
    """A transport standing for the receiver: records requests, answers `statuses` in turn."""

    def __init__(self, *statuses: int | Exception) -> None:
        self.requests: list[httpx.Request] = []
        self.statuses = list(statuses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        if isinstance(status, Exception):
            raise status
        return httpx.Response(status)

    @property
    def envelopes(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def sender_for(sim: World, captured: Captured, sleeps: list | None = None) -> WebhookSender:
    sender = WebhookSender(
        sim,
        "http://receiver.test/kombo/webhooks",
        SECRET,
        transport=httpx.MockTransport(captured),
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
    )
    sender.start()
    return sender


# -- integrations that come and go ---------------------------------------------------------------


def test_added_integrations_follow_from_the_seed_and_leave_the_rest_alone():
    plain, grown, again = world(), world(), world()
    assert list(plain.integrations) == list(grown.integrations)
    added = [grown.add_integration("normal"), grown.add_integration("no-stages")]
    assert [again.add_integration("normal"), again.add_integration("no-stages")] == added
    assert list(grown.integrations) == [*plain.integrations, *added]
    assert added[1].startswith("factorial:")
    grown.advance(24)
    plain.advance(24)
    for integration_id in plain.integrations:  # the older integrations changed the same way
        assert plain.integration(integration_id).app_log.next_seq == (
            grown.integration(integration_id).app_log.next_seq
        )


def test_control_endpoints_add_and_remove_integrations():
    sim = world()
    with httpx.Client(transport=SimulatorTransport(sim), base_url="http://sim/v1") as client:
        added = client.post("/_sim/integrations", params={"scenario": "no-outcomes"})
        assert added.status_code == 201
        new_id = added.json()["id"]
        assert added.json() == {"id": new_id, "scenario": "no-outcomes"}
        listed = client.get("/_sim/integrations").json()["integrations"]
        assert listed[-1] == {"id": new_id, "scenario": "no-outcomes"}
        headers = {"Authorization": f"Bearer {KEY}", "X-Integration-Id": new_id}
        assert client.get("/ats/jobs", headers=headers).status_code == 200

        assert client.delete(f"/_sim/integrations/{new_id}").json() == {"deleted": new_id}
        assert new_id not in sim.integrations
        assert client.get("/ats/jobs", headers=headers).status_code != 200
        assert client.delete(f"/_sim/integrations/{new_id}").status_code == 404
        bad = client.post("/_sim/integrations", params={"scenario": "haunted"})
        assert bad.status_code == 400
        assert "unknown scenario 'haunted'" in bad.json()["error"]["message"]


# -- what the simulator sends --------------------------------------------------------------------


def test_an_advance_sends_one_signed_data_changed_per_changed_integration():
    sim, captured = world(), Captured()
    sender = sender_for(sim, captured)
    sim.advance(48)
    assert sender.flush()
    sender.close()
    changed = {e["data"]["integration_id"] for e in captured.envelopes}
    with_data = {i for i in sim.integrations if sim.integration(i).application_count}
    assert changed == with_data  # the setup-pending and permission-missing ones have no data
    for request, envelope in zip(captured.requests, captured.envelopes, strict=True):
        validate(envelope)
        assert verify(SECRET, request.content, request.headers[SIGNATURE_HEADER])
        assert request.headers["content-type"] == "application/json"
        assert envelope["type"] == "data-changed"
        assert envelope["data"]["integration_category"] == "ATS"
        names = [m["name"] for m in envelope["data"]["changed_models"]]
        assert "ats_applications" in names and set(names) <= {
            "ats_jobs",
            "ats_application_stages",
            "ats_applications",
        }
    assert [status for _, _, status in sender.results] == [200] * len(captured.requests)


def test_an_advance_that_changes_nothing_sends_nothing():
    sim, captured = world(), Captured()
    sender = sender_for(sim, captured)
    sim.advance(0)
    sender.close()
    assert captured.requests == []


def test_integrations_joining_and_leaving_send_their_webhooks():
    sim, captured = world(), Captured()
    sender = sender_for(sim, captured)
    sim.advance(1)
    new_id = sim.add_integration("normal")
    sim.remove_integration(new_id)
    sender.close()
    created, deleted = captured.envelopes[-2:]
    for envelope in (created, deleted):
        validate(envelope)
    number = len(sim.integrations)  # the added one was the world's next
    end_user = {
        "organization_name": f"Simulated customer {number}",
        "creator_email": f"admin+{number}@example.com",
        "origin_id": str(36_000 + number),
    }
    assert created == {
        "id": created["id"],
        "type": "integration-created",
        "data": {"id": new_id, "tool": "greenhouse", "category": "ATS", "end_user": end_user},
    }
    assert deleted["data"] == created["data"] | {"deleted_at": "2026-01-05T01:00:00.000Z"}
    assert deleted["id"] != created["id"]


def test_the_same_seed_sends_the_same_bytes():
    bodies = []
    for _ in range(2):
        sim, captured = world(seed=9), Captured()
        sender = sender_for(sim, captured)
        sim.advance(12)
        sim.add_integration("no-stages")
        sender.close()
        bodies.append([r.content for r in captured.requests])
    assert bodies[0] == bodies[1]
    assert len(bodies[0]) > 1


@pytest.mark.parametrize(
    ("answers", "statuses", "sleeps"),
    [
        ([503, 502, 200], 3, [0.5, 1.0]),
        ([httpx.ConnectError("refused"), 200], 2, [0.5]),
        ([429, 408, 500, 503], 4, [0.5, 1.0, 2.0]),  # gives up after four attempts
        ([401], 1, []),  # a refusal that retrying cannot fix
    ],
)
def test_a_delivery_is_retried_a_few_times(answers, statuses, sleeps):
    sim, captured, slept = world(), Captured(*answers), []
    sender = sender_for(sim, captured, slept)
    sim.add_integration("normal")
    sender.close()
    assert len(captured.requests) == statuses
    assert len({r.content for r in captured.requests}) == 1  # the same delivery each time
    assert slept == sleeps
    last = answers[-1]
    assert sender.results[0][2] == (None if isinstance(last, Exception) else last)


# -- end to end ----------------------------------------------------------------------------------


def test_simulator_advance_to_receiver_to_recorded_event(tmp_path):
    """The simulator's sender over loopback to the real receiver; its worker's events recorded."""
    recorder, sim = Recorder(), world()
    with Ledger(tmp_path / "ledger.db") as ledger:
        app = create_app(SECRET, ledger, recorder.effects(), run_worker=False)
        with served(app) as url:
            sender = WebhookSender(sim, f"{url}/kombo/webhooks", SECRET)
            sender.start()
            sim.advance(6)
            new_id = sim.add_integration("normal")
            sim.remove_integration(new_id)
            assert sender.flush()
            sender.close()
        assert {status for _, _, status in sender.results} == {200}
        app.state.worker.run_pending()
        assert ledger.counts() == {"done": len(sender.results)}
    events = [call for call in recorder.calls if call[0] == "emit"]
    assert [e[1]["id"] for e in events] == [event_id(d) for d, _, _ in sender.results]
    normal = sim.normal_integration_id
    (normal_event,) = [e[1] for e in events if e[1]["payload"]["integration_id"] == normal]
    assert normal_event["event"] == "kombo.data-changed"
    assert normal_event["resource"] == {"prefect.resource.id": f"kombo.integration.{normal}"}
    assert recorder.calls[-4:] == [
        ("add", new_id),
        ("emit", events[-2][1]),
        ("remove", new_id),
        ("emit", events[-1][1]),
    ]
    assert [e[1]["event"] for e in events[-2:]] == [
        "kombo.integration-created",
        "kombo.integration-deleted",
    ]


STAGEWATCH = str(Path(sys.executable).parent / "stagewatch")


def test_the_simulator_command_sends_webhooks(tmp_path):
    """`stagewatch simulator --webhook-url`: control requests become deliveries to a receiver;
    on Ctrl-C the simulator delivers what it still holds before exiting."""
    recorder = Recorder()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMBO_", "STAGEWATCH_"))}
    with Ledger(tmp_path / "ledger.db") as ledger:
        app = create_app(SECRET, ledger, recorder.effects(), run_worker=False)
        with served(app) as url:
            args = ["--port", "0", "--applications", "60", "--jobs", "4", "--seed", "3"]
            args += ["--webhook-url", f"{url}/kombo/webhooks"]
            process = subprocess.Popen(
                [STAGEWATCH, "simulator", *args],
                env=env | {"KOMBO_API_KEY": KEY, "KOMBO_WEBHOOK_SECRET": SECRET},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                base_url = _serving_url(process)
                assert httpx.post(f"{base_url}/_sim/advance", params={"hours": 12}).is_success
                added = httpx.post(f"{base_url}/_sim/integrations").json()["id"]
            finally:
                process.send_signal(signal.SIGINT)
                process.communicate(timeout=30)
            assert process.returncode == 0
        app.state.worker.run_pending()
        deliveries = ledger.deliveries()
    assert {d["status"] for d in deliveries} == {"done"}
    assert [d["type"] for d in deliveries].count("data-changed") >= 1
    assert (deliveries[-1]["type"], deliveries[-1]["integration_id"]) == (
        "integration-created",
        added,
    )
    assert ("add", added) in recorder.calls


def _serving_url(process: subprocess.Popen) -> str:
    lines = []
    for line in process.stderr:
        lines.append(line)
        match = re.search(r"serving Kombo's API at (http://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("the simulator exited:\n" + "".join(lines))
