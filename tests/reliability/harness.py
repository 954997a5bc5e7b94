"""What every drill shares: the sync pipeline in process, store fingerprints, the secret scan and the
markdown check.

In process, a sync is `stagewatch.pipeline.run_integration`, the control flow the Prefect flow runs,
with the plain steps, so a drill can run hundreds of syncs in seconds; the drills that need the
whole stack run the `stagewatch sync` command instead (`cli.py`).
"""

from __future__ import annotations

import base64
import logging
import random
import re
import secrets
import sqlite3
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from markdown_it import MarkdownIt

from stagewatch import pipeline
from stagewatch.kombo.client import KomboClient
from stagewatch.kombo.errors import KomboError
from stagewatch.pipeline import PlainSteps, SyncOptions
from stagewatch.publishing import Publication
from stagewatch.report import SyncOutcome
from stagewatch.settings import Settings
from stagewatch.store import Store, pg, wait_for_checkpoints
from stagewatch.store.location import PostgresLocation, is_postgres

KOMBO_URL = (
    "https://api.kombo.dev/v1"  # in-process transports answer it; nothing leaves the process
)
OVERLAP = timedelta(minutes=10)


def drill_key() -> str:
    """A fresh, unmistakable API key per drill session: any hit in a scan is a real leak."""
    return f"sk_drill_{secrets.token_hex(16)}"


class Sleeps(list):
    """A `sleep` that records instead of waiting, so retries cost no time."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


# -- the pipeline in process ----------------------------------------------------------------------


@dataclass
class Synced:
    """A sync's outcome, and the Kombo error that ended it (None when it committed)."""

    outcome: SyncOutcome
    error: KomboError | None
    publications: list[Publication]


class DrillSteps(PlainSteps):
    """The plain steps, keeping the Kombo error a listing step raised (the pipeline turns it into
    the outcome's status; the drills also check its class). Runs are not marked published, as
    if their process stopped after committing: no drill depends on Prefect."""

    def __init__(self, *, lock_wait: float) -> None:
        super().__init__(lock_wait=lock_wait, mark_published=False)
        self.error: KomboError | None = None

    def _recording(self, step, *args, **kwargs):
        try:
            return step(*args, **kwargs)
        except KomboError as exc:
            self.error = exc
            raise

    def fetch_jobs(self, *args, **kwargs):
        return self._recording(super().fetch_jobs, *args, **kwargs)

    def fetch_applications(self, *args, **kwargs):
        return self._recording(super().fetch_applications, *args, **kwargs)


def sync_in_process(
    db: Path,
    transport: httpx.BaseTransport,
    integration_id: str,
    key: str,
    *,
    mode: str = "incremental",
    page_size: int = 250,
    sleep: Sleeps | None = None,
    rng_seed: int = 0,
    base_url: str = KOMBO_URL,
    lock_wait: float = 0.0,
    show_candidate_names: bool = False,
) -> Synced:
    """One sync of one integration through `stagewatch.pipeline`, with the plain steps.

    Kombo's errors end the run with the store's failed statuses; anything else fails the run and
    propagates (a drill counts that as a crash). `lock_wait` is how long it waits for another
    run's lock (the flow waits `tasks.steps.LOCK_WAIT_SECONDS`).
    """
    client = KomboClient(
        key,
        integration_id,
        base_url=base_url,
        transport=transport,
        sleep=sleep if sleep is not None else Sleeps(),
        rng=random.Random(rng_seed),
    )
    options = SyncOptions(mode=mode, page_size=page_size, show_candidate_names=show_candidate_names)
    steps = DrillSteps(lock_wait=lock_wait)
    lease_seconds = Settings().stagewatch_lock_lease_seconds
    with client, Store(db, lease_seconds=lease_seconds) as store:
        outcome = pipeline.run_integration(
            integration_id, options, client=client, store=store, steps=steps
        )
    return Synced(outcome, steps.error, steps.published)


# -- store fingerprints -----------------------------------------------------------------------------

# Run ids differ between a faulty history and a clean one (failed runs take ids too), and these
# columns hold the wall clock; everything else, simulated observation times included, must match.
IGNORED_COLUMNS = {
    "events": {"id", "sync_run_id"},
    "applications": {"last_run_id"},
    "jobs": set(),
    "job_stages": set(),
    "watermarks": {"run_id", "updated_at"},
    "quarantined": {"id", "run_id", "quarantined_at"},
}
# Within an integration the change log's order is part of the history; integrations synced at the
# same time (sync_many's threads) interleave their rows in no particular order.
ORDER_BY = {
    "events": "integration_id, id",
    "applications": "integration_id, application_id",
    "jobs": "integration_id, job_id",
    "job_stages": "integration_id, job_id, stage_id",
    "watermarks": "integration_id",
    "quarantined": "id",
}


