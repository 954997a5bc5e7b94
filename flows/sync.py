"""Prefect flows: sync one integration, or many at once with a bounded number in flight.

Each integration runs `stagewatch.pipeline.run_integration` with the steps as Prefect tasks
(open-run, fetch-jobs, fetch-applications, diff-stages, publish), called from the flow's own
thread. Several integrations run in a bounded thread pool inside one flow run rather than as
subflows, which made the SQLite-backed Prefect server answer "database is locked"
(docs/performance.md).
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any

import httpx
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ParameterTypeError
from prefect.runtime import flow_run
from prefect.settings import PREFECT_LOGGING_LEVEL
from prefect.states import Completed, Failed, State
from pydantic import AfterValidator, Field, SecretStr, StringConstraints, field_validator

from flows.limits import ACCOUNT_LIMIT, DEFAULT_ACCOUNT_SLOTS, ensure_limit
from stagewatch import coalesce, pipeline, report
from stagewatch.errors import StagewatchError
from stagewatch.kombo.client import BASE_URLS, KomboClient
from stagewatch.pipeline import Steps, SyncOptions, split_ids
from stagewatch.report import SyncOutcome
from stagewatch.settings import Settings
from stagewatch.store import Store
from stagewatch.store.location import redact, resolve
from tasks.publish import publish_summary_task
from tasks.secrets import kombo_api_key
from tasks.steps import TaskSteps

# PREFECT_LOGGING_EXTRA_LOGGERS=stagewatch (set by the CLI, serve.py and prefect.yaml) gives the
# `stagewatch` logger Prefect's API handler but no level: it inherited the root logger's WARNING, and
# the client's INFO retry notes never reached a run's logs. It takes Prefect's level instead.
_library_logger = logging.getLogger("stagewatch")
if _library_logger.level == logging.NOTSET:
    _library_logger.setLevel(PREFECT_LOGGING_LEVEL.value())

# The slots every integration's triggered syncs share: as many sync at once, the rest wait.
ON_CHANGE_LIMIT = "stagewatch-on-change"
ON_CHANGE_SLOTS = 4

_INTEGRATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
EXAMPLE_ID = "greenhouse:HWUTwvyx2wLoSUHphiWVrp28"


def _integration_id(value: str) -> str:
    """Checked here rather than as a JSON-schema pattern: the UI's run form shows a failed
    pattern as the raw regex, a validator's message as the sentence it is."""
    if not _INTEGRATION_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an integration id: an integration id looks like tool:24 "
            f"characters, e.g. {EXAMPLE_ID}"
        )
    return value


IntegrationId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_integration_id),
]


class SyncIntegrationParams(SyncOptions):
    integration_id: IntegrationId = Field(
        description=f"Kombo integration id: the tool, a colon and 24 characters, e.g. {EXAMPLE_ID}."
    )


