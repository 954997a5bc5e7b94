"""Prefect flows: sync one integration, or many at once with a bounded number in flight.

One integration's pipeline is open-run -> fetch-jobs -> fetch-applications -> diff-stages -> publish,
called from the flow's own thread. Several integrations run those pipelines in a bounded thread pool
inside one flow run: measured on the SQLite-backed Prefect server, subflows per integration in
threads made the server answer 503 "database is locked" and took 2.6-15 s for six integrations,
while the same tasks in threads took 0.3-0.6 s. Task runs report through events; flow runs do not.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_LOGGING_LEVEL
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator

from stagewatch import report
from stagewatch.kombo.client import BASE_URLS, KomboClient
from stagewatch.kombo.errors import KomboError
from stagewatch.report import SyncOutcome
from stagewatch.settings import Settings, resolve_api_key
from stagewatch.store import LeaseLostError, LockedError, Run, Store, StoreError
from stagewatch.sync import SyncFailed
from stagewatch.timeutil import format_ts
from tasks import sync as sync_tasks
from tasks.publish import publish_late_task, publish_summary_task, publish_task
from tasks.sync import (
    diff_stages_task,
    fetch_applications_task,
    fetch_jobs_task,
    open_run_task,
)

# PREFECT_LOGGING_EXTRA_LOGGERS=stagewatch (set by the CLI, serve.py and prefect.yaml) gives the
# `stagewatch` logger Prefect's API handler but no level: it inherited the root logger's WARNING, and
# the client's INFO retry notes never reached a run's logs. It takes Prefect's level instead.
_library_logger = logging.getLogger("stagewatch")
if _library_logger.level == logging.NOTSET:
    _library_logger.setLevel(PREFECT_LOGGING_LEVEL.value())

IntegrationId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
    ),
]


class SyncOptions(BaseModel):
    """What every sync run takes, whatever the integrations. The API key is never a parameter:
    it comes from the Prefect Secret block `kombo-api-key` or the `KOMBO_API_KEY` variable."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["incremental", "full"] = Field(
        default="incremental",
        description=(
            "incremental lists applications changed since the last run (all of them on the "
            "first run); full lists every application and records the missing ones as deleted."
        ),
    )
    overlap_minutes: int = Field(
        default=10,
        ge=0,
        le=24 * 60,
        description=(
            "The next run lists from this many minutes before this run's listing started, so "
            "changes written while it listed are not missed. Re-listed records add no events."
        ),
    )
    page_size: int = Field(default=250, ge=1, le=250, description="Records per Kombo request.")
    since: datetime | None = Field(
        default=None,
        description=(
            "Incremental only: list applications changed after this time instead of after the "
            "stored watermark (to catch up after an outage or to replay a window)."
        ),
    )
    show_candidate_names: bool = Field(
        default=False,
        description=(
            "Show candidate names in artifacts and events. Off: applications are named by id. "
            "Contact data (email, phone) never appears either way."
        ),
    )
    base_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="Kombo API base URL; default KOMBO_BASE_URL, else the region's URL.",
    )
    region: Literal["eu", "us"] | None = Field(
        default=None, description="Kombo region when no base_url is set; default KOMBO_REGION."
    )
    db: str | None = Field(
        default=None,
        min_length=1,
        description="SQLite database path; default STAGEWATCH_DB, else stagewatch.db.",
    )
    jobs_cache_hours: float = Field(
        default=6,
        ge=0,
        le=24 * 7,
        description=(
            "Reuse a job listing of the same integration for this long (jobs change rarely); "
            "0 lists jobs on every run."
        ),
    )
    max_events: int = Field(
        default=500,
        ge=0,
        le=10_000,
        description=(
            "Prefect events emitted per integration and run, hires and declines first; the rest "
            "are counted in one stagewatch.sync.events-capped event."
        ),
    )


class SyncIntegrationParams(SyncOptions):
    integration_id: IntegrationId = Field(
        description="Kombo integration id, e.g. greenhouse:HWUTwvyx2wLoSUHphiWVrp28."
    )


