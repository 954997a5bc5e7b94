"""The idle fast path: whether an integration changed, asked with one request before any run of it.

An hourly incremental sync of an integration with no changes lists one empty page and commits
nothing. The check sends that same first request (`GET /ats/applications?updated_after=<watermark>
&include_deleted=true`, one record a page) and only integrations whose check listed something,
failed, or that must sync anyway (`Store.check_plan`: no watermark yet, an unpublished run, a last
run that did not succeed) go on to a sync run. An idle integration gets a check record
(`integration_checks`), not a run: its watermark stays where its last sync left it, so the next
check or sync lists from there and a change made after the check is still listed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from stagewatch import report
from stagewatch.kombo.client import KomboClient
from stagewatch.store import CheckPlan, CheckRecord, Store
from stagewatch.timeutil import utcnow

# Kombo's smallest page: the check needs to know whether anything is listed, not what.
CHECK_PAGE_SIZE = 1
Result = Literal["idle", "changed", "failed", "due"]


class Check(BaseModel):
    """What one integration's check found. `due`: it syncs without a request (`reason` says why)."""

    integration_id: str
    result: Result
    reason: str | None = None
    window_start: datetime | None = None
    checked_at: datetime | None = None
    requests: int = 0

    @property
    def must_sync(self) -> bool:
        return self.result != "idle"


def check_one(
    client: KomboClient, plan: CheckPlan, clock: Callable[[], datetime] = utcnow
) -> Check:
    """Check one integration with `client`'s connections (a client of its own counts its requests)."""
    head = {"integration_id": plan.integration_id, "window_start": plan.watermark}
    if plan.must_sync is not None:
        return Check(**head, result="due", reason=plan.must_sync)
    own = client.with_integration(plan.integration_id)
    own.send_ahead = False  # a changed integration syncs anyway: no second page on its behalf
    started = clock()
    try:
        pages = own.iter_application_pages(
            page_size=CHECK_PAGE_SIZE, updated_after=plan.watermark, include_deleted=True
        )
        with contextlib.closing(pages):
            page = next(pages)
    # Anything that stops the check (Kombo's answer, a bug) sends the integration the normal
    # way, which reports the failure as it always has: a failed check is never taken for idle.
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return Check(**head, result="failed", reason=reason, checked_at=started,
                     requests=own.stats.requests)  # fmt: skip
    listed = bool(page.records or page.quarantined or page.next_cursor)
    return Check(
        **head,
        result="changed" if listed else "idle",
        checked_at=page.served_at or started,
        requests=own.stats.requests,
    )


def check_all(
    store: Store,
    client: KomboClient,
    integration_ids: list[str],
    *,
    max_concurrency: int,
    clock: Callable[[], datetime] = utcnow,
) -> list[Check]:
    """Check every integration, `max_concurrency` requests at a time, and record the checks that
    sent one; returns the checks in `integration_ids`' order."""
    plans = store.check_plan(integration_ids)
    workers = max(1, min(max_concurrency, len(plans)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stagewatch-check") as pool:
        checks = list(pool.map(lambda plan: check_one(client, plan, clock), plans))
    store.record_checks(_records(checks))
    return checks


def _records(checks: Iterable[Check]) -> list[CheckRecord]:
    return [
        CheckRecord(
            integration_id=c.integration_id,
            checked_at=c.checked_at,
            window_start=c.window_start,
            result=c.result,
            detail=c.reason if c.result == "failed" else None,
            requests=c.requests,
        )
        for c in checks
        if c.checked_at is not None
    ]


def checks_markdown(checks: list[Check]) -> str:
    """The check of every integration for the fan-out's artifact: the ones that synced one per
    row with why, the idle ones (no run) by id with when they were checked. Three narrow columns,
    so the table fits the Prefect UI's artifact page without scrolling."""
    counts = {r: sum(c.result == r for c in checks) for r in ("idle", "changed", "failed", "due")}
    lines = [
        f"{len(checks)} integrations: {counts['idle']} idle (checked, nothing listed after their "
        f"watermark, no run), {counts['changed']} changed, {counts['failed']} failed the check, "
        f"{counts['due']} synced without a check.",
    ]
    synced = [c for c in checks if c.must_sync]
    if synced:
        lines += ["", "| Integration | Why it synced | Listed after (UTC) |", "|---|---|---|"]
        lines += [
            f"| {report.escape_md(c.integration_id)} | {_why(c)} | {report.short_ts(c.window_start)} |"
            for c in synced
        ]
    idle = [c for c in checks if not c.must_sync]
    if idle:
        times = sorted(c.checked_at for c in idle if c.checked_at is not None)
        lines += [
            "",
            f"Idle, checked between {report.short_ts(times[0])} and {report.short_ts(times[-1])} "
            "(UTC): " + ", ".join(report.escape_md(c.integration_id) for c in idle),
        ]
    return "\n".join(lines)


def _why(check: Check) -> str:
    reason = report.escape_md(check.reason)
    return {
        "changed": "its check listed a change",
        "failed": f"its check failed: {reason}",
        "due": f"{reason} (not checked)",
    }[check.result]