def connect_ro(db: Path | str) -> sqlite3.Connection:
    """A read-only connection: the drills read a store without ever writing to it. A PostgreSQL
    store (a URL) answers through `stagewatch.store.pg`, in sqlite3's placeholders too."""
    if is_postgres(str(db)):
        return pg.connect(PostgresLocation.parse(str(db)), readonly=True)
    return sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)


def _order(db: Path | str, table: str) -> str:
    """ORDER_BY, with PostgreSQL's text compared byte by byte as SQLite compares it."""
    if not is_postgres(str(db)):
        return ORDER_BY[table]
    return ", ".join(
        column if column == "id" else f'{column} COLLATE "C"'
        for column in ORDER_BY[table].split(", ")
    )


def fingerprint(db: Path, integrations: Iterable[str] | None = None) -> dict[str, list[tuple]]:
    """Every stored row that makes up the history (of `integrations`, default all), without run
    ids and wall-clock columns."""
    conn = connect_ro(db)
    where, params = "", []
    if integrations is not None:
        params = sorted(integrations)
        where = f"WHERE integration_id IN ({', '.join('?' for _ in params)})"
    try:
        result = {}
        for table, ignored in IGNORED_COLUMNS.items():
            described = conn.execute(f"SELECT * FROM {table} LIMIT 0").description
            columns = [column[0] for column in described if column[0] not in ignored]
            result[table] = [
                tuple(row)
                for row in conn.execute(
                    f"SELECT {', '.join(columns)} FROM {table} {where} ORDER BY {_order(db, table)}",
                    params,
                ).fetchall()
            ]
        return result
    finally:
        conn.close()


def leftovers(db: Path) -> dict[str, int]:
    """What a finished sync must not leave behind: staging rows, locks, runs still 'running'."""
    conn = connect_ro(db)
    try:
        staging = ["staged_applications", "staged_jobs", "staged_seen"]
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in [*staging, "run_locks"]
        }
        counts["running_runs"] = conn.execute(
            "SELECT count(*) FROM sync_runs WHERE status = 'running'"
        ).fetchone()[0]
        return counts
    finally:
        conn.close()


