"""Kombo's webhook envelope `{id, type, data}`, and what stagewatch makes of each type.

`plan` is a pure function of a delivery: the Prefect event to emit and the change to the list of
synced integrations, or why the delivery is acknowledged and ignored. The receiver plans once when
a delivery arrives (to answer) and the worker plans again from the ledger's copy (to act), so the
ledger holds data, not instructions. `plan_together` merges the data-changed deliveries of one
integration that are pending at once into one event: one triggered run, not one per webhook.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stagewatch.errors import StagewatchError

DATA_CHANGED = "data-changed"
INTEGRATION_CREATED = "integration-created"
INTEGRATION_DELETED = "integration-deleted"
INTEGRATION_STATE_CHANGED = "integration-state-changed"
KNOWN_TYPES = (DATA_CHANGED, INTEGRATION_CREATED, INTEGRATION_DELETED, INTEGRATION_STATE_CHANGED)
ATS = "ATS"
# The models whose changes a stage history can see; others (candidates' tags, users...) cannot.
WATCHED_MODELS = frozenset({"ats_applications", "ats_application_stages", "ats_jobs"})
EVENT_PREFIX = "kombo."
# Fixed forever: an event's id is uuid5(namespace, delivery id), so a resent delivery is one event.
EVENT_ID_NAMESPACE = uuid.UUID("5c3a8f0e-8d4b-5a7e-9f61-2b7c0d4e9a13")
# Contact data and anything shaped like a credential never reach the ledger.
_SCRUBBED_KEY = re.compile(r"email|secret|token|password|api_?key|authorization", re.IGNORECASE)


class EnvelopeError(StagewatchError):
    """The body is not a Kombo webhook (answered 400). The message never quotes the body."""


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(
        min_length=1, max_length=200, description="Delivery id; a redelivery repeats it."
    )
    type: str = Field(min_length=1, max_length=100)
    data: dict[str, Any]


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChangedModel(_Data):
    name: str


class DataChanged(_Data):
    integration_id: str = Field(min_length=1)
    integration_tool: str
    integration_category: str  # open: HRIS, ATS, ASSESSMENT, LMS today
    changed_models: list[ChangedModel]


class IntegrationLifecycle(_Data):
    """`integration-created` and `integration-deleted` (only the latter has `deleted_at`)."""

    id: str = Field(min_length=1)
    tool: str
    category: str
    deleted_at: str | None = None


class IntegrationStateChanged(_Data):
    integration_id: str = Field(min_length=1)
    integration_tool: str
    integration_category: str
    state: str  # ACTIVE, INVALID, INACTIVE
    setup_status: str  # INCOMPLETE, FINAL_SYNC_PENDING, COMPLETED
    qa_status: str  # PENDING, FAILED, PASSED
    updated_at: str


_DATA_MODELS: dict[str, type[_Data]] = {
    DATA_CHANGED: DataChanged,
    INTEGRATION_CREATED: IntegrationLifecycle,
    INTEGRATION_DELETED: IntegrationLifecycle,
    INTEGRATION_STATE_CHANGED: IntegrationStateChanged,
}


@dataclass(frozen=True)
class Delivery:
    """A verified, well-formed webhook. `data` is Kombo's, scrubbed; `integration_id` is None for
    a type this receiver does not know."""

    id: str
    type: str
    integration_id: str | None
    data: dict[str, Any]

    @property
    def known(self) -> bool:
        return self.type in KNOWN_TYPES


@dataclass(frozen=True)
class Plan:
    """What a delivery asks for. `ignored` says why when it asks for nothing."""

    event: str | None = None
    resource: dict[str, str] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    event_id: uuid.UUID | None = None
    add_integration: str | None = None
    remove_integration: str | None = None
    ignored: str | None = None


def _first_error(exc: ValidationError) -> str:
    # loc and msg only: pydantic's own text quotes the input, which is the body.
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


def scrub(value: Any) -> Any:
    """`value` without contact data or credential-like keys, at any depth."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not _SCRUBBED_KEY.search(str(k))}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


