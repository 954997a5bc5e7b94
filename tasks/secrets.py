"""Secrets from Prefect Secret blocks, else the environment: the Kombo API key, the webhook secret.

Only the edge reads Prefect blocks; the library takes the secret it is given.
"""

from __future__ import annotations

from prefect.blocks.system import Secret
from pydantic import SecretStr

from stagewatch.errors import StagewatchError
from stagewatch.settings import API_KEY_BLOCK, Settings, resolve_api_key


def secret_block(name: str) -> SecretStr | None:
    """The Secret block's value, or None when no block of that name exists."""
    try:
        value = Secret.load(name, _sync=True).get()
    except ValueError:  # Prefect's answer for "no block document with that name"
        return None
    if not isinstance(value, str) or not value.strip():
        raise StagewatchError(f"the Prefect Secret block {name!r} does not hold a string")
    return SecretStr(value.strip())


def kombo_api_key(settings: Settings | None = None) -> SecretStr:
    """The Kombo API key: the `kombo-api-key` Secret block when present, else `KOMBO_API_KEY`."""
    return resolve_api_key(settings, from_block=lambda: secret_block(API_KEY_BLOCK))
