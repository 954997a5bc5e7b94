"""The pipeline's steps as Prefect tasks: each one library call, small results, cached and retried
only where that helps; `TaskSteps` hands them to `stagewatch.pipeline`.

The client retries single requests (transient errors, `Retry-After`); a task retry starts a whole
listing again, which is worth it only after the client has used up its budget on transient errors.
Fatal, not-ready and unsupported errors are never retried by anyone.

Not ready and unsupported are Kombo's expected answers, not failures: their task runs end Completed
under a state name that says so ("Not ready", "Unsupported"), uncached, and `TaskSteps` raises the
error again in the flow, where the pipeline records it. Each task names its run after the
integration and logs one INFO line saying what it did.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import INPUTS, NO_CACHE, RUN_ID, TASK_SOURCE, CachePolicy
from prefect.context import FlowRunContext
from prefect.runtime import task_run as current_task_run
from prefect.states import Completed, State
from prefect.transactions import get_transaction

from stagewatch import fetch, pipeline
from stagewatch.kombo.errors import KomboError, NotReadyError, TransientError, UnsupportedError
from stagewatch.report import logs
from stagewatch.store import Run
from tasks.names import run_name
from tasks.publish import publish_late_task, publish_task

JOBS_CACHE_EXPIRATION = timedelta(hours=6)
LISTING_RETRIES = 1
LISTING_RETRY_DELAY_SECONDS = 30.0
PROGRESS_EVERY_PAGES = 20
# Each update is an API call made between two pages: at most one per this many seconds.
PROGRESS_MIN_SECONDS = 5.0
LOCK_WAIT_SECONDS = 300.0
# The code that decides what a job listing stages; TASK_SOURCE alone hashes only the task body.
LIBRARY_MODULES = (
    "stagewatch.fetch",
    "stagewatch.kombo.client",
    "stagewatch.kombo.pages",
    "stagewatch.kombo.models",
    "stagewatch.store",
)


@cache
def _library_digest(modules: tuple[str, ...]) -> str:
    sources = [inspect.getsource(importlib.import_module(name)) for name in modules]
    return hashlib.sha256("\0".join(sources).encode()).hexdigest()


@dataclass
class LibrarySource(CachePolicy):
    """Cache key part that changes whenever the library code behind a task changes."""

    modules: tuple[str, ...] = LIBRARY_MODULES

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str:
        return _library_digest(self.modules)


# Jobs are shared across runs of one integration (same database, same Kombo, same code), whatever
# their mode; the client, the store handle and the run are not part of what was listed.
FETCH_JOBS_CACHE = INPUTS + TASK_SOURCE + LibrarySource() - "client" - "store" - "run" - "page_size"
# Applications are reused only by a retry of the same flow run that resumes the same store run.
FETCH_APPLICATIONS_CACHE = (
    INPUTS
    + TASK_SOURCE
    + LibrarySource()
    + RUN_ID
    - "client"
    - "store"
    - "page_size"
    - "estimate"
    - "progress_every"
)
OPEN_RUN_CACHE = INPUTS + TASK_SOURCE + RUN_ID - "store"


def retry_transient(task, task_run, state) -> bool:
    """Retry a listing only when the client gave up on transient errors."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:  # any other failure is not fixed by listing again
        return False
    return False


def _attempt() -> int:
    return current_task_run.run_count or 1


EXPECTED_STATE_NAMES = {"not_ready": "Not ready", "unsupported": "Unsupported"}


def expected_stop(exc: NotReadyError | UnsupportedError) -> State:
    """The task run's end when Kombo answers not ready or unsupported: Completed, named for the
    answer, its message the reason, its result the error (raised again in the flow by
    `TaskSteps`). Never cached, so the next run asks Kombo again."""
    transaction = get_transaction()
    if transaction is not None:
        transaction.write_on_commit = False
    name = EXPECTED_STATE_NAMES[exc.run_status]
    get_run_logger().info(logs.stopped_line(name, str(exc)))
    return Completed(name=name, message=str(exc), data=exc)


def raise_stopped(result: Any) -> Any:
    """A step's result, or the error its task ended with as an expected stop (a task that
    returns a state hands its caller that state)."""
    if isinstance(result, State):
        result = result.result()
    if isinstance(result, KomboError):
        raise result
    return result


