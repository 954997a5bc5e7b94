"""Prefect global concurrency limits that stagewatch's flows take slots of, created where missing."""

from __future__ import annotations

import contextlib
from typing import Any

from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

# Requests in flight against the Kombo account's rate limit: the fan-out's checks and batches and
# the webhook-triggered syncs all hold slots of it.
ACCOUNT_LIMIT = "stagewatch-kombo-account"
DEFAULT_ACCOUNT_SLOTS = 8


def ensure_limit(client: Any, name: str, limit: int) -> bool:
    """Create the global concurrency limit `name` with `limit` slots unless it exists; True when
    created. An existing limit keeps its size: an operator may have changed it in the UI."""
    try:
        client.read_global_concurrency_limit_by_name(name)
        return False
    except ObjectNotFound:
        pass
    # Another process (a second served runner, a run) may create it first.
    with contextlib.suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
    return True


def account_slots(client: Any, wanted: int) -> int:
    """How many of the account limit's slots to take for `wanted` requests in flight: never more
    than the limit has (created at its default if missing), since a larger claim waits for ever."""
    try:
        size = client.read_global_concurrency_limit_by_name(ACCOUNT_LIMIT).limit
    except ObjectNotFound:
        ensure_limit(client, ACCOUNT_LIMIT, DEFAULT_ACCOUNT_SLOTS)
        size = DEFAULT_ACCOUNT_SLOTS
    return max(1, min(wanted, size))