class SyncManyParams(SyncOptions):
    integration_ids: list[IntegrationId] = Field(
        min_length=1, max_length=500, description="Kombo integration ids to sync."
    )
    max_concurrency: int = Field(
        default=4, ge=1, le=16, description="Integrations synced at the same time."
    )

    @field_validator("integration_ids", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """Also accept one comma-separated string (an environment variable, a pasted list)."""
        if isinstance(value, str):
            return [part for part in re.split(r"[,\s]+", value) if part]
        return value

    @field_validator("integration_ids")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


def open_client(
    api_key: SecretStr,
    integration_id: str,
    base_url: str,
    settings: Settings,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep=time.sleep,
) -> KomboClient:
    """The integration's client. Tests pass the simulator's transport and a sleep that does not
    wait."""
    return KomboClient(
        api_key,
        integration_id,
        base_url=base_url,
        timeout=settings.stagewatch_timeout,
        retry=settings.retry_policy(),
        transport=transport,
        sleep=sleep,
    )


def _flow_will_retry() -> bool:
    """Whether Prefect will run this flow run again after a failure (its retries not used up)."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return False
    retries = context.flow_run.empirical_policy.retries or 0
    return context.flow_run.run_count <= retries


def _resume_or_open(store: Store, db: str, integration_id: str, options: SyncOptions) -> Run:
    """The store run of this flow run: the one a failed attempt left open, else a new one.

    The store decides the window once it holds the integration's lock (the watermark then, unless
    `since` names one), so a run that waited for another lists from where that one left off.
    Without a window the listing is complete, which is what the store calls a full run.
    """
    incremental = options.mode == "incremental"
    kwargs = {
        "db": db,
        "integration_id": integration_id,
        "mode": options.mode,
        "window_start": options.since if incremental else None,
        "from_watermark": incremental and options.since is None,
    }
    run = open_run_task(store, **kwargs)
    if store.resume_run(run):
        return run
    return open_run_task.with_options(refresh_cache=True)(store, **kwargs)


def _fetch_jobs(store: Store, client: KomboClient, run: Run, options: SyncOptions, **key) -> dict:
    """Stage jobs, or reuse a recent listing when the run that staged it committed."""
    task = fetch_jobs_task
    # A full sync is the periodic check of everything, so it lists jobs afresh; the incremental
    # runs after it reuse that listing.
    if options.jobs_cache_hours <= 0 or options.mode == "full":
        task = task.with_options(refresh_cache=True)
    else:
        task = task.with_options(cache_expiration=timedelta(hours=options.jobs_cache_hours))
    result = task(client, store, run, page_size=options.page_size, **key)
    if not _jobs_in_store(store, run, result):
        result = task.with_options(refresh_cache=True)(
            client, store, run, page_size=options.page_size, **key
        )
    return result


def _staged_by(run: Run, result: dict[str, Any]) -> bool:
    return (result["run_id"], result["run_started_at"]) == (run.id, format_ts(run.started_at))


def _jobs_in_store(store: Store, run: Run, result: dict[str, Any]) -> bool:
    """Whether the listing a fetch-jobs result describes reached this database: staged by this
    run, or committed by the very run that staged it (not one that failed, and not a namesake in
    a database recreated at the same path)."""
    if _staged_by(run, result):
        return True
    try:
        staged_by = store.run(result["run_id"])
    except StoreError:
        return False
    return (staged_by["status"], staged_by["started_at"]) == ("succeeded", result["run_started_at"])


def _pipeline(
    store: Store,
    client: KomboClient,
    run: Run,
    options: SyncOptions,
    key: dict[str, str],
) -> dict[str, Any]:
    """fetch-jobs, fetch-applications, diff-stages; returns the outcome's fields."""
    jobs = _fetch_jobs(store, client, run, options, **key)
    listing = fetch_applications_task(
        client,
        store,
        run,
        run.window_start,
        page_size=options.page_size,
        # A listing without a window lists what the store holds; a windowed one's size is unknown.
        estimate=(
            partial(store.live_applications, run.integration_id)
            if run.window_start is None
            else None
        ),
        progress_every=sync_tasks.PROGRESS_EVERY_PAGES,
        confirm_absent=run.mode == "full",
        refetch_jobs=jobs["unavailable"] is None,
    )
    committed = diff_stages_task(
        store,
        run,
        listed_at=listing["listed_at"],
        overlap=timedelta(minutes=options.overlap_minutes),
        stats=client.stats.model_dump(),
        facts={
            "absent_rescued": listing["rescued"],
            "jobs_refetched": listing["jobs_refetched"],
            "jobs_unavailable": jobs["unavailable"],
        },
    )
    return {
        "status": "synced",
        "complete": True,
        "listed_at": listing["listed_at"],
        "next_watermark": committed["next_watermark"],
        "counts": report.labels_from_kinds(
            committed["counts"], store.events(run_id=run.id, kind="outcome_changed")
        ),
        "jobs": jobs["jobs"],
        "jobs_from_cache": not _staged_by(run, jobs),
        "applications": listing["applications"],
        "pages": listing["pages"],
        "quarantined": jobs["quarantined"] + listing["quarantined"],
        "task_retries": jobs["attempt"] - 1 + listing["attempt"] - 1,
        "jobs_unavailable": jobs["unavailable"],
        "jobs_refetched": listing["jobs_refetched"],
        "absent_rescued": listing["rescued"],
        "absent_deleted": store.run(run.id)["absent_deleted"] or 0,
    }


