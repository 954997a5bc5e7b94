"""One integration's sync run in plain Python: the steps in order, Kombo's answers made statuses.

The steps come in as an argument, the way httpx takes a transport: the flow passes them as Prefect
tasks (`tasks.steps.TaskSteps`), the drills and benchmarks pass `PlainSteps`, which call the same
library functions directly. Whoever runs it, this is the one control flow: open (or resume) the
run, publish what earlier runs left unpublished, list jobs and applications into staging, commit,
publish.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from stagewatch import fetch, publishing, report
from stagewatch.kombo.client import KomboClient
from stagewatch.kombo.errors import KomboError
from stagewatch.report import SyncOutcome
from stagewatch.store import LeaseLostError, LockedError, Run, Store, StoreError
from stagewatch.timeutil import format_ts, parse_ts


def split_ids(value: Any) -> Any:
    """Ids given as one comma- or space-separated string (an environment variable, a pasted
    list) as a list; anything else as given, for the model to check."""
    if isinstance(value, str):
        return [part for part in re.split(r"[,\s]+", value) if part]
    return value


class SyncOptions(BaseModel):
    """How a sync runs, whatever runs it and for whichever integrations. The API key is never an
    option: it comes from the Prefect Secret block `kombo-api-key` or `KOMBO_API_KEY`."""

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
            "0 to 1440. The next run lists from this many minutes before this run's listing "
            "started, so changes written while it listed are not missed. Re-listed records add "
            "no events."
        ),
    )
    page_size: int = Field(
        default=250,
        ge=1,
        le=250,
        description="Records per Kombo request, 1 to 250 (Kombo's maximum).",
    )
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
        description=(
            "Kombo API base URL starting with http:// or https://; default KOMBO_BASE_URL, else "
            "the region's URL."
        ),
    )
    region: Literal["eu", "us"] | None = Field(
        default=None, description="Kombo region when no base_url is set; default KOMBO_REGION."
    )
    db: str | None = Field(
        default=None,
        min_length=1,
        description="SQLite path or postgresql:// URL; default STAGEWATCH_DB, else stagewatch.db.",
    )
    jobs_cache_hours: float = Field(
        default=6,
        ge=0,
        le=24 * 7,
        description=(
            "Hours, 0 to 168: reuse a job listing of the same integration for this long (jobs "
            "change rarely); 0 lists jobs on every run."
        ),
    )
    max_events: int = Field(
        default=500,
        ge=0,
        le=10_000,
        description=(
            "0 to 10000 Prefect events per integration and run, hires and declines first; the "
            "rest are counted in one stagewatch.sync.events-capped event."
        ),
    )


class Steps(Protocol):
    """The steps of a run. `fresh=True` asks for a result of this very attempt: no cached run or
    job listing from an earlier one."""

    def open_run(
        self, store: Store, integration_id: str, options: SyncOptions, *, fresh: bool
    ) -> Run: ...

    def fetch_jobs(
        self, client: KomboClient, store: Store, run: Run, options: SyncOptions, *, fresh: bool
    ) -> dict[str, Any]: ...

    def fetch_applications(
        self, client: KomboClient, store: Store, run: Run, options: SyncOptions, **listing: Any
    ) -> dict[str, Any]: ...

    def commit(self, store: Store, run: Run, **commit: Any) -> dict[str, Any]: ...

    def publish(self, store: Store, outcome: SyncOutcome, options: SyncOptions) -> Any: ...

    def publish_late(
        self, store: Store, runs: list[dict[str, Any]], *, by_run_id: int, options: SyncOptions
    ) -> Any: ...

    def will_retry(self) -> bool:
        """Whether whoever runs this will run it again after a failure (Prefect's retries)."""
        ...


def open_window(options: SyncOptions) -> dict[str, Any]:
    """`Store.begin_run`'s window arguments. The store reads the watermark once it holds the lock
    (unless `since` names a window), so a run that waited for another lists from where that one
    left off; without a window the listing is complete, a full run to the store."""
    incremental = options.mode == "incremental"
    return {
        "mode": options.mode,
        "window_start": options.since if incremental else None,
        "from_watermark": incremental and options.since is None,
    }


def commit(
    store: Store,
    run: Run,
    *,
    listed_at: datetime,
    overlap: timedelta,
    stats: dict[str, Any],
    facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Diff staging against the snapshot and write the change log, the new snapshot and the next
    watermark (`listed_at - overlap`, when the store may move it there) in one transaction."""
    counts = store.commit_run(
        run.id,
        observed_at=listed_at,
        next_watermark=listed_at - overlap,
        stats=stats,
        facts=facts,
    )
    watermark = store.run(run.id)["next_watermark"]
    return {
        "run_id": run.id,
        "counts": dict(counts),
        "next_watermark": None if watermark is None else parse_ts(watermark),
    }


class PlainSteps:
    """The steps as plain calls, for the drills and benchmarks. Publishing builds each run's
    `Publication` and keeps it in `published` instead of sending it to Prefect; with
    `mark_published=False` runs stay unpublished, as if their process stopped after committing."""

    def __init__(self, *, lock_wait: float = 0.0, mark_published: bool = True) -> None:
        self.lock_wait = lock_wait
        self.mark_published = mark_published
        self.published: list[publishing.Publication] = []

    def open_run(self, store, integration_id, options, *, fresh):
        return store.begin_run(integration_id, wait=self.lock_wait, **open_window(options))

    def fetch_jobs(self, client, store, run, options, *, fresh):
        return fetch.fetch_jobs(client, store, run, page_size=options.page_size) | {"attempt": 1}

    def fetch_applications(self, client, store, run, options, **listing):
        found = fetch.fetch_applications(
            client, store, run, run.window_start, page_size=options.page_size, **listing
        )
        return found | {"attempt": 1}

    def commit(self, store, run, **arguments):
        return commit(store, run, **arguments)

    def publish(self, store, outcome, options):
        return publishing.publish_run(
            store,
            outcome,
            send=self.published.append,
            show_candidate_names=options.show_candidate_names,
            max_events=options.max_events,
            mark=self.mark_published,
        )

    def publish_late(self, store, runs, *, by_run_id, options):
        if not self.mark_published:
            return None
        return publishing.publish_late(
            store,
            runs,
            by_run_id=by_run_id,
            send=self.published.append,
            show_candidate_names=options.show_candidate_names,
            max_events=options.max_events,
        )

    def will_retry(self) -> bool:
        return False


def run_integration(
    integration_id: str,
    options: SyncOptions,
    *,
    client: KomboClient,
    store: Store,
    steps: Steps,
    monotonic: Callable[[], float] = time.monotonic,
) -> SyncOutcome:
    """Sync one integration and publish what happened; returns its outcome.

    Kombo's answers become outcomes (not ready, unsupported, failed) and the run is recorded with
    that status. Anything else (a database error, a bug) is re-raised after the run is marked
    failed, unless the run will be retried: then it stays open with its staging, and the retry
    resumes it instead of listing again.
    """
    started = monotonic()
    head: dict[str, Any] = {"integration_id": integration_id, "mode": options.mode}
    try:
        run = _open(store, integration_id, options, steps)
    except LockedError as exc:
        failed = SyncOutcome(
            **head,
            window_start=_window(store, integration_id, options),
            status="failed",
            message=str(exc),
        )
        return _finish(store, failed, client, options, steps, monotonic() - started)
    head["window_start"] = run.window_start
    try:
        unpublished = store.unpublished_runs(integration_id)
        if unpublished:
            steps.publish_late(store, unpublished, by_run_id=run.id, options=options)
        fields = _sync(store, client, run, options, steps)
    except (KomboError, LeaseLostError) as exc:
        fields = _stopped(store, run, client, exc)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        if not steps.will_retry():
            with suppress(LeaseLostError):  # the run is over already; the error goes up
                store.fail_run(run.id, error=message, stats=client.stats)
        failed = SyncOutcome(**head, run_id=run.id, status="failed", message=message)
        _finish(store, failed, client, options, steps, monotonic() - started)
        raise
    outcome = SyncOutcome(**head, run_id=run.id, **fields)
    return _finish(store, outcome, client, options, steps, monotonic() - started)


def _open(store: Store, integration_id: str, options: SyncOptions, steps: Steps) -> Run:
    """The run of this attempt: one an earlier attempt left open (a retried flow run resumes its
    staging), else a new one."""
    run = steps.open_run(store, integration_id, options, fresh=False)
    if store.resume_run(run):
        return run
    return steps.open_run(store, integration_id, options, fresh=True)


def _window(store: Store, integration_id: str, options: SyncOptions) -> datetime | None:
    """What a run that could not start would have listed after, for its report."""
    if options.mode != "incremental":
        return None
    return options.since or store.watermark(integration_id)


def _stopped(store: Store, run: Run, client: KomboClient, exc: Exception) -> dict[str, Any]:
    """The outcome fields of a run Kombo's answer stopped, or whose lease another run took."""
    if isinstance(exc, LeaseLostError):  # the run that took over stands, not this one
        return {"status": "failed", "message": str(exc)}
    assert isinstance(exc, KomboError)
    with suppress(LeaseLostError):  # taken over meanwhile: the run is over already
        store.fail_run(run.id, status=exc.run_status, error=str(exc), stats=client.stats)
    return {"status": exc.run_status, "message": str(exc), "error_code": exc.code}


def _sync(
    store: Store, client: KomboClient, run: Run, options: SyncOptions, steps: Steps
) -> dict[str, Any]:
    """fetch jobs, fetch applications, commit; returns the outcome's fields."""
    jobs = _fetch_jobs(store, client, run, options, steps)
    listing = steps.fetch_applications(
        client,
        store,
        run,
        options,
        confirm_absent=run.mode == "full",
        refetch_jobs=jobs["unavailable"] is None,
    )
    facts = {
        "absent_rescued": listing["rescued"],
        "jobs_refetched": listing["jobs_refetched"],
        "jobs_unavailable": jobs["unavailable"],
    }
    committed = steps.commit(
        store,
        run,
        listed_at=listing["listed_at"],
        overlap=timedelta(minutes=options.overlap_minutes),
        stats=client.stats.model_dump(),
        facts=facts,
    )
    return _synced_fields(store, run, jobs, listing, committed) | facts


def _fetch_jobs(
    store: Store, client: KomboClient, run: Run, options: SyncOptions, steps: Steps
) -> dict[str, Any]:
    """Stage jobs, or reuse a recent listing (the steps' cache) when it reached this database. A
    full sync is the periodic check of everything, so it lists jobs afresh."""
    fresh = options.mode == "full" or options.jobs_cache_hours <= 0
    jobs = steps.fetch_jobs(client, store, run, options, fresh=fresh)
    if not _jobs_in_store(store, run, jobs):
        jobs = steps.fetch_jobs(client, store, run, options, fresh=True)
    return jobs


def _staged_by(run: Run, jobs: dict[str, Any]) -> bool:
    return (jobs["run_id"], jobs["run_started_at"]) == (run.id, format_ts(run.started_at))


def _jobs_in_store(store: Store, run: Run, jobs: dict[str, Any]) -> bool:
    """Whether the job listing a fetch-jobs result describes reached this database: staged by
    this run, or committed by the very run that staged it (not one that failed, and not a
    namesake in a database recreated at the same path)."""
    if _staged_by(run, jobs):
        return True
    try:
        staged_by = store.run(jobs["run_id"])
    except StoreError:
        return False
    return (staged_by["status"], staged_by["started_at"]) == ("succeeded", jobs["run_started_at"])


def _synced_fields(
    store: Store, run: Run, jobs: dict[str, Any], listing: dict[str, Any], committed: dict
) -> dict[str, Any]:
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
        "absent_deleted": store.run(run.id)["absent_deleted"] or 0,
    }


def _finish(
    store: Store,
    outcome: SyncOutcome,
    client: KomboClient,
    options: SyncOptions,
    steps: Steps,
    seconds: float,
) -> SyncOutcome:
    stats = client.stats
    outcome = outcome.model_copy(
        update={
            "requests": stats.requests,
            "retries": stats.retries,
            "waited_seconds": stats.waited_seconds,
            "duration_seconds": seconds,
        }
    )
    steps.publish(store, outcome, options)
    return outcome
