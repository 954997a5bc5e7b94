"""Kombo's webhook signature and envelope, and what stagewatch plans for each type: pure
functions with literal data."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from stagewatch.webhooks import (
    Delivery,
    EnvelopeError,
    Plan,
    event_id,
    parse_delivery,
    plan,
    sign,
    verify,
)

# Computed with openssl, not with our code:
#   printf '%s' "$BODY" | openssl dgst -sha256 -hmac whsec_test -binary | base64 | tr '+/' '-_'
SECRET = "whsec_test"
BODY = b'{"id":"Cbfk5sHtDxrSrJBRjsDtbaN9","type":"data-changed","data":{}}'
SIGNATURE = "c00yZVqfl5UWo3tI6hEWg6ufmM_9Gke_GxhEDduXUYc"


def test_sign_matches_an_independent_vector():
    assert sign(SECRET, BODY) == SIGNATURE
    assert sign(SECRET.encode(), BODY) == SIGNATURE


@pytest.mark.parametrize(
    ("secret", "body", "header", "valid"),
    [
        (SECRET, BODY, SIGNATURE, True),
        (SECRET, BODY, SIGNATURE + "=", True),  # padded base64url: the same 256 bits
        (SECRET, BODY + b" ", SIGNATURE, False),  # tampered body
        (SECRET, BODY.replace(b"data-changed", b"data-changes"), SIGNATURE, False),
        ("whsec_other", BODY, SIGNATURE, False),  # wrong secret
        (SECRET, BODY, None, False),  # missing header
        (SECRET, BODY, "", False),
        (SECRET, BODY, SIGNATURE + "==", False),  # not how 32 bytes are padded
        (SECRET, BODY, SIGNATURE.replace("_", "/"), False),  # standard alphabet: not Kombo's
        (SECRET, BODY, " " + SIGNATURE, False),
        (SECRET, BODY, SIGNATURE[:-1], False),
        (SECRET, BODY, "sha256=" + SIGNATURE, False),
        (SECRET, BODY, "c00yZVqfl5UWo3tI6hEWg6ufmM_9Gke_GxhEDduXUYé", False),  # non-ASCII
    ],
)
def test_verify(secret, body, header, valid):
    assert verify(secret, body, header) is valid


def envelope(type_: str, data: dict, delivery_id: str = "Cbfk5sHtDxrSrJBRjsDtbaN9") -> bytes:
    return json.dumps({"id": delivery_id, "type": type_, "data": data}).encode()


END_USER = {
    "origin_id": "36123",
    "creator_email": "user@example.com",
    "organization_name": "Acme, Inc.",
}
DATA_CHANGED = {
    "integration_id": "greenhouse:CBNMt7dSNCzBdnRTx87dev4E",
    "integration_tool": "greenhouse",
    "integration_category": "ATS",
    "changed_models": [{"name": "ats_candidates"}, {"name": "ats_applications"}],
}
CREATED = {
    "id": "greenhouse:CBNMt7dSNCzBdnRTx87dev4E",
    "tool": "greenhouse",
    "category": "ATS",
    "end_user": END_USER,
}
DELETED = CREATED | {"deleted_at": "2021-09-01T12:00:00.000Z"}
STATE_CHANGED = {
    "integration_tool": "greenhouse",
    "integration_category": "ATS",
    "integration_id": "greenhouse:CBNMt7dSNCzBdnRTx87dev4E",
    "end_user": END_USER,
    "qa_status": "PASSED",
    "setup_status": "COMPLETED",
    "state": "INVALID",
    "updated_at": "2021-09-01T12:00:00.000Z",
}
RESOURCE = {"prefect.resource.id": "kombo.integration.greenhouse:CBNMt7dSNCzBdnRTx87dev4E"}
EVENT_ID = event_id("Cbfk5sHtDxrSrJBRjsDtbaN9")
COMMON = {
    "delivery_id": "Cbfk5sHtDxrSrJBRjsDtbaN9",
    "integration_id": "greenhouse:CBNMt7dSNCzBdnRTx87dev4E",
    "integration_tool": "greenhouse",
    "integration_category": "ATS",
}


def test_event_ids_are_uuid5_of_the_delivery_id_and_stable():
    namespace = uuid.UUID("5c3a8f0e-8d4b-5a7e-9f61-2b7c0d4e9a13")
    assert uuid.uuid5(namespace, "Cbfk5sHtDxrSrJBRjsDtbaN9") == EVENT_ID
    assert event_id("other") != EVENT_ID


def test_parse_keeps_the_data_without_contact_data():
    delivery = parse_delivery(envelope("integration-created", CREATED))
    assert delivery == Delivery(
        id="Cbfk5sHtDxrSrJBRjsDtbaN9",
        type="integration-created",
        integration_id="greenhouse:CBNMt7dSNCzBdnRTx87dev4E",
        data={
            "id": "greenhouse:CBNMt7dSNCzBdnRTx87dev4E",
            "tool": "greenhouse",
            "category": "ATS",
            "end_user": {"origin_id": "36123", "organization_name": "Acme, Inc."},
        },
    )


def test_parse_scrubs_credential_like_keys_at_any_depth():
    data = DATA_CHANGED | {
        "extra": {"api_key": "k", "Authorization": "Bearer x", "ok": [{"token": 1}]}
    }
    delivery = parse_delivery(envelope("data-changed", data))
    assert delivery.data["extra"] == {"ok": [{}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[]", "not a Kombo webhook envelope (body: Input should be a valid dictionary"),
        (
            b'{"type": "data-changed", "data": {}}',
            "not a Kombo webhook envelope (id: Field required)",
        ),
        (b'{"id": "", "type": "x", "data": {}}', "not a Kombo webhook envelope (id: String should"),
        (
            b'{"id": "a", "type": "x", "data": []}',
            "not a Kombo webhook envelope (data: Input should",
        ),
        (
            envelope("data-changed", {"integration_tool": "greenhouse"}),
            "not a data-changed webhook (data.integration_id: Field required)",
        ),
        (
            envelope("integration-state-changed", STATE_CHANGED | {"state": None}),
            "not a integration-state-changed webhook (data.state: Input should be a valid string)",
        ),
    ],
)
def test_parse_refuses_what_is_not_a_kombo_webhook(body, message):
    with pytest.raises(EnvelopeError) as caught:
        parse_delivery(body)
    assert str(caught.value).startswith(message)


def test_parse_errors_never_quote_the_body():
    secretish = "do-not-echo-this-value"
    with pytest.raises(EnvelopeError) as caught:
        parse_delivery(envelope("data-changed", {"integration_id": secretish}))
    assert secretish not in str(caught.value)


def test_unknown_types_parse_and_are_ignored():
    delivery = parse_delivery(envelope("hris-something", {"x": 1}))
    assert (delivery.type, delivery.integration_id, delivery.known) == (
        "hris-something",
        None,
        False,
    )
    assert plan(delivery) == Plan(ignored="unknown webhook type 'hris-something'")


def test_data_changed_for_watched_models_is_one_event():
    assert plan(parse_delivery(envelope("data-changed", DATA_CHANGED))) == Plan(
        event="kombo.data-changed",
        resource=RESOURCE,
        payload=COMMON
        | {
            "changed_models": ["ats_candidates", "ats_applications"],
            "delivery_ids": ["Cbfk5sHtDxrSrJBRjsDtbaN9"],
        },
        event_id=EVENT_ID,
    )


@pytest.mark.parametrize("model", ["ats_applications", "ats_application_stages", "ats_jobs"])
def test_each_watched_model_is_enough(model):
    data = DATA_CHANGED | {"changed_models": [{"name": model}]}
    assert plan(parse_delivery(envelope("data-changed", data))).event == "kombo.data-changed"


@pytest.mark.parametrize(
    ("type_", "data", "reason"),
    [
        (
            "data-changed",
            DATA_CHANGED | {"changed_models": [{"name": "ats_candidates"}, {"name": "ats_tags"}]},
            "no change to applications, stages or jobs",
        ),
        (
            "data-changed",
            DATA_CHANGED | {"integration_category": "HRIS"},
            "not an ATS integration (category HRIS)",
        ),
        (
            "integration-created",
            CREATED | {"category": "LMS"},
            "not an ATS integration (category LMS)",
        ),
        (
            "integration-deleted",
            DELETED | {"category": "HRIS"},
            "not an ATS integration (category HRIS)",
        ),
        (
            "integration-state-changed",
            STATE_CHANGED | {"integration_category": "ASSESSMENT"},
            "not an ATS integration (category ASSESSMENT)",
        ),
    ],
)
def test_what_stagewatch_cannot_use_is_ignored(type_, data, reason):
    assert plan(parse_delivery(envelope(type_, data))) == Plan(ignored=reason)


def test_integration_created_adds_the_integration_and_emits():
    assert plan(parse_delivery(envelope("integration-created", CREATED))) == Plan(
        event="kombo.integration-created",
        resource=RESOURCE,
        payload=COMMON,
        event_id=EVENT_ID,
        add_integration="greenhouse:CBNMt7dSNCzBdnRTx87dev4E",
    )


def test_integration_deleted_removes_the_integration_and_emits():
    assert plan(parse_delivery(envelope("integration-deleted", DELETED))) == Plan(
        event="kombo.integration-deleted",
        resource=RESOURCE,
        payload=COMMON | {"deleted_at": "2021-09-01T12:00:00.000Z"},
        event_id=EVENT_ID,
        remove_integration="greenhouse:CBNMt7dSNCzBdnRTx87dev4E",
    )


def test_integration_state_changed_emits_the_new_state():
    assert plan(parse_delivery(envelope("integration-state-changed", STATE_CHANGED))) == Plan(
        event="kombo.integration-state-changed",
        resource=RESOURCE,
        payload=COMMON
        | {
            "state": "INVALID",
            "setup_status": "COMPLETED",
            "qa_status": "PASSED",
            "updated_at": "2021-09-01T12:00:00.000Z",
        },
        event_id=EVENT_ID,
    )


def test_unknown_fields_are_tolerated():
    data = DATA_CHANGED | {"new_field": 1, "changed_models": [{"name": "ats_jobs", "extra": True}]}
    assert plan(parse_delivery(envelope("data-changed", data))).payload["changed_models"] == [
        "ats_jobs"
    ]


def test_the_receiver_and_its_command_import_without_prefect():
    """Prefect's side lives in deployments/receiver.py, imported by the command when it runs."""
    code = (
        "import sys, stagewatch.webhooks, stagewatch.simulator.webhooks, stagewatch.cli;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
