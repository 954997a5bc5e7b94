"""The webhook receiver's Prefect side, passed to `stagewatch.webhooks` by `stagewatch webhooks`:
events, the list of integrations the deployments sync, and the webhook secret.

The list is the Prefect variable `stagewatch_integration_ids` that `prefect.yaml`'s deployments
read: a JSON list of ids (as its header documents), or a comma-separated string, which
`SyncManyParams` accepts too; whichever it is, it is written back in the same form.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableCreate, VariableUpdate
from prefect.events import emit_event as prefect_emit_event
from prefect.events.worker import EventsWorker
from pydantic import SecretStr

from stagewatch.errors import StagewatchError
from stagewatch.webhooks import SideEffects
from tasks.secrets import secret_block

SECRET_BLOCK = "kombo-webhook-secret"
SECRET_ENV = "KOMBO_WEBHOOK_SECRET"
INTEGRATIONS_VARIABLE = "stagewatch_integration_ids"


class EventNotSent(StagewatchError):
    """Prefect did not take an event; the receiver's worker tries again later."""


def resolve_webhook_secret(environ: Mapping[str, str] = os.environ) -> SecretStr:
    """The Kombo webhook secret: the Prefect Secret block when present, else the variable."""
    secret = secret_block(SECRET_BLOCK)
    if secret is not None:
        return secret
    value = environ.get(SECRET_ENV, "")
    if not value.strip():
        raise StagewatchError(
            f"no Kombo webhook secret: neither the Prefect Secret block {SECRET_BLOCK!r} nor the "
            f"environment variable {SECRET_ENV} is set; the receiver refuses to start without one"
        )
    return SecretStr(value.strip())


def emit_event(*, event: str, resource: dict[str, str], payload: dict[str, Any], id: UUID) -> None:
    """Emit one event and wait until it has left this process, so a delivery marked done has
    really sent it. Prefect's events worker logs a failed send rather than raising, so the API is
    asked first: an unreachable Prefect makes the delivery wait for a retry, not vanish."""
    with get_client(sync_client=True) as client:
        unreachable = client.api_healthcheck()
    if unreachable is not None:
        raise EventNotSent(f"the Prefect API does not answer ({type(unreachable).__name__})")
    sent = prefect_emit_event(event=event, resource=resource, payload=payload, id=id)
    if sent is None:
        raise EventNotSent(
            f"Prefect did not take the event {event} ({id}); is PREFECT_API_URL set?"
        )
    EventsWorker.instance().wait_until_empty()


def _ids(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in re.split(r"[,\s]+", value) if part]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise StagewatchError(
        f"the Prefect variable {INTEGRATIONS_VARIABLE!r} holds {type(value).__name__}, not a list "
        "of integration ids; fix it before the receiver changes it"
    )


def integration_ids() -> list[str]:
    """The integrations the scheduled deployments sync."""
    with get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(INTEGRATIONS_VARIABLE)
    return _ids(variable.value if variable else None)


def _change_integrations(integration_id: str, *, add: bool) -> None:
    # Read-modify-write: the receiver's one worker thread is its only writer; tags are kept.
    with get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(INTEGRATIONS_VARIABLE)
        ids = _ids(variable.value if variable else None)
        if (integration_id in ids) == add:
            return
        ids = [*ids, integration_id] if add else [i for i in ids if i != integration_id]
        value: Any = ", ".join(ids) if variable and isinstance(variable.value, str) else ids
        if variable is None:
            client.create_variable(VariableCreate(name=INTEGRATIONS_VARIABLE, value=value))
        else:
            client.update_variable(
                VariableUpdate(name=INTEGRATIONS_VARIABLE, value=value, tags=variable.tags)
            )


def add_integration(integration_id: str) -> None:
    """Sync `integration_id` from the next scheduled run on."""
    _change_integrations(integration_id, add=True)


def remove_integration(integration_id: str) -> None:
    """Stop syncing `integration_id`; its history stays in the store."""
    _change_integrations(integration_id, add=False)


def side_effects() -> SideEffects:
    return SideEffects(
        emit_event=emit_event,
        add_integration=add_integration,
        remove_integration=remove_integration,
    )