def integrity(db: Path | str) -> str:
    if is_postgres(str(db)):  # PostgreSQL checks its own pages; opening checks the schema
        with Store(db, readonly=True) as store:
            return store.integrity_check()
    conn = connect_ro(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@dataclass
class Comparison:
    """A store against its reference: change-log rows missing or extra, and table differences."""

    lost: int = 0
    duplicated: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


def compare(got: dict[str, list[tuple]], reference: dict[str, list[tuple]]) -> Comparison:
    result = Comparison()
    for table in reference:
        if got[table] == reference[table]:
            continue
        want, have = Counter(reference[table]), Counter(got[table])
        missing, extra = sum((want - have).values()), sum((have - want).values())
        if table == "events":
            result.lost += missing
            result.duplicated += extra
        detail = f"{table}: {missing} rows missing, {extra} extra"
        if not missing and not extra:
            detail = f"{table}: same rows in a different order"
        example = next(iter(want - have), None) or next(iter(have - want), None)
        if example is not None:
            detail += f" (e.g. {str(example)[:300]})"
        result.differences.append(detail)
    return result


# -- secrets ----------------------------------------------------------------------------------------


class SecretScanner:
    """Counts appearances of the API key (plain, URL-encoded, base64, in a bearer header) in
    texts and files; `where` says where, never the key itself."""

    def __init__(self, key: str) -> None:
        forms = {
            key,
            quote(key, safe=""),
            base64.b64encode(key.encode()).decode(),
            base64.b64encode(f"Bearer {key}".encode()).decode(),
        }
        self.needles = [form.encode() for form in forms]
        self.where: list[str] = []
        self.scanned_texts = 0
        self.scanned_bytes = 0

    @property
    def hits(self) -> int:
        return len(self.where)

    def _count(self, label: str, data: bytes) -> None:
        self.scanned_bytes += len(data)
        for needle in self.needles:
            count = data.count(needle)
            if count:
                self.where.append(f"{label} ({count}x)")

    def text(self, label: str, text: str | bytes | None) -> None:
        if text is None:
            return
        self.scanned_texts += 1
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        self._count(label, data)

    def path(self, path: Path) -> None:
        """A file, or every file under a directory (database, -wal and -shm files included), once
        this process's background checkpoints have moved what they move from a WAL into its file."""
        wait_for_checkpoints()
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            try:
                data = file.read_bytes()
            except OSError as exc:  # a file removed while walking (a sqlite -shm) holds nothing
                self.where.append(f"{file}: unreadable ({exc.strerror})")
                continue
            self.scanned_texts += 1
            self._count(str(file), data)


class LogCapture(logging.Handler):
    """Every log record of every logger at DEBUG, formatted with its traceback, for the scan."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def captured_logs() -> Iterator[LogCapture]:
    root = logging.getLogger()
    handler = LogCapture()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def describe(exc: BaseException) -> str:
    """An exception with its traceback and chain, as a log would hold it (for the scan)."""
    return "".join(traceback.format_exception(exc))


# -- markdown ---------------------------------------------------------------------------------------

_MD = MarkdownIt("commonmark").enable("table")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
FORBIDDEN = ("<script", "](", "<img", "<iframe", "javascript:", "onerror=")
# The headings the artifact templates write; anything else is injected text.
HEADINGS = (
    re.compile(r"# \S.*"),  # the title, checked to be the first line and the only h1
    re.compile(r"## Hires and declines"),
    re.compile(r"## Stage moves \(\d+(, \d+ backward)?\)"),
    re.compile(r"## Transitions"),
    re.compile(r"## (Job changes|Deletions|Restores) \(\d+\)"),
    re.compile(r"## Notes"),
    re.compile(r"## Run statistics"),
    re.compile(r"# stagewatch sync: \d+ integrations?( \(.*\))?"),
)


def unescaped_pipes(line: str) -> int:
    count = 0
    escaped = False
    for char in line:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            count += 1
    return count


def _walk(tokens: Iterable[Any]) -> Iterator[Any]:
    for token in tokens:
        yield token
        if token.children:
            yield from _walk(token.children)


def markdown_problems(markdown: str) -> list[str]:
    """Why `markdown` is not inert, well-formed artifact markdown (empty when it is).

    Parsed with markdown-it (CommonMark + tables): no HTML, links or images, only the template's
    headings, and every table row with exactly as many cells as its header (markdown-it itself
    silently drops extra cells, so rows are counted in the source).
    """
    problems: list[str] = []
    lines = markdown.split("\n")
    if _CONTROL.search(markdown):
        problems.append("control characters in the markdown")
    lowered = markdown.lower()
    problems += [f"raw {needle!r} in the markdown" for needle in FORBIDDEN if needle in lowered]
    tokens = _MD.parse(markdown)
    table_lines: set[int] = set()
    h1 = 0
    for token in tokens:
        if token.type == "table_open":
            start, end = token.map
            table_lines.update(range(start, end))
            header = unescaped_pipes(lines[start])
            for number in range(start + 1, end):
                cells = unescaped_pipes(lines[number])
                if cells != header:
                    problems.append(
                        f"table row on line {number + 1} has {cells} pipes, its header {header}"
                    )
        elif token.type == "heading_open":
            text = lines[token.map[0]]
            h1 += token.tag == "h1"
            if not any(pattern.fullmatch(text) for pattern in HEADINGS):
                problems.append(f"unexpected heading {text[:80]!r}")
            if token.tag == "h1" and token.map[0] != 0:
                problems.append(f"h1 on line {token.map[0] + 1}, not the title")
        for inner in _walk([token]):
            if inner.type in ("html_block", "html_inline"):
                problems.append(f"HTML in the markdown: {inner.content[:60]!r}")
            elif inner.type in ("link_open", "image"):
                problems.append(f"{inner.type} in the markdown")
    if h1 > 1:
        problems.append(f"{h1} h1 headings")
    for number, line in enumerate(lines):
        if number not in table_lines and unescaped_pipes(line):
            problems.append(f"unescaped '|' outside a table on line {number + 1}: {line[:80]!r}")
    return problems


# -- results ----------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One case of a drill: what went wrong (nothing, when it passed) and its event figures."""

    name: str
    problems: list[str] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems

    def check(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def add(self, comparison: Comparison, what: str) -> None:
        self.lost += comparison.lost
        self.duplicated += comparison.duplicated
        self.problems += [f"{what}: {d}" for d in comparison.differences]


@dataclass
class DrillResult:
    """A drill's cases, its own problems (coverage the cases did not reach) and its secret scan."""

    name: str
    cases: list[CaseResult]
    scanner: SecretScanner
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            bool(self.cases)
            and all(c.passed for c in self.cases)
            and not self.problems
            and not self.scanner.hits
        )

    def row(self) -> dict[str, Any]:
        return {
            "drill": self.name,
            "cases run": len(self.cases),
            "cases passed": sum(c.passed for c in self.cases),
            "events lost": sum(c.lost for c in self.cases),
            "events duplicated": sum(c.duplicated for c in self.cases),
            "secret hits": self.scanner.hits,
        }
