"""Prefect flows that spread many integrations over a work pool's workers (`stagewatch stack`).

An incremental `sync-fanout` first checks every integration with one request in its own process
(`stagewatch.checks`, holding the account's slots): the idle ones are recorded as checked and cost
no task run, artifact or deployment run. It splits the rest into batches and starts one run of the `sync-batch`
deployment per batch; any worker of the pool picks each one up. A batch syncs its integrations in
a bounded thread pool while it holds as many of the Kombo account's global concurrency slots as
it syncs at once (the account limit bounds the requests in flight against its rate limit); each
integration syncs holding its own slot (limit 1, so the hourly and the weekly run never sync one
integration at once). A failing
integration fails its batch's run, never another batch's, and never its siblings' syncs.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists
from prefect.states import Completed, Failed, State
from prefect.variables import Variable
from pydantic import Field, SecretStr

from flows.limits import ACCOUNT_LIMIT, DEFAULT_ACCOUNT_SLOTS, account_slots
from flows.sync import (
    IntegrationId,
    SyncManyParams,
    _db_path,
    _state,
    guarded,
    kombo_base_url,
    open_client,
)
from stagewatch import checks, report
from stagewatch.checks import Check
from stagewatch.pipeline import SyncOptions
from stagewatch.report import SyncOutcome
from stagewatch.settings import Settings
from stagewatch.store import Store
from tasks.publish import publish_summary_task
from tasks.secrets import kombo_api_key

BATCH_DEPLOYMENT = "sync-batch/batch"
INTEGRATION_LIMIT_PREFIX = "stagewatch-integration-"
# How long a batch waits for the account's slots, an integration for its own, before failing; a
# crashed holder's slots come back when its lease expires (Prefect's default lease, 300 s).
SLOT_TIMEOUT_SECONDS = 900.0
POLL_SECONDS = 2.0
LIMITS_PAGE = 200
SUMMARY_KEY = "fanout-summary"
INTEGRATIONS_VARIABLE = "stagewatch_integration_ids"
WORKER_LABEL = "prefect.worker.name"


class FanoutParams(SyncManyParams):
    integration_ids: list[IntegrationId] = Field(
        default_factory=list,
        max_length=20_000,
        description=(
            "Kombo integration ids to sync; empty: the Prefect variable "
            f"{INTEGRATIONS_VARIABLE}, read when the run starts (the webhook receiver keeps it)."
        ),
    )
    batch_size: int = Field(
        default=100, ge=1, le=500, description="Integrations per run of the batch deployment."
    )
    max_concurrency: int = Field(
        default=8,
        ge=1,
        le=16,
        description="Integrations synced at the same time in one batch, and checked at once.",
    )
    check_first: bool = Field(
        default=True,
        description=(
            "Incremental runs without since: check each integration with one request and sync "
            "only those that listed a change, failed the check, have no watermark yet, an "
            "unpublished run or a last run that did not succeed. Off: sync every integration."
        ),
    )


def integration_limit(integration_id: str) -> str:
    """The name of an integration's global concurrency limit (no `/`, `%`, `&`, `<`, `>`)."""
    return INTEGRATION_LIMIT_PREFIX + report.slug(integration_id)


def batches(ids: list[str], size: int) -> list[list[str]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def batch_parameters(params: FanoutParams, ids: list[str]) -> dict[str, Any]:
    """The batch deployment's parameters: this run's options, only where they were given."""
    options = params.model_dump(
        mode="json", include=set(SyncOptions.model_fields), exclude_unset=True
    )
    return {"params": options | {"integration_ids": ids, "max_concurrency": params.max_concurrency}}


def ensure_limits(client: Any, integration_ids: list[str]) -> int:
    """Create the missing per-integration limits (and the account's, at its default); returns
    how many were created. One listing per run; creations only for new integrations."""
    existing: set[str] = set()
    offset = 0
    while True:
        page = client.read_global_concurrency_limits(limit=LIMITS_PAGE, offset=offset)
        existing.update(limit.name for limit in page)
        if len(page) < LIMITS_PAGE:
            break
        offset += LIMITS_PAGE
    wanted = {integration_limit(i): 1 for i in integration_ids}
    wanted.setdefault(ACCOUNT_LIMIT, DEFAULT_ACCOUNT_SLOTS)
    missing = [name for name in wanted if name not in existing]
    for name in missing:
        # Another fan-out (the hourly run meeting the weekly one) may create it first.
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=wanted[name])
            )
    return len(missing)


