"""The listing steps: pages from Kombo streamed into the store's staging, and what the diff needs.

Records stream page by page from the client into staging and never come back to the caller: each
step returns a small dict (counts, ids, timestamps), which is what the Prefect tasks pass around.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Protocol, TypeVar

from stagewatch.kombo.client import KomboClient
from stagewatch.kombo.errors import UnsupportedError
from stagewatch.kombo.models import Page
from stagewatch.runtime import listing_runtime
from stagewatch.timeutil import format_ts, utcnow

PageCallback = Callable[[int, int], None]
T = TypeVar("T")
READ_AHEAD_PAGES = 2
# Ids per lookup request (`ids` filter): 100 Kombo ids keep the URL near 2.5 KB.
IDS_PER_REQUEST = 100


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

    worker = threading.Thread(
        target=_produce, args=(items, put), name="stagewatch-read-ahead", daemon=True
    )
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


def _produce(items: Iterable[Any], put: Callable[[str, Any], bool]) -> None:
    """`read_ahead`'s worker: hands over each item, then "done" or the error that stopped it,
    and closes the iterator in this thread."""
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


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _stage_applications(stager: Callable[..., None], store: Any, run: RunRef, page: Page) -> None:
    """Stage a page of applications and quarantine its bad ones. A bad record Kombo returned with
    an id is still listed: its stored snapshot stays, and no listing takes it for vanished."""
    unparsed = [item.record_id for item in page.quarantined if item.record_id]
    if page.records or unparsed:
        stager(run.id, page.records, unparsed)
    if page.quarantined:
        store.quarantine(run.id, run.integration_id, page.quarantined)


def _stage_jobs(store: Any, run: RunRef, pages: Iterable[Page]) -> tuple[int, int, int]:
    """Stage pages of jobs, quarantining bad ones; returns pages, jobs and quarantined counts."""
    count = jobs = quarantined = 0
    for page in pages:
        count += 1
        if page.records:
            store.stage_jobs(run.id, page.records)
        if page.quarantined:
            store.quarantine(run.id, run.integration_id, page.quarantined)
        jobs += len(page.records)
        quarantined += len(page.quarantined)
    return count, jobs, quarantined


def fetch_jobs(
    client: KomboClient, store: Any, run: RunRef, *, page_size: int = 250
) -> dict[str, Any]:
    """Stage every job of the integration (jobs carry the stage order the diff needs).

    An ATS without jobs (`INTEGRATION.MODEL_NOT_AVAILABLE` or `MODEL_DISABLED`) is tracked for what
    it has: the result names the error code under `unavailable`, and applications are listed
    anyway, their stage moves without a direction.
    """
    unavailable = None
    try:
        pages, jobs, quarantined = _stage_jobs(
            store, run, client.iter_job_pages(page_size=page_size, include_deleted=True)
        )
    except UnsupportedError as exc:
        pages = jobs = quarantined = 0
        unavailable = exc.code or "unsupported"
    return {
        "run_id": run.id,
        "run_started_at": format_ts(run.started_at),
        "pages": pages,
        "jobs": jobs,
        "quarantined": quarantined,
        "unavailable": unavailable,
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
    confirm_absent: bool = False,
    refetch_jobs: bool = True,
) -> dict[str, Any]:
    """Stage the applications changed after `updated_after` (all of them when None), and what the
    diff needs to judge them.

    Deleted ones are always asked for (`include_deleted=true`), or a soft delete would look like
    nothing happened. `listed_at` is when the listing started on Kombo's clock (the first page's
    `served_at`), falling back to our clock taken before the first request.

    `confirm_absent` (full listings): applications the listing missed are looked up by id before
    any is taken for deleted, since a record that changes while we page may be skipped.
    `refetch_jobs`: jobs the job snapshot lacks, or lacks an application's stage for, are fetched
    by id, so a stage added after a cached job listing still gets its direction.
    """
    filters: dict[str, Any] = {"include_deleted": True}
    if updated_after is not None:
        filters["updated_after"] = updated_after
    started_here = clock()
    absent = {"absent": 0, "rescued": 0}
    with listing_runtime(), store.application_stager(run.id) as stager:
        pages = client.iter_application_pages(page_size=page_size, **filters)
        listed = _stage_listing(store, run, stager, read_ahead(pages), on_page)
        if confirm_absent:
            absent = _confirm_absent(client, store, run, stager, page_size=page_size)
    refetched = _refetch_jobs(client, store, run, page_size=page_size) if refetch_jobs else 0
    return {
        "run_id": run.id,
        **listed,
        "listed_at": listed["listed_at"] or started_here,
        **absent,
        "jobs_refetched": refetched,
    }


def _stage_listing(
    store: Any, run: RunRef, stager: Any, pages: Iterable[Page], on_page: PageCallback | None
) -> dict[str, Any]:
    """Stage every page of a listing; returns its counts and its first page's `served_at`."""
    listed_at: datetime | None = None
    count = applications = quarantined = 0
    for page in pages:
        if count == 0:
            listed_at = page.served_at
        count += 1
        _stage_applications(stager, store, run, page)
        applications += len(page.records)
        quarantined += len(page.quarantined)
        if on_page is not None:
            on_page(count, applications)
    stager.flush()
    return {
        "pages": count,
        "applications": applications,
        "quarantined": quarantined,
        "listed_at": listed_at,
    }


def _confirm_absent(
    client: KomboClient, store: Any, run: RunRef, stager: Any, *, page_size: int
) -> dict[str, int]:
    """Look up by id the live applications a full listing did not contain; those Kombo still
    returns are staged as listed, so only the ones it no longer knows are recorded as deleted."""
    missing = store.absent_applications(run.id)
    found: set[str] = set()
    for ids in _chunks(missing, IDS_PER_REQUEST):
        pages = client.iter_application_pages(page_size=page_size, ids=ids, include_deleted=True)
        for page in pages:
            _stage_applications(stager, store, run, page)
            found.update(app.id for app in page.records)
            found.update(item.record_id for item in page.quarantined if item.record_id)
    stager.flush()
    return {"absent": len(missing), "rescued": len(found.intersection(missing))}


def _refetch_jobs(client: KomboClient, store: Any, run: RunRef, *, page_size: int) -> int:
    """Fetch by id the jobs whose stages the staged applications need but the snapshot lacks."""
    stale = store.stale_job_ids(run.id)
    for ids in _chunks(stale, IDS_PER_REQUEST):
        _stage_jobs(
            store,
            run,
            client.iter_job_pages(page_size=page_size, ids=ids, include_deleted=True),
        )
    return len(stale)
