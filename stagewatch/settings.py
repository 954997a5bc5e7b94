"""Configuration from the environment (and `.env`), read once at the edge and passed down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from stagewatch.errors import StagewatchError
from stagewatch.kombo.client import (
    DEFAULT_INITIAL_DELAY,
    DEFAULT_JITTER,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELAY,
    DEFAULT_MAX_TOTAL_WAIT,
    DEFAULT_TIMEOUT,
    KomboClient,
    RetryPolicy,
)
from stagewatch.store.lease import DEFAULT_LEASE_SECONDS

API_KEY_ENV = "KOMBO_API_KEY"
API_KEY_BLOCK = "kombo-api-key"


class Settings(BaseSettings):
    """Every knob has a default except the key, which `resolve_api_key` finds (or names as missing)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    kombo_api_key: SecretStr | None = None
    kombo_base_url: str | None = Field(
        default=None, description="Overrides the region's URL, e.g. the simulator's."
    )
    kombo_region: Literal["eu", "us"] = "eu"
    stagewatch_db: str = Field(
        default="stagewatch.db", description="A SQLite file, or a postgresql:// URL."
    )
    stagewatch_timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, description="Seconds.")
    stagewatch_max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1)
    stagewatch_initial_delay: float = Field(default=DEFAULT_INITIAL_DELAY, ge=0)
    stagewatch_max_delay: float = Field(default=DEFAULT_MAX_DELAY, ge=0)
    stagewatch_max_total_wait: float = Field(default=DEFAULT_MAX_TOTAL_WAIT, ge=0)
    stagewatch_jitter: float = Field(default=DEFAULT_JITTER, ge=0, le=1)
    stagewatch_lock_lease_seconds: float = Field(
        default=DEFAULT_LEASE_SECONDS,
        gt=0,
        description="How long a run's lock outlives its last renewal (a killed run's lock too).",
    )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.stagewatch_max_attempts,
            initial_delay=self.stagewatch_initial_delay,
            max_delay=self.stagewatch_max_delay,
            max_total_wait=self.stagewatch_max_total_wait,
            jitter=self.stagewatch_jitter,
        )

    def client(self, api_key: SecretStr, integration_id: str | None = None) -> KomboClient:
        """A `KomboClient` configured from these settings (tests pass `transport` themselves)."""
        return KomboClient(
            api_key,
            integration_id,
            base_url=self.kombo_base_url,
            region=self.kombo_region,
            timeout=self.stagewatch_timeout,
            retry=self.retry_policy(),
        )


def resolve_api_key(
    settings: Settings | None = None, *, from_block: Callable[[], SecretStr | None] | None = None
) -> SecretStr:
    """The Kombo API key: `from_block()` (the Prefect Secret block, read at the edge) when given
    and it holds one, else `KOMBO_API_KEY`."""
    if from_block is not None:
        key = from_block()
        if key is not None:
            return key
    settings = settings or Settings()
    env_key = settings.kombo_api_key
    if env_key is not None and env_key.get_secret_value().strip():
        return SecretStr(env_key.get_secret_value().strip())
    if from_block is not None:
        raise StagewatchError(
            f"no Kombo API key: neither the Prefect Secret block {API_KEY_BLOCK!r} nor the "
            f"environment variable {API_KEY_ENV} is set"
        )
    raise StagewatchError(
        f"no Kombo API key: the environment variable {API_KEY_ENV} is not set (the Prefect Secret "
        f"block {API_KEY_BLOCK!r} was not consulted)"
    )
