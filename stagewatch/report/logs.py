"""One log line per pipeline step saying what it did, for the run's logs (INFO)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stagewatch.report.outcome import event_label, ordered_labels
from stagewatch.timeutil import format_ts


def opened_line(run_id: int, mode: str, window_start: datetime | None) -> str:
    window = "full listing" if window_start is None else f"changes after {format_ts(window_start)}"
    return f"run {run_id} opened: {mode}, {window}"


def jobs_line(result: Mapping[str, Any], waited_seconds: float) -> str:
    line = f"listed {result['jobs']} jobs in {_pages(result['pages'])}"
    if result.get("quarantined"):
        line += f", {result['quarantined']} quarantined"
    if result.get("unavailable"):
        line += f"; the ATS offers no jobs ({result['unavailable']})"
    return line + _waited(waited_seconds)


def applications_line(result: Mapping[str, Any], waited_seconds: float) -> str:
    line = f"listed {result['applications']} applications in {_pages(result['pages'])}"
    if result.get("quarantined"):
        line += f", {result['quarantined']} quarantined"
    if result.get("absent"):
        line += (
            f"; {result['absent']} missing from the full listing, "
            f"{result.get('rescued', 0)} of them still there"
        )
    if result.get("jobs_refetched"):
        line += f"; {result['jobs_refetched']} jobs fetched again by id"
    return line + _waited(waited_seconds)


def committed_line(result: Mapping[str, Any]) -> str:
    counts: dict[str, int] = {}
    for kind, count in result["counts"].items():
        if count:
            label = event_label({"kind": kind})
            counts[label] = counts.get(label, 0) + count
    changes = ", ".join(f"{counts[label]} {label}" for label in ordered_labels(counts))
    watermark = result.get("next_watermark")
    after = f"; next run lists after {format_ts(watermark)}" if watermark else ""
    return f"committed run {result['run_id']}: {changes or 'no changes'}{after}"


def published_line(sent: Mapping[str, Any]) -> str:
    capped = sum(sent.get("events_not_emitted", {}).values())
    line = (
        f"published {len(sent.get('artifacts', []))} artifacts and "
        f"{sent.get('events_emitted', 0)} events"
    )
    return line + (f"; {capped} changes counted in one capped event" if capped else "")


def stopped_line(state_name: str, message: str) -> str:
    return f"{state_name.lower()}, nothing more to list: {message}"


def _pages(pages: int) -> str:
    return f"{pages} page{'s' if pages != 1 else ''}"


def _waited(seconds: float) -> str:
    return f"; waited {seconds:.1f} s on retries" if seconds else ""
