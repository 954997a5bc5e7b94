"""Import a file of ATS ids into Kombo's tracking, one row at a time, with a ledger in the store.

Every row gets exactly one result. A row that cannot be sent (bad ids) or that Kombo refuses never
stops the others; only an answer that no row could get past (a bad key, an integration that is not
ready or cannot import) stops the batch, and the rows after it are reported as not sent. A request
whose answer was lost is `unknown` and is not sent again unless asked: Kombo may have acted on it.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from stagewatch.errors import StagewatchError
from stagewatch.kombo.client import KomboClient
from stagewatch.kombo.errors import (
    AuthenticationError,
    FatalError,
    IntegrationInactiveError,
    IntegrationNotFoundError,
    KomboError,
    NotReadyError,
    PermissionDeniedError,
    TransientError,
    UnsupportedError,
    safe_to_resend,
)
from stagewatch.kombo.imports import ImportRequest, ImportRowError, import_request
from stagewatch.report.text import escape_md, slug
from stagewatch.store.imports import FINAL, MAYBE_DONE, ImportLedger

RowStatus = Literal[
    "imported",  # Kombo tracks it now
    "already_tracked",  # Kombo tracked it before
    "skipped",  # imported or already tracked by an earlier run, or the same ids twice: not sent
    "would_send",  # dry run: valid, and would be sent
    "rejected",  # Kombo refused it; the message is Kombo's
    "invalid",  # not a valid request for this ATS; never sent
    "failed",  # Kombo certainly did nothing (throttled, unreachable): a re-run sends it again
    "unknown",  # the request went out and no answer came back: it may have been imported
    "not_sent",  # the batch stopped before this row
]
OK_STATUSES = frozenset({"imported", "already_tracked", "skipped", "would_send"})
# Answers about the integration or the key, not the row: every later row would get them too.
BATCH_STOPPERS = (
    AuthenticationError,
    PermissionDeniedError,
    IntegrationNotFoundError,
    IntegrationInactiveError,
    NotReadyError,
    UnsupportedError,
)
UNKNOWN_NOTE = (
    "the request went out but no answer came back, so Kombo may have imported it; it is not sent "
    "again by itself (the next sync shows it if it was). Re-run with --retry-unknown to ask "
    "Kombo: an import that happened then answers already tracked"
)
FILE_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ImportFileError(StagewatchError):
    """The file as a whole cannot be read (its kind, its encoding, a CSV without a header)."""


@dataclass(frozen=True)
class InputRow:
    """One row of the input file: its line, and its cells or why it could not be read."""

    line: int
    cells: dict[str, Any] | None
    error: str | None = None


class RowResult(BaseModel):
    """One line of the results file."""

    line: int
    status: RowStatus
    ids: dict[str, dict[str, str]] | None = None
    application_id: str | None = None
    code: str | None = None
    message: str | None = None
    body: dict[str, Any] | None = None  # dry run: the request that would be sent


# -- reading the file -------------------------------------------------------------------------------


def read_rows(path: Path) -> list[InputRow]:
    """The rows of a CSV (header: the ATS's id fields) or JSONL (one object per line) file."""
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise ImportFileError(f"{path.name}: name the file .csv or .jsonl (one JSON object a line)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path.name} is not UTF-8 text ({exc.reason})") from None
    return read_csv(text) if kind == "csv" else read_jsonl(text)


def read_csv(text: str) -> list[InputRow]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ImportFileError("the CSV file is empty: its first line must name the id columns")
    rows = []
    for cells in reader:
        line = reader.line_num
        if None in cells:
            rows.append(InputRow(line, None, "the row has more cells than the header has columns"))
        elif any(value not in (None, "") for value in cells.values()):
            rows.append(InputRow(line, cells))
    return rows


def read_jsonl(text: str) -> list[InputRow]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            cells = json.loads(raw)
        except ValueError as exc:
            rows.append(InputRow(line, None, f"not JSON ({exc.msg})"))
            continue
        if isinstance(cells, dict):
            rows.append(InputRow(line, cells))
        else:
            rows.append(InputRow(line, None, "not a JSON object"))
    return rows


def tool_of(integration_id: str) -> str:
    """The ATS of a Kombo integration id (`greenhouse:HWUT...`)."""
    tool, sep, rest = integration_id.partition(":")
    if not sep or not tool or not rest:
        raise StagewatchError(
            f"cannot tell the ATS from integration id {integration_id!r} (expected tool:id); "
            "name it with --tool"
        )
    return tool.lower()


# -- importing --------------------------------------------------------------------------------------


class _BatchStopped(Exception):
    """The row's answer stops the batch; it carries the row's result."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result["message"])
        self.result = result


@dataclass
class Importer:
    """One file's import into one integration. `client` and `ledger` are None in a dry run
    (the ledger may be given then, read only, to tell which rows would be skipped)."""

    integration_id: str
    tool: str
    client: KomboClient | None
    ledger: ImportLedger | None
    tracked_at: datetime | str | None = None
    retry_unknown: bool = False

    def run(
        self, rows: Iterable[InputRow], on_row: Callable[[RowResult], None] = lambda r: None
    ) -> list[RowResult]:
        entries = self.ledger.entries(self.integration_id) if self.ledger else {}
        seen: dict[str, int] = {}
        stopped: str | None = None
        results = []
        for row in rows:
            if stopped is None:
                try:
                    result = self._row(row, entries, seen)
                except _BatchStopped as stop:
                    stopped = stop.result["message"]
                    result = RowResult(line=row.line, **stop.result)
            else:
                result = RowResult(line=row.line, status="not_sent", message=f"not sent: {stopped}")
            results.append(result)
            on_row(result)
        return results

    def _row(
        self, row: InputRow, entries: dict[str, dict[str, Any]], seen: dict[str, int]
    ) -> RowResult:
        if row.cells is None:
            return RowResult(line=row.line, status="invalid", message=row.error)
        try:
            request = import_request(self.tool, row.cells, tracked_at=self.tracked_at)
        except ImportRowError as exc:
            return RowResult(line=row.line, status="invalid", message=str(exc))
        ids = request.tool_ids
        earlier = _earlier(request, entries, seen, self.retry_unknown)
        seen.setdefault(request.key, row.line)
        if earlier is not None:
            status, message = earlier
            return RowResult(line=row.line, status=status, ids=ids, message=message)
        if self.client is None:
            return RowResult(line=row.line, status="would_send", ids=ids, body=request.body())
        return RowResult(line=row.line, ids=ids, **self._send(request))

    def _send(self, request: ImportRequest) -> dict[str, Any]:
        """Send one import, recorded in the ledger before it goes out and after it is answered."""
        assert self.client is not None and self.ledger is not None
        key, integration_id = request.key, self.integration_id
        self.ledger.begin(integration_id, key, request.tool, request.tracked_at)
        try:
            answer = self.client.import_tracked_application(request.tool_ids, request.tracked_at)
        except KomboError as exc:
            status = _status_of(exc)
            message = f"{exc.message}: {UNKNOWN_NOTE}" if status == "unknown" else exc.message
            self.ledger.finish(integration_id, key, status, error_code=exc.code, message=message)
            result = {"status": status, "code": exc.code, "message": message}
            if isinstance(exc, BATCH_STOPPERS):
                raise _BatchStopped(
                    {**result, "ids": request.tool_ids, "message": str(exc)}
                ) from None
            return result
        self.ledger.finish(
            integration_id,
            key,
            answer.status,
            application_id=answer.application_id,
            tracked_at=answer.tracked_at,
            message=answer.note,
        )
        return {
            "status": answer.status,
            "application_id": answer.application_id,
            "message": answer.note,
        }


def _status_of(error: KomboError) -> Literal["rejected", "failed", "unknown"]:
    if isinstance(error, BATCH_STOPPERS):
        return "failed"  # refused before anything was done
    if isinstance(error, TransientError):
        return "failed" if safe_to_resend(error) else "unknown"
    if isinstance(error, FatalError):
        return "rejected"
    return "unknown"


def _earlier(
    request: ImportRequest,
    entries: dict[str, dict[str, Any]],
    seen: dict[str, int],
    retry_unknown: bool,
) -> tuple[RowStatus, str] | None:
    """What an earlier row or run settled for these ids, or None: send it."""
    if request.key in seen:
        return "skipped", f"the same ids as line {seen[request.key]}"
    entry = entries.get(request.key)
    if entry is None:
        return None
    if entry["status"] in FINAL:
        kombo_id = f" as {entry['application_id']}" if entry["application_id"] else ""
        return "skipped", f"{entry['status']} on {entry['updated_at']}{kombo_id}; not sent again"
    if entry["status"] in MAYBE_DONE and not retry_unknown:
        return "unknown", f"an earlier attempt on {entry['updated_at']}: {UNKNOWN_NOTE}"
    return None


# -- the results file -------------------------------------------------------------------------------

RESULT_COLUMNS = ("line", "status", "ids", "application_id", "code", "message")


def write_results(path: Path, results: list[RowResult]) -> None:
    """One line per input row: JSONL, or CSV when `path` ends in .csv (ids as JSON text).
    Written whole to a temporary file and renamed, so a reader never sees half of it."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as out:
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(out, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for result in results:
                row = result.model_dump(mode="json")
                row["ids"] = json.dumps(row["ids"], sort_keys=True) if row["ids"] else ""
                writer.writerow(row)
        else:
            for result in results:
                out.write(result.model_dump_json(exclude_none=True) + "\n")
    partial.replace(path)


def counts(results: Iterable[RowResult]) -> dict[str, int]:
    """Rows per status, in the order `RowStatus` lists them."""
    found = Counter(r.status for r in results)
    return {s: found[s] for s in RowStatus.__args__ if found[s]}  # type: ignore[attr-defined]


# -- the results as markdown (the flow's artifact) ---------------------------------------------------

MAX_MARKDOWN_ROWS = 200


def artifact_key(integration_id: str) -> str:
    return f"import-{slug(integration_id)}"


def _ids_text(ids: dict[str, dict[str, str]] | None) -> str:
    if not ids:
        return "-"
    [(_, fields)] = ids.items()
    return ", ".join(f"{k}={v}" for k, v in fields.items() if k != "id_type")


def results_markdown(integration_id: str, results: list[RowResult], *, dry_run: bool) -> str:
    """Counts per status, then the rows: those needing attention first."""
    title = "Dry run: nothing sent" if dry_run else "Import of tracked applications"
    lines = [f"# {title}", "", f"Integration `{escape_md(integration_id, redact=False)}`", ""]
    lines += ["| status | rows |", "| --- | ---: |"]
    lines += [f"| {s.replace('_', ' ')} | {n} |" for s, n in counts(results).items()]
    ordered = sorted(results, key=lambda r: (r.status in OK_STATUSES, r.line))
    lines += [
        "",
        "| line | status | ATS ids | Kombo id | message |",
        "| ---: | --- | --- | --- | --- |",
    ]
    for r in ordered[:MAX_MARKDOWN_ROWS]:
        lines.append(
            f"| {r.line} | {r.status.replace('_', ' ')} | {escape_md(_ids_text(r.ids), redact=False)}"
            f" | {escape_md(r.application_id, redact=False)} | {escape_md(r.message, limit=300)} |"
        )
    if len(ordered) > MAX_MARKDOWN_ROWS:
        lines += ["", f"{len(ordered) - MAX_MARKDOWN_ROWS} more rows: see the flow's results."]
    return "\n".join(lines) + "\n"