class SyncManyParams(SyncOptions):
    integration_ids: list[IntegrationId] = Field(
        min_length=1,
        max_length=500,
        description=(
            f"Kombo integration ids to sync, 1 to 500, each the tool, a colon and 24 characters "
            f"(e.g. {EXAMPLE_ID})."
        ),
    )
    max_concurrency: int = Field(
        default=4, ge=1, le=16, description="Integrations synced at the same time, 1 to 16."
    )

    @field_validator("integration_ids", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_ids(value)

    @field_validator("integration_ids")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class SyncFailed(StagewatchError):
    """At least one integration failed; carries every integration's outcome (JSON dicts)."""

    def __init__(self, message: str, outcomes: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.outcomes = outcomes

    def __reduce__(self):  # Prefect may persist the failed state's exception
        return (SyncFailed, (str(self), self.outcomes))


class _ReportedFailure(logging.Filter):
    """A deployed flow run that returns its Failed state is still raised again by Prefect's
    engine on exit, which logs it as an "unexpected exception" with a 40-line traceback. A
    `SyncFailed` is expected and already told (the state message, the summary artifact, the
    failed integration's task run), and so are invalid parameters (the state message and an
    ERROR line carry the validator's sentence): drop those records, and only those."""

    def filter(self, record: logging.LogRecord) -> bool:
        told = (SyncFailed, ParameterTypeError)
        return not (record.exc_info and isinstance(record.exc_info[1], told))


# The engine's two loggers: the flow run's (its logs in the UI) and the process's own (stderr).
for _name in ("prefect.flow_runs", "prefect.engine"):
    logging.getLogger(_name).addFilter(_ReportedFailure())


def open_client(
    api_key: SecretStr,
    integration_id: str | None,
    base_url: str,
    settings: Settings,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep=time.sleep,
) -> KomboClient:
    """The integration's client (None: a root whose `with_integration` clients share its
    connections). Tests pass the simulator's transport and a sleep that does not wait."""
    return KomboClient(
        api_key,
        integration_id,
        base_url=base_url,
        timeout=settings.stagewatch_timeout,
        retry=settings.retry_policy(),
        transport=transport,
        sleep=sleep,
    )


def _db_path(options: SyncOptions, settings: Settings) -> str:
    return resolve(options.db or settings.stagewatch_db)


def kombo_base_url(options: SyncOptions, settings: Settings) -> str:
    region = options.region or settings.kombo_region
    return (options.base_url or settings.kombo_base_url or BASE_URLS[region]).rstrip("/")


def sync_in_flow(
    integration_id: str,
    options: SyncOptions,
    api_key: SecretStr,
    *,
    wrap_steps: Callable[[Steps], Steps] | None = None,
) -> SyncOutcome:
    """One integration's run inside the current flow run, its steps as Prefect tasks
    (`wrap_steps` lets `sync_on_change` see the run begin)."""
    settings = Settings()
    db = _db_path(options, settings)
    base_url = kombo_base_url(options, settings)
    with open_client(api_key, integration_id, base_url, settings) as client:
        store = Store(db, lease_seconds=settings.stagewatch_lock_lease_seconds)
        try:
            return pipeline.run_integration(
                integration_id,
                options,
                client=client,
                store=store,
                steps=(wrap_steps or _same)(TaskSteps(db=redact(db), base_url=base_url)),
            )
        finally:
            # The run is committed (durable, visible) and published by now: the flow run need not
            # wait while the commit's checkpoint copies the WAL into the file.
            store.close(wait_for_checkpoint=False)


def _state(outcomes: list[SyncOutcome]) -> State:
    """Completed when every integration synced or was reported not ready / unsupported."""
    data = [o.model_dump(mode="json") for o in outcomes]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        names = ", ".join(f"{o.integration_id} ({o.message})" for o in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        message = f"{len(failed)} of {len(outcomes)} failed: {names}{more}"
        return Failed(message=message, data=SyncFailed(message, data))
    if len(outcomes) == 1:
        o = outcomes[0]
        if o.status == "synced":
            return Completed(message=f"{o.changes} changes", data=data)
        name = "Not ready" if o.status == "not_ready" else "Unsupported"
        return Completed(name=name, message=o.message, data=data)
    counts = {s: sum(o.status == s for o in outcomes) for s in report.STATUS_LABELS}
    message = ", ".join(f"{n} {report.STATUS_LABELS[s]}" for s, n in counts.items() if n)
    return Completed(message=message, data=data)


@flow(name="sync-integration", log_prints=False)
def sync_integration(params: SyncIntegrationParams) -> State:
    """Sync one Kombo integration into the stagewatch database and publish what changed."""
    return _state([sync_in_flow(params.integration_id, params, kombo_api_key())])


def _same(steps: Steps) -> Steps:
    return steps


def on_change_slot(seconds: float) -> AbstractContextManager[None]:
    """A slot of `ON_CHANGE_LIMIT` and one of the Kombo account's (the fan-out's syncs hold the
    rest of those), taken together; each created at its default size if missing (a deployment
    made with `prefect deploy`); strict, so a limit deleted meanwhile fails the run rather than
    letting every integration sync at once."""
    with get_client(sync_client=True) as client:
        ensure_limit(client, ON_CHANGE_LIMIT, ON_CHANGE_SLOTS)
        ensure_limit(client, ACCOUNT_LIMIT, DEFAULT_ACCOUNT_SLOTS)
    return concurrency([ON_CHANGE_LIMIT, ACCOUNT_LIMIT], timeout_seconds=seconds, strict=True)


@flow(name="sync-on-change", log_prints=False)
def sync_on_change(params: SyncIntegrationParams) -> State:
    """Sync the integration a `kombo.data-changed` event names. Of a burst for one integration
    one syncs, one waits for it, and the rest end Coalesced (`stagewatch.coalesce`); only a run
    that syncs takes a slot of `ON_CHANGE_LIMIT` and one of the Kombo account's."""
    settings = Settings()
    lease = settings.stagewatch_lock_lease_seconds
    with Store(_db_path(params, settings), lease_seconds=lease) as store:
        result = coalesce.sync_coalesced(
            store,
            params.integration_id,
            str(flow_run.id),
            lambda wrap: sync_in_flow(
                params.integration_id, params, kombo_api_key(), wrap_steps=wrap
            ),
            slot=on_change_slot,
            slot_wait=min(coalesce.SLOT_WAIT_SECONDS, lease / 3),  # renewed well within its lease
        )
    if isinstance(result, coalesce.Coalesced):
        return Completed(name=coalesce.COALESCED, message=result.message)
    return _state([result])


def guarded(
    integration_id: str,
    options: SyncOptions,
    api_key: SecretStr,
    hold: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> SyncOutcome:
    """An unexpected error (a database that cannot be opened, a bug, no slot from `hold` in time)
    fails this integration, not its siblings, and is logged with its traceback."""
    try:
        with hold():
            return sync_in_flow(integration_id, options, api_key)
    except Exception as exc:
        get_run_logger().exception("sync of %s failed", integration_id)
        return SyncOutcome(
            integration_id=integration_id,
            status="failed",
            mode=options.mode,
            message=f"{type(exc).__name__}: {exc}",
        )


@flow(name="sync-many", log_prints=False)
def sync_many(params: SyncManyParams) -> State:
    """Sync several integrations, at most `max_concurrency` at a time; one that fails, is not
    ready or is unsupported never stops the others, and the summary artifact says who did what."""
    api_key = kombo_api_key()
    options = SyncOptions(**params.model_dump(include=set(SyncOptions.model_fields)))
    ids = params.integration_ids
    with ThreadPoolExecutor(
        max_workers=min(params.max_concurrency, len(ids)), thread_name_prefix="stagewatch-sync"
    ) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, guarded, i, options, api_key) for i in ids
        ]
        outcomes = [future.result() for future in futures]
    publish_summary_task(outcomes)
    return _state(outcomes)
