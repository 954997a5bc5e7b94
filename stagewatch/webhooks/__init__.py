"""Kombo's webhooks: verify, record, then act off the request path."""

from stagewatch.webhooks.envelope import (
    KNOWN_TYPES,
    WATCHED_MODELS,
    Delivery,
    EnvelopeError,
    Plan,
    event_id,
    parse_delivery,
    plan,
)
from stagewatch.webhooks.signature import SIGNATURE_HEADER, sign, verify

__all__ = [
    "KNOWN_TYPES",
    "SIGNATURE_HEADER",
    "WATCHED_MODELS",
    "Delivery",
    "EnvelopeError",
    "Plan",
    "event_id",
    "parse_delivery",
    "plan",
    "sign",
    "verify",
]