def wait_for_runs(client: Any, ids: list[UUID], poll: float = POLL_SECONDS) -> list[FlowRun]:
    """The flow runs, once every one of them has reached a final state (in `ids`' order)."""
    while True:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
        )
        if len(runs) == len(ids) and all(run.state and run.state.is_final() for run in runs):
            by_id = {run.id: run for run in runs}
            return [by_id[i] for i in ids]
        time.sleep(poll)


def fanout_markdown(runs: list[FlowRun], sizes: list[int]) -> str:
    lines = [
        "| Batch | Integrations | Run | Worker | State | Message |",
        "|---|---|---|---|---|---|",
    ]
    for number, (run, size) in enumerate(zip(runs, sizes, strict=True), 1):
        state = run.state
        lines.append(
            f"| {number} | {size} | {report.escape_md(run.name, redact=False)} "
            f"| {report.escape_md(run.labels.get(WORKER_LABEL), redact=False)} "
            f"| {report.escape_md(state.name if state else None, redact=False)} "
            f"| {report.escape_md(state.message if state else None)} |"
        )
    return "\n".join(lines)


def fanout_state(runs: list[FlowRun]) -> State:
    """Completed when every batch completed; otherwise Failed, naming the first few batches."""
    bad = [run for run in runs if not (run.state and run.state.is_completed())]
    if not bad:
        return Completed(message=f"{len(runs)} {'batch' if len(runs) == 1 else 'batches'} completed")
    names = ", ".join(
        f"{run.name} ({run.state.name if run.state else 'no state'})" for run in bad[:5]
    )
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return Failed(message=f"{len(bad)} of {len(runs)} batches did not complete: {names}{more}")


def _listed_ids() -> Any:
    """The variable's value: a JSON list of ids or a comma-separated string (both validated)."""
    return Variable.get(INTEGRATIONS_VARIABLE, default=[])


def checks_apply(params: FanoutParams) -> bool:
    """Whether this run checks before it syncs: a full run lists everything by definition, and a
    `since` window is a replay the caller asked for."""
    return params.check_first and params.mode == "incremental" and params.since is None


def fit_to_account(wanted: int) -> int:
    """`wanted` requests in flight, or fewer when the account limit has fewer slots (said in the
    run's log: `max_concurrency` above the account's size cannot be honoured)."""
    with get_client(sync_client=True) as client:
        in_flight = account_slots(client, wanted)
    if in_flight < wanted:
        get_run_logger().warning(
            "%d at a time wanted, but %s has %d slots: %d at a time",
            wanted, ACCOUNT_LIMIT, in_flight, in_flight,
        )  # fmt: skip
    return in_flight


def check_integrations(params: FanoutParams, ids: list[str]) -> list[Check]:
    """Every integration's check, from this flow run's process, holding as many of the account's
    slots as it sends requests at once."""
    settings = Settings()
    options = SyncOptions(**params.model_dump(include=set(SyncOptions.model_fields)))
    in_flight = fit_to_account(min(params.max_concurrency, len(ids)))
    with (
        concurrency(ACCOUNT_LIMIT, occupy=in_flight, timeout_seconds=SLOT_TIMEOUT_SECONDS),
        open_client(kombo_api_key(), None, kombo_base_url(options, settings), settings) as client,
        Store(
            _db_path(options, settings), lease_seconds=settings.stagewatch_lock_lease_seconds
        ) as store,
    ):
        return checks.check_all(store, client, ids, max_concurrency=in_flight)