@task(
    name="open-run",
    task_run_name=run_name("open-run", "integration_id"),
    cache_policy=OPEN_RUN_CACHE,
    cache_expiration=timedelta(days=1),
)
def open_run_task(
    store: Any,
    *,
    db: str,
    integration_id: str,
    mode: str,
    window_start: datetime | None,
    from_watermark: bool = False,
    lock_wait_seconds: float = LOCK_WAIT_SECONDS,
) -> Run:
    """Begin the store run. Cached per flow run, so a retried flow run finds the run it began
    (and the staging its fetch tasks filled) instead of starting over. Waits a while for another
    run of the same integration (say the weekly full sync) to finish before giving up;
    `from_watermark` lets the store read the window only once it holds the lock."""
    run = store.begin_run(
        integration_id,
        mode=mode,
        window_start=window_start,
        wait=lock_wait_seconds,
        from_watermark=from_watermark,
    )
    get_run_logger().info(logs.opened_line(run.id, run.mode, run.window_start))
    return run


@task(
    name="fetch-jobs",
    task_run_name=run_name("fetch-jobs", "integration_id"),
    cache_policy=FETCH_JOBS_CACHE,
    cache_expiration=JOBS_CACHE_EXPIRATION,
    retries=LISTING_RETRIES,
    retry_delay_seconds=LISTING_RETRY_DELAY_SECONDS,
    retry_condition_fn=retry_transient,
)
def fetch_jobs_task(
    client: Any,
    store: Any,
    run: Run,
    *,
    db: str,
    base_url: str,
    integration_id: str,
    page_size: int,
) -> dict[str, Any]:
    """Stage the integration's jobs. The result names the run that staged them: a cache hit from
    an earlier run means the jobs snapshot already holds them."""
    waited = client.stats.waited_seconds
    try:
        result = fetch.fetch_jobs(client, store, run, page_size=page_size)
    except (NotReadyError, UnsupportedError) as exc:
        return expected_stop(exc)
    get_run_logger().info(logs.jobs_line(result, client.stats.waited_seconds - waited))
    return result | {"attempt": _attempt()}