def sync_one(integration_id: str, options: SyncOptions, api_key: SecretStr) -> SyncOutcome:
    """One integration's pipeline inside the current flow run; returns what happened.

    Kombo's answers become outcomes (not ready, unsupported, failed) and the run is recorded with
    that status. Anything else (a database error, a bug) is re-raised after the run is marked
    failed, unless this flow run will be retried: then the run stays open with its staging, and
    the retry resumes it instead of listing again.
    """
    started = time.monotonic()
    settings = Settings()
    db = str(Path(options.db or settings.stagewatch_db).resolve())
    region = options.region or settings.kombo_region
    base_url = (options.base_url or settings.kombo_base_url or BASE_URLS[region]).rstrip("/")
    key = {"db": db, "base_url": base_url, "integration_id": integration_id}
    client = open_client(api_key, integration_id, base_url, settings)
    with client, ExitStack() as closing:
        store = Store(db, lease_seconds=settings.stagewatch_lock_lease_seconds)
        # By the time the store closes, the run is committed (durable, visible) and published, so
        # the flow run ends without waiting for the commit's checkpoint: after a 1M first sync,
        # 6-8 s of copying the WAL into the file, which goes on before the process exits.
        closing.callback(store.close, wait_for_checkpoint=False)
        head: dict[str, Any] = {"integration_id": integration_id, "mode": options.mode}
        try:
            run = _resume_or_open(store, db, integration_id, options)
        except LockedError as exc:
            window = None  # what it would have listed, for the report only
            if options.mode == "incremental":
                window = options.since or store.watermark(integration_id)
            outcome = SyncOutcome(**head, window_start=window, status="failed", message=str(exc))
            return _publish(store, outcome, client, started, options)
        head["window_start"] = run.window_start
        try:
            _publish_late(store, run, options)
            fields = _pipeline(store, client, run, options, key)
        except KomboError as exc:
            with suppress(LeaseLostError):  # taken over meanwhile: the run is over already
                store.fail_run(run.id, status=exc.run_status, error=str(exc), stats=client.stats)
            fields = {"status": exc.run_status, "message": str(exc), "error_code": exc.code}
        except LeaseLostError as exc:  # another run took the lock over: its run stands, not ours
            fields = {"status": "failed", "message": str(exc)}
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if not _flow_will_retry():
                with suppress(LeaseLostError):  # the run is over already; the error goes up
                    store.fail_run(run.id, error=message, stats=client.stats)
            outcome = SyncOutcome(**head, run_id=run.id, status="failed", message=message)
            _publish(store, outcome, client, started, options)
            raise
        outcome = SyncOutcome(**head, run_id=run.id, **fields)
        return _publish(store, outcome, client, started, options)


def _publish_late(store: Store, run: Run, options: SyncOptions) -> None:
    """Publish the runs of this integration that committed but never published (their process
    stopped in between), now that this run holds the lock and before it adds its own."""
    unpublished = store.unpublished_runs(run.integration_id)
    if unpublished:
        publish_late_task(
            store,
            unpublished,
            by_run_id=run.id,
            show_candidate_names=options.show_candidate_names,
            max_events=options.max_events,
        )


def _publish(
    store: Store,
    outcome: SyncOutcome,
    client: KomboClient,
    started: float,
    options: SyncOptions,
) -> SyncOutcome:
    stats = client.stats
    outcome = outcome.model_copy(
        update={
            "requests": stats.requests,
            "retries": stats.retries,
            "waited_seconds": stats.waited_seconds,
            "duration_seconds": time.monotonic() - started,
        }
    )
    publish_task(
        store,
        outcome,
        show_candidate_names=options.show_candidate_names,
        max_events=options.max_events,
    )
    return outcome


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
        name = "NotReady" if o.status == "not_ready" else "Unsupported"
        return Completed(name=name, message=o.message, data=data)
    counts = {s: sum(o.status == s for o in outcomes) for s in report.STATUS_LABELS}
    message = ", ".join(f"{n} {report.STATUS_LABELS[s]}" for s, n in counts.items() if n)
    return Completed(message=message, data=data)


@flow(name="sync-integration", log_prints=False)
def sync_integration(params: SyncIntegrationParams) -> State:
    """Sync one Kombo integration into the stagewatch database and publish what changed."""
    api_key = resolve_api_key(use_prefect_secret=True)
    return _state([sync_one(params.integration_id, params, api_key)])


def _guarded(integration_id: str, options: SyncOptions, api_key: SecretStr) -> SyncOutcome:
    """`sync_one` for the thread pool: an unexpected error (a database that cannot be opened, a
    bug) fails this integration, not its siblings, and is logged with its traceback."""
    try:
        return sync_one(integration_id, options, api_key)
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
    api_key = resolve_api_key(use_prefect_secret=True)
    options = SyncOptions(**params.model_dump(include=set(SyncOptions.model_fields)))
    ids = params.integration_ids
    with ThreadPoolExecutor(
        max_workers=min(params.max_concurrency, len(ids)), thread_name_prefix="stagewatch-sync"
    ) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, _guarded, i, options, api_key) for i in ids
        ]
        outcomes = [future.result() for future in futures]
    publish_summary_task(outcomes)
    return _state(outcomes)