def parse_delivery(body: bytes) -> Delivery:
    """The delivery in a (verified) body, or `EnvelopeError`."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise EnvelopeError("the body is not JSON") from None
    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as exc:
        raise EnvelopeError(f"not a Kombo webhook envelope ({_first_error(exc)})") from None
    model = _DATA_MODELS.get(envelope.type)
    integration_id = None
    if model is not None:
        try:
            data = model.model_validate(envelope.data)
        except ValidationError as exc:
            raise EnvelopeError(
                f"not a {envelope.type} webhook (data.{_first_error(exc)})"
            ) from None
        integration_id = getattr(data, "integration_id", None) or getattr(data, "id", None)
    return Delivery(envelope.id, envelope.type, integration_id, scrub(envelope.data))


def event_id(delivery_id: str) -> uuid.UUID:
    """The Prefect event id of a delivery: the same for every resend of it."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, delivery_id)


def merged_event_id(delivery_ids: list[str]) -> uuid.UUID:
    """The event id of deliveries merged into one event: the same for every resend of that set."""
    if len(delivery_ids) == 1:
        return event_id(delivery_ids[0])
    return uuid.uuid5(EVENT_ID_NAMESPACE, json.dumps(sorted(delivery_ids)))


def integration_resource(integration_id: str) -> dict[str, str]:
    return {"prefect.resource.id": f"kombo.integration.{integration_id}"}


def plan(delivery: Delivery) -> Plan:
    """What stagewatch does with `delivery`; pure, so the worker can redo it from the ledger."""
    if not delivery.known:
        return Plan(ignored=f"unknown webhook type {delivery.type!r}")
    data = _DATA_MODELS[delivery.type].model_validate(delivery.data)
    category = getattr(data, "integration_category", None) or getattr(data, "category", None)
    if category != ATS:
        return Plan(ignored=f"not an ATS integration (category {category})")
    integration_id = delivery.integration_id or ""
    payload: dict[str, Any] = {
        "delivery_id": delivery.id,
        "integration_id": integration_id,
        "integration_tool": getattr(data, "integration_tool", None) or getattr(data, "tool", None),
        "integration_category": category,
    }
    add = remove = None
    if isinstance(data, DataChanged):
        names = [model.name for model in data.changed_models]
        if not WATCHED_MODELS.intersection(names):
            return Plan(ignored="no change to applications, stages or jobs")
        payload["changed_models"] = names
        payload["delivery_ids"] = [delivery.id]
    elif isinstance(data, IntegrationStateChanged):
        payload |= state_fields(data)
    elif delivery.type == INTEGRATION_CREATED:
        add = integration_id
    else:
        remove = integration_id
        payload["deleted_at"] = data.deleted_at
    return Plan(
        event=EVENT_PREFIX + delivery.type,
        resource=integration_resource(integration_id),
        payload=payload,
        event_id=event_id(delivery.id),
        add_integration=add,
        remove_integration=remove,
    )


def state_fields(data: IntegrationStateChanged) -> dict[str, str]:
    return {
        "state": data.state,
        "setup_status": data.setup_status,
        "qa_status": data.qa_status,
        "updated_at": data.updated_at,
    }


def plan_together(deliveries: list[Delivery]) -> Plan:
    """What deliveries ask for together: one delivery's plan, or, for data-changed deliveries of
    one integration (oldest first), one event naming every delivery and every changed model, the
    newest's other fields. Deliveries that ask for nothing are carried along."""
    plans = [plan(delivery) for delivery in deliveries]
    acting = [work for work in plans if work.ignored is None]
    if len(plans) == 1 or not acting:
        return plans[0]
    newest = acting[-1]
    kinds = {(work.event, work.resource["prefect.resource.id"]) for work in acting}
    if len(kinds) > 1 or newest.event != EVENT_PREFIX + DATA_CHANGED:
        raise ValueError("only data-changed deliveries of one integration are planned together")
    ids = [i for work in acting for i in work.payload["delivery_ids"]]
    models = [name for work in acting for name in work.payload["changed_models"]]
    payload = newest.payload | {"delivery_ids": ids, "changed_models": list(dict.fromkeys(models))}
    return replace(newest, payload=payload, event_id=merged_event_id(ids))
