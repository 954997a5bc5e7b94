"""The floor: the least work that still lands every application in SQLite.

It pages `GET /ats/applications` with httpx and writes each page with one `executemany` inside a single
transaction, with no models, no diff and no history: whatever stagewatch spends beyond this is the
price of what it adds. Fetching runs in worker threads (one per integration, at most `concurrency` at
once) and one writer thread owns the database, so network waits overlap with writes.

    KOMBO_API_KEY=... python -m benchmarks.floor --base-url URL --db out.db --integration ID [...]
           [--incremental] [--concurrency 8] [--pages-only]

`--pages-only` is the bound under the floor: it pages the same way but reads only each page's cursor
(parsing just the last page, which has none) and stores nothing, so its time is what the simulator
and loopback alone cost.

Prints one JSON line: {"rows": ..., "requests": ..., "integrations": ..., "seconds": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

PAGE_SIZE = 250
DEFAULT_CONCURRENCY = 8
QUEUE_PAGES = 64  # bounds memory: at most this many pages wait for the writer

# The same SQLite settings as stagewatch's store, so the difference is the work, not the tuning.
PRAGMAS = (
    "journal_mode = WAL",
    "synchronous = NORMAL",
    "cache_size = -32768",
    "secure_delete = FAST",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS watermarks (integration_id TEXT PRIMARY KEY, changed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applications (
    integration_id TEXT NOT NULL,
    id TEXT NOT NULL,
    job_id TEXT,
    current_stage_id TEXT,
    outcome TEXT,
    changed_at TEXT,
    remote_deleted_at TEXT,
    raw TEXT NOT NULL,
    PRIMARY KEY (integration_id, id)
)
"""
UPSERT = "INSERT OR REPLACE INTO applications VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# Keeps the newest `changed_at` seen per integration: a watermark that can only be early, never late.
ADVANCE_WATERMARK = """
INSERT INTO watermarks VALUES (?, ?)
ON CONFLICT (integration_id) DO UPDATE SET changed_at = max(changed_at, excluded.changed_at)
"""


@dataclass
class FloorResult:
    rows: int
    requests: int
    integrations: int
    seconds: float


def _next_cursor(response: httpx.Response) -> str | None:
    """The page's cursor read off its bytes, as stagewatch's client reads it to send ahead; the
    body is parsed only when that cannot tell (the last page, or a record with a "next" key)."""
    # Imported here: the floor itself must not pay for importing stagewatch.
    from stagewatch.kombo.pages import early_next_cursor

    return early_next_cursor(response) or response.json()["data"]["next"]


def iter_pages(
    http: httpx.Client,
    integration_id: str,
    updated_after: str | None,
    counter: list[int],
    *,
    records: bool = True,
) -> Iterator[list[dict[str, Any]]]:
    """Follow `data.next` to the end; `counter[0]` counts requests (one list per thread is enough).
    With `records=False` every page is read for its cursor only and yields nothing."""
    params: dict[str, str] = {"page_size": str(PAGE_SIZE), "include_deleted": "true"}
    if updated_after:
        params["updated_after"] = updated_after
    headers = {"X-Integration-Id": integration_id}
    cursor: str | None = None
    while True:
        page_params = params if cursor is None else {**params, "cursor": cursor}
        response = http.get("/ats/applications", params=page_params, headers=headers)
        counter[0] += 1
        response.raise_for_status()
        if records:
            data = response.json()["data"]
            yield data["results"]
            cursor = data["next"]
        else:
            cursor = _next_cursor(response)
        if not cursor:
            return


def _row(integration_id: str, app: dict[str, Any]) -> tuple:
    return (
        integration_id,
        app["id"],
        app.get("job_id"),
        app.get("current_stage_id"),
        app.get("outcome"),
        app.get("changed_at"),
        app.get("remote_deleted_at"),
        json.dumps(app, separators=(",", ":")),
    )


def _watermarks(db: sqlite3.Connection, integration_ids: Sequence[str]) -> dict[str, str | None]:
    found = dict(db.execute("SELECT integration_id, changed_at FROM watermarks").fetchall())
    return {iid: found.get(iid) for iid in integration_ids}


def sync(
    base_url: str,
    api_key: str,
    integration_ids: Sequence[str],
    db_path: str,
    *,
    incremental: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    transport: httpx.BaseTransport | None = None,
    pages_only: bool = False,
) -> FloorResult:
    """Fetch every integration's applications and store them in one transaction (with
    `pages_only`, page through them and store nothing)."""
    started = time.perf_counter()
    db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        db.execute(f"PRAGMA {pragma}")
    db.executescript(SCHEMA)
    after = _watermarks(db, integration_ids) if incremental else dict.fromkeys(integration_ids)
    pages: queue.Queue[list[tuple] | BaseException | None] = queue.Queue(QUEUE_PAGES)
    counters = [[0] for _ in integration_ids]
    http = httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=60.0,
        transport=transport,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )

    def fetch(index: int) -> None:
        iid = integration_ids[index]
        try:
            listing = iter_pages(http, iid, after[iid], counters[index], records=not pages_only)
            for records in listing:
                pages.put([_row(iid, app) for app in records])
        except BaseException as exc:
            pages.put(exc)
            raise

    def fetch_all() -> None:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(fetch, range(len(integration_ids))))
        pages.put(None)

    rows = 0
    producer = threading.Thread(target=fetch_all, daemon=True)
    with http:
        producer.start()
        db.execute("BEGIN")
        while (item := pages.get()) is not None:
            if isinstance(item, BaseException):
                db.execute("ROLLBACK")
                raise RuntimeError("floor: a fetch failed; nothing was stored") from item
            db.executemany(UPSERT, item)
            rows += len(item)
            newest = max((row[5] for row in item if row[5]), default=None)
            if newest:  # every row of a page is from one integration
                db.execute(ADVANCE_WATERMARK, (item[0][0], newest))
        db.execute("COMMIT")
        producer.join()
    db.close()
    return FloorResult(
        rows=rows,
        requests=sum(c[0] for c in counters),
        integrations=len(integration_ids),
        seconds=time.perf_counter() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--integration", action="append", required=True, dest="integrations")
    parser.add_argument("--incremental", action="store_true")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument(
        "--pages-only", action="store_true", help="read each page's cursor only; store nothing"
    )
    args = parser.parse_args(argv)
    api_key = os.environ.get("KOMBO_API_KEY")
    if not api_key:
        parser.error("KOMBO_API_KEY is not set")
    result = sync(
        args.base_url,
        api_key,
        args.integrations,
        args.db,
        incremental=args.incremental,
        concurrency=args.concurrency,
        pages_only=args.pages_only,
    )
    print(json.dumps(result.__dict__), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