class ListingProgress:
    """A progress artifact for long listings, updated every `every` pages but at most once per
    `min_seconds` (each update is an API call the listing waits for). Kombo gives no total, so
    the percentage is an estimate from what the store holds."""

    def __init__(
        self,
        integration_id: str,
        estimate: Callable[[], int] | None,
        every: int,
        *,
        min_seconds: float = PROGRESS_MIN_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.integration_id = integration_id
        self.estimate = estimate
        self.expected: int | None = None
        self.every = every
        self.min_seconds = min_seconds
        self.monotonic = monotonic
        self.updated_at: float | None = None
        self.artifact_id = None
        self.pages = self.applications = 0

    def percent(self, applications: int, pages: int) -> float:
        if self.expected is None:  # asked once, and only for a listing long enough to show
            self.expected = self.estimate() if self.estimate else 0
        if self.expected > 0:
            return min(95.0, 100.0 * applications / self.expected)
        return 100.0 * pages / (pages + 50)  # unknown size: keeps moving, never claims done

    def __call__(self, pages: int, applications: int) -> None:
        self.pages, self.applications = pages, applications
        if pages % self.every:
            return
        now = self.monotonic()
        if self.updated_at is not None and now - self.updated_at < self.min_seconds:
            return
        self.updated_at = now
        description = (
            f"{self.integration_id}: {pages} pages, {applications} applications listed so far"
        )
        progress = self.percent(applications, pages)
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(progress, description=description)
        else:
            update_progress_artifact(self.artifact_id, progress, description=description)

    def finish(self) -> None:
        """The last update states what the whole listing listed, beside its 100%."""
        if self.artifact_id is not None:
            update_progress_artifact(
                self.artifact_id,
                100.0,
                description=(
                    f"{self.integration_id}: done, {self.pages} pages, "
                    f"{self.applications} applications listed"
                ),
            )


@task(
    name="fetch-applications",
    task_run_name=run_name("fetch-applications", "run"),
    cache_policy=FETCH_APPLICATIONS_CACHE,
    cache_expiration=timedelta(days=1),
    retries=LISTING_RETRIES,
    retry_delay_seconds=LISTING_RETRY_DELAY_SECONDS,
    retry_condition_fn=retry_transient,
)
def fetch_applications_task(
    client: Any,
    store: Any,
    run: Run,
    updated_after: datetime | None,
    *,
    page_size: int,
    estimate: Callable[[], int] | None = None,
    progress_every: int = PROGRESS_EVERY_PAGES,
    confirm_absent: bool = False,
    refetch_jobs: bool = True,
) -> dict[str, Any]:
    """Stage the applications changed since `updated_after` (all of them when None), with what
    the diff needs to judge them (see `stagewatch.fetch.fetch_applications`). A retry lists
    again from the start; staging keeps the last version of each application."""
    progress = ListingProgress(run.integration_id, estimate, progress_every)
    waited = client.stats.waited_seconds
    try:
        result = fetch.fetch_applications(
            client,
            store,
            run,
            updated_after,
            page_size=page_size,
            on_page=progress,
            confirm_absent=confirm_absent,
            refetch_jobs=refetch_jobs,
        )
    except (NotReadyError, UnsupportedError) as exc:
        return expected_stop(exc)
    progress.finish()
    get_run_logger().info(logs.applications_line(result, client.stats.waited_seconds - waited))
    return result | {"attempt": _attempt()}


@task(name="diff-stages", task_run_name=run_name("diff-stages", "run"), cache_policy=NO_CACHE)
def diff_stages_task(store: Any, run: Run, **arguments: Any) -> dict[str, Any]:
    """Diff staging against the snapshot and commit the run in the store's one transaction (see
    `stagewatch.pipeline.commit`). Not retried here: a failure leaves staging in place, and a
    retry of the flow run resumes from it."""
    result = pipeline.commit(store, run, **arguments)
    get_run_logger().info(logs.committed_line(result))
    return result


def flow_will_retry() -> bool:
    """Whether Prefect will run this flow run again after a failure (its retries not used up)."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return False
    retries = context.flow_run.empirical_policy.retries or 0
    return context.flow_run.run_count <= retries


class TaskSteps:
    """The pipeline's steps as the tasks above, for one integration of one database and Kombo
    (the job listing's cache key)."""

    def __init__(self, *, db: str, base_url: str, lock_wait: float = LOCK_WAIT_SECONDS) -> None:
        self.db = db
        self.base_url = base_url
        self.lock_wait = lock_wait

    def open_run(self, store, integration_id, options, *, fresh):
        task = open_run_task.with_options(refresh_cache=True) if fresh else open_run_task
        return task(
            store,
            db=self.db,
            integration_id=integration_id,
            lock_wait_seconds=self.lock_wait,
            **pipeline.open_window(options),
        )

    def fetch_jobs(self, client, store, run, options, *, fresh):
        if fresh:
            task = fetch_jobs_task.with_options(refresh_cache=True)
        else:
            task = fetch_jobs_task.with_options(
                cache_expiration=timedelta(hours=options.jobs_cache_hours)
            )
        return raise_stopped(
            task(
                client,
                store,
                run,
                db=self.db,
                base_url=self.base_url,
                integration_id=run.integration_id,
                page_size=options.page_size,
            )
        )

    def fetch_applications(self, client, store, run, options, **listing):
        estimate = None
        if run.window_start is None:  # a complete listing lists what the store holds
            estimate = partial(store.live_applications, run.integration_id)
        return raise_stopped(
            fetch_applications_task(
                client,
                store,
                run,
                run.window_start,
                page_size=options.page_size,
                estimate=estimate,
                progress_every=PROGRESS_EVERY_PAGES,
                **listing,
            )
        )

    def commit(self, store, run, **arguments):
        return diff_stages_task(store, run, **arguments)

    def publish(self, store, outcome, options):
        return publish_task(
            store,
            outcome,
            show_candidate_names=options.show_candidate_names,
            max_events=options.max_events,
        )

    def publish_late(self, store, runs, *, by_run_id, options):
        return publish_late_task(
            store,
            runs,
            by_run_id=by_run_id,
            show_candidate_names=options.show_candidate_names,
            max_events=options.max_events,
        )

    def will_retry(self) -> bool:
        return flow_will_retry()
