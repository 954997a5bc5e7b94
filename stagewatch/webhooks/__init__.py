"""Kombo's webhooks: verify, record, then act off the request path.

The receiver is library code: what it changes outside its ledger (Prefect events, the list of
synced integrations) comes in as `SideEffects`; `deployments/receiver.py` supplies Prefect's.
"""

from stagewatch.webhooks.app import MAX_BODY_BYTES, WEBHOOK_PATH, WebhookConfigError, create_app
from stagewatch.webhooks.envelope import (
    KNOWN_TYPES,
    WATCHED_MODELS,
    Delivery,
    EnvelopeError,
    Plan,
    event_id,
    merged_event_id,
    parse_delivery,
    plan,
    plan_together,
)
from stagewatch.webhooks.ledger import Ledger, LedgerError, default_ledger_path
from stagewatch.webhooks.signature import SIGNATURE_HEADER, sign, verify
from stagewatch.webhooks.worker import SideEffects, Worker, perform

__all__ = [
    "KNOWN_TYPES",
    "MAX_BODY_BYTES",
    "SIGNATURE_HEADER",
    "WATCHED_MODELS",
    "WEBHOOK_PATH",
    "Delivery",
    "EnvelopeError",
    "Ledger",
    "LedgerError",
    "Plan",
    "SideEffects",
    "WebhookConfigError",
    "Worker",
    "create_app",
    "default_ledger_path",
    "event_id",
    "merged_event_id",
    "parse_delivery",
    "perform",
    "plan",
    "plan_together",
    "sign",
    "verify",
]