def start_batches(params: FanoutParams, ids: list[str]) -> tuple[list[FlowRun], list[int]]:
    """Run the batch deployment for `ids`; the batches' final runs and their sizes."""
    groups = batches(ids, params.batch_size)
    with get_client(sync_client=True) as client:
        created = ensure_limits(client, ids)
        if created:
            get_run_logger().info("created %d global concurrency limits", created)
        started = [
            run_deployment(
                BATCH_DEPLOYMENT,
                parameters=batch_parameters(params, group),
                flow_run_name=f"batch-{number}-of-{len(groups)}",
                timeout=0,
            )
            for number, group in enumerate(groups, 1)
        ]
        return wait_for_runs(client, [run.id for run in started]), [len(g) for g in groups]


def _checked(params: FanoutParams, ids: list[str]) -> list[Check] | None:
    """The checks, or None when this run syncs every integration: it does not check, or the
    checks could not run at all (no store, no slots), which must never pass for idle."""
    if not checks_apply(params):
        return None
    try:
        return check_integrations(params, ids)
    except Exception:
        get_run_logger().exception("the checks could not run; syncing every integration")
        return None


@flow(name="sync-fanout", log_prints=False)
def sync_fanout(params: FanoutParams) -> State:
    """Sync many integrations as runs of the batch deployment, spread over the pool's workers;
    an incremental run first checks each one and syncs only those that need it."""
    ids = params.integration_ids or FanoutParams(integration_ids=_listed_ids()).integration_ids
    if not ids:
        return Completed(name="NothingToSync", message=f"{INTEGRATIONS_VARIABLE} lists none")
    checked = _checked(params, ids)
    to_sync = ids if checked is None else [c.integration_id for c in checked if c.must_sync]
    runs, sizes = start_batches(params, to_sync) if to_sync else ([], [])
    parts = [] if checked is None else [checks.checks_markdown(checked)]
    parts += [fanout_markdown(runs, sizes)] if runs else []
    create_markdown_artifact(
        "\n\n".join(parts),
        key=SUMMARY_KEY,
        description="Each integration's check and each batch of this sync: where it ran, how it ended",
    )
    state = fanout_state(runs)
    if checked is None:
        return state
    idle = len(ids) - len(to_sync)
    message = f"{idle} of {len(ids)} idle (checked, no run)"
    return state.model_copy(update={"message": f"{message}; {state.message}" if runs else message})


def sync_with_slot(integration_id: str, options: SyncOptions, api_key: SecretStr) -> SyncOutcome:
    """One integration's sync while it holds its own slot; an error fails this integration only."""

    def slot():
        return concurrency(integration_limit(integration_id), timeout_seconds=SLOT_TIMEOUT_SECONDS)

    return guarded(integration_id, options, api_key, hold=slot)


@flow(name="sync-batch", log_prints=False)
def sync_batch(params: SyncManyParams) -> State:
    """Sync one batch of a fan-out, at most `max_concurrency` integrations at a time."""
    api_key = kombo_api_key()
    options = SyncOptions(**params.model_dump(include=set(SyncOptions.model_fields)))
    ids = params.integration_ids
    in_flight = fit_to_account(min(params.max_concurrency, len(ids)))
    # The account's slots for the whole batch, as many as it syncs at once: taken per integration,
    # every sync queued on that limit's one row in Prefect's database.
    with (
        concurrency(ACCOUNT_LIMIT, occupy=in_flight, timeout_seconds=SLOT_TIMEOUT_SECONDS),
        ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="stagewatch-batch") as pool,
    ):
        futures = [
            pool.submit(contextvars.copy_context().run, sync_with_slot, i, options, api_key)
            for i in ids
        ]
        outcomes = [future.result() for future in futures]
    publish_summary_task(outcomes)
    return _state(outcomes)
