"""The sync pipeline as plain functions: list from Kombo into the store's staging, then commit.

Records stream page by page from the client into staging and never come back to the caller: each
step returns a small dict (counts, ids, timestamps), which is what the Prefect tasks pass around.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from stagewatch.client import KomboClient
from stagewatch.errors import StagewatchError
from stagewatch.models import Page
from stagewatch.runtime import listing_runtime
from stagewatch.timeutil import format_ts, utcnow

PageCallback = Callable[[int, int], None]
T = TypeVar("T")
READ_AHEAD_PAGES = 2


class SyncFailed(StagewatchError):
    """At least one integration failed; carries every integration's outcome (JSON dicts)."""

    def __init__(self, message: str, outcomes: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.outcomes = outcomes

    def __reduce__(self):  # Prefect may persist the failed state's exception
        return (SyncFailed, (str(self), self.outcomes))


class RunRef(Protocol):
    id: int
    integration_id: str
    started_at: datetime


def read_ahead(items: Iterable[T], depth: int = READ_AHEAD_PAGES) -> Iterator[T]:
    """Iterate `items` in a worker thread that stays up to `depth` items ahead of the caller.

    A listing is a wait for Kombo, then parsing, then staging; without this the three never overlap.
    With it, the next page is requested (and parsed) while the caller stages this one. The worker's
    exception is raised to the caller where the item would have been; when the caller stops early
    the worker stops after the item in hand and its iterator is closed in its own thread before
    this returns, so nothing uses the client after the caller is done with it.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put("item", item):
                    return
            put("done", None)
        except BaseException as exc:  # handed to the caller, raised there
            put("error", exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="stagewatch-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "item":
                yield value
            elif kind == "done":
                return
            else:
                raise value
    finally:
        stop.set()
        worker.join()


def _stage_page(
    stage: Callable[[int, list], None], store: Any, run: RunRef, page: Page
) -> tuple[int, int]:
    """Stage a page's records with `stage` and quarantine its bad ones; returns both counts."""
    if page.records:
        stage(run.id, page.records)
    if page.quarantined:
        store.quarantine(run.id, run.integration_id, page.quarantined)
    return len(page.records), len(page.quarantined)


def fetch_jobs(
    client: KomboClient, store: Any, run: RunRef, *, page_size: int = 250
) -> dict[str, Any]:
    """Stage every job of the integration (jobs carry the stage order the diff needs)."""
    pages = jobs = quarantined = 0
    for page in client.iter_job_pages(page_size=page_size, include_deleted=True):
        pages += 1
        staged, bad = _stage_page(store.stage_jobs, store, run, page)
        jobs += staged
        quarantined += bad
    return {
        "run_id": run.id,
        "run_started_at": format_ts(run.started_at),
        "pages": pages,
        "jobs": jobs,
        "quarantined": quarantined,
    }


def fetch_applications(
    client: KomboClient,
    store: Any,
    run: RunRef,
    updated_after: datetime | None,
    *,
    page_size: int = 250,
    clock: Callable[[], datetime] = utcnow,
    on_page: PageCallback | None = None,
) -> dict[str, Any]:
    """Stage the applications changed after `updated_after` (all of them when None).

    Deleted ones are always asked for (`include_deleted=true`), or a soft delete would look like
    nothing happened. `listed_at` is when the listing started on Kombo's clock (the first page's
    `served_at`), falling back to our clock taken before the first request.
    """
    filters: dict[str, Any] = {"include_deleted": True}
    if updated_after is not None:
        filters["updated_after"] = updated_after
    started_here = clock()
    listed_at: datetime | None = None
    pages = applications = quarantined = 0
    with listing_runtime(), store.application_stager(run.id) as stager:
        listing = client.iter_application_pages(page_size=page_size, **filters)
        for page in read_ahead(listing):
            if listed_at is None:
                listed_at = page.served_at or started_here
            pages += 1
            staged, bad = _stage_page(stager, store, run, page)
            applications += staged
            quarantined += bad
            if on_page is not None:
                on_page(pages, applications)
        stager.flush()
    return {
        "run_id": run.id,
        "pages": pages,
        "applications": applications,
        "quarantined": quarantined,
        "listed_at": listed_at or started_here,
    }


def diff_stages(
    store: Any,
    run: RunRef,
    *,
    listed_at: datetime,
    overlap: timedelta,
    stats: dict[str, Any],
    complete: bool = True,
) -> dict[str, Any]:
    """Commit the run: diff staging against the snapshot and write the change log, the new
    snapshot and the next watermark (`listed_at - overlap`) in the store's one transaction."""
    next_watermark = listed_at - overlap if complete else None
    counts = store.commit_run(
        run.id,
        observed_at=listed_at,
        complete=complete,
        next_watermark=next_watermark,
        stats=stats,
    )
    return {"run_id": run.id, "counts": dict(counts), "next_watermark": next_watermark}
