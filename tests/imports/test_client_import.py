"""`KomboClient.import_tracked_application` against the simulator: answers, error families, and
what is (never) sent again after a fault."""

from __future__ import annotations

import pytest
from kombo.models import PostAtsImportTrackedApplicationPositiveResponse

from stagewatch.kombo.errors import InputInvalidError, TransientError, UnsupportedError
from stagewatch.kombo.imports import IMPORT_PATH, ImportAnswer, ImportRowError
from stagewatch.simulator import FaultConfig, Simulator
from tests.imports.conftest import (
    body_validator,
    client_for,
    import_requests,
    spec_validator,
)

IMPORT = "/v1/ats/import-tracked-application"


def greenhouse_ids(remote_id: str) -> dict:
    return {"greenhouse": {"id_type": "application_id", "application_id": remote_id}}


def test_an_import_answers_the_kombo_id_it_will_list_after_the_next_sync(world):
    integ = world.integration(world.normal_integration_id)
    untracked = integ.backlog[0]
    client, transport, _, _ = client_for(world, integ.id)
    with client:
        answer = client.import_tracked_application(
            greenhouse_ids(untracked.remote_id), "2026-01-04T12:00:00.000Z"
        )
        assert answer == ImportAnswer(
            status="imported",
            application_id=answer.application_id,
            tracked_at="2026-01-04T12:00:00.000Z",
        )
        assert next(client.iter_application_pages(ids=[answer.application_id])).records == []
        world.advance(hours=1)
        (listed,) = next(client.iter_application_pages(ids=[answer.application_id])).records
    assert (listed.id, listed.remote_id) == (answer.application_id, untracked.remote_id)
    (sent,) = [body for method, path, body in transport.sent if path == IMPORT]
    assert sent == {"tracked_at": "2026-01-04T12:00:00.000Z", **greenhouse_ids(untracked.remote_id)}
    body_validator().validate(sent)


def test_already_tracked_is_an_answer_with_kombos_note(world):
    integ = world.integration(world.normal_integration_id)
    tracked_remote_id = "100003"  # a generated application: Kombo tracks it from its creation
    client, _, _, _ = client_for(world, integ.id)
    with client:
        first = client.import_tracked_application(greenhouse_ids(integ.backlog[1].remote_id))
        again = client.import_tracked_application(greenhouse_ids(integ.backlog[1].remote_id))
        tracked = client.import_tracked_application(greenhouse_ids(tracked_remote_id))
    assert first.status == "imported"
    assert again == ImportAnswer(
        status="already_tracked",
        note="This application is already tracked; its data arrives with the next sync.",
    )
    assert tracked == ImportAnswer(
        status="already_tracked", note="Kombo already tracks this application."
    )


def test_ids_the_ats_does_not_know_are_refused_with_kombos_message(world):
    client, _, _, _ = client_for(world, world.normal_integration_id)
    with client, pytest.raises(InputInvalidError) as raised:
        client.import_tracked_application(greenhouse_ids("31337"))
    assert raised.value.code == "PLATFORM.INPUT_INVALID"
    assert raised.value.message == (
        "No application in the greenhouse account matches {'application_id': '31337'}."
    )


def test_an_ats_without_import_answers_unsupported(world):
    integration_id = world.integration_for("no-stages")  # factorial
    client, _, _, _ = client_for(world, integration_id)
    with client, pytest.raises(UnsupportedError) as raised:
        client.import_tracked_application(greenhouse_ids("1"))
    assert raised.value.code == "INTEGRATION.ACTION_NOT_AVAILABLE"


def test_a_bad_shape_is_refused_before_anything_is_sent(world):
    client, transport, simulator, _ = client_for(world, world.normal_integration_id)
    with client, pytest.raises(ImportRowError):
        client.import_tracked_application({"greenhouse": {"id_type": "placement_id"}})
    assert transport.sent == [] and import_requests(simulator) == 0


def test_a_rate_limited_import_is_sent_again_and_happens_once(world):
    integ = world.integration(world.normal_integration_id)
    faulty = Simulator(world, FaultConfig(rate=0.7, kinds=("rate-limit",), seed=3))
    client, _, simulator, sleeps = client_for(world, integ.id, faulty)
    with client:
        answers = [
            client.import_tracked_application(greenhouse_ids(u.remote_id))
            for u in integ.backlog[:4]
        ]
    assert [a.status for a in answers] == ["imported"] * 4
    assert simulator.stats()["faults"]["rate-limit"] == len(sleeps) > 0
    assert import_requests(simulator) == 4 + len(sleeps)
    assert [u.number for u in integ.untracked()][:2] == [4, 5]


@pytest.mark.parametrize("kind", ["timeout", "disconnect", "truncated", "html-500", "empty-502"])
def test_an_answer_that_may_hide_an_import_is_never_sent_again(world, kind):
    """After these, Kombo may have imported it (the simulator did, except for the 5xx pages):
    the client raises at once instead of sending a second import."""
    integ = world.integration(world.normal_integration_id)
    faulty = Simulator(world, FaultConfig(rate=1.0, kinds=(kind,), slow_seconds=60))
    client, _, simulator, sleeps = client_for(world, integ.id, faulty, timeout=5)
    with client, pytest.raises(TransientError):
        client.import_tracked_application(greenhouse_ids(integ.backlog[0].remote_id))
    assert import_requests(simulator) == 1 and sleeps == []
    imported = integ.backlog[0].number not in {u.number for u in integ.untracked()}
    assert imported == (kind in ("timeout", "disconnect", "truncated"))


def test_the_simulators_import_answers_match_the_spec(world):
    integ = world.integration(world.normal_integration_id)
    client, _, _, _ = client_for(world, integ.id)
    http = client._shared.http  # the raw answers, as the client reads them
    headers = {"X-Integration-Id": integ.id}
    ok = http.post(IMPORT_PATH, json={"tracked_at": None, **greenhouse_ids(integ.backlog[0].remote_id)},
                   headers=headers)  # fmt: skip
    again = http.post(IMPORT_PATH, json={"tracked_at": None, **greenhouse_ids(integ.backlog[0].remote_id)},
                      headers=headers)  # fmt: skip
    bad = http.post(IMPORT_PATH, json={"greenhouse": {}}, headers=headers)
    path = ("paths", "/ats/import-tracked-application", "post", "responses")
    spec_validator(*path, "200", "content", "application/json", "schema").validate(ok.json())
    sdk = PostAtsImportTrackedApplicationPositiveResponse.model_validate(ok.json())
    assert sdk.data.id == ok.json()["data"]["id"]
    assert (again.status_code, again.json()["error"]["code"]) == (
        409,
        "ATS.APPLICATION_ALREADY_EXISTS",
    )
    errors = spec_validator("components", "responses", "ErrorResponseATS", "content",
                            "application/json", "schema")  # fmt: skip
    for answer in (again, bad):
        errors.validate(answer.json())
    assert bad.json()["error"]["message"] == "tracked_at is required (a timestamp or null)."
    client.close()
