"""The receiver's side effects, off the request path: a thread takes due deliveries from the
ledger, acts on them through injected callables, and records how it went. A due data-changed
delivery goes out together with every other one its integration has pending, as one event: a
burst of webhooks starts one triggered run per integration rather than one per webhook.

The callables stand for Prefect (`deployments/receiver.py` passes the real ones), so this module
never imports it. Every side effect is idempotent (the event id is derived from the delivery ids,
adding an integration twice adds it once), which is what makes retrying a whole delivery safe.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from stagewatch.timeutil import parse_ts, utcnow
from stagewatch.webhooks.envelope import DATA_CHANGED, Plan, plan_together
from stagewatch.webhooks.ledger import Due, Ledger, LedgerError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
INITIAL_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 300.0
JITTER = 0.2  # +-20 %, so deliveries that failed together do not retry together
# With nothing due, the worker still looks at the ledger this often (another process may write).
IDLE_SECONDS = 60.0


class EmitEvent(Protocol):
    def __call__(
        self, *, event: str, resource: dict[str, str], payload: dict[str, Any], id: UUID
    ) -> None: ...


@dataclass(frozen=True)
class SideEffects:
    """What a delivery can change outside the ledger. Each raises to ask for a retry."""

    emit_event: EmitEvent
    add_integration: Callable[[str], None]
    remove_integration: Callable[[str], None]


def perform(work: Plan, effects: SideEffects) -> None:
    """Carry out a plan. The list of integrations changes before the event goes out, so an
    automation reacting to `kombo.integration-created` finds the integration listed."""
    if work.ignored is not None or work.event is None or work.event_id is None:
        return
    if work.add_integration:
        effects.add_integration(work.add_integration)
    if work.remove_integration:
        effects.remove_integration(work.remove_integration)
    effects.emit_event(
        event=work.event, resource=work.resource, payload=work.payload, id=work.event_id
    )


def backoff_seconds(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before attempt `attempts + 1`: capped exponential, with jitter."""
    delay = min(MAX_DELAY_SECONDS, INITIAL_DELAY_SECONDS * 2 ** (attempts - 1))
    return delay * (1 - JITTER + 2 * JITTER * rand())


class Worker:
    """Acts on due deliveries; `run_pending` does one pass (tests call it directly), `start`
    runs passes in a daemon thread until `stop`."""

    def __init__(
        self,
        ledger: Ledger,
        effects: SideEffects,
        *,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.ledger = ledger
        self.effects = effects
        self._clock = clock
        self._rand = rand
        self.max_attempts = max_attempts
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def run_pending(self) -> int:
        """Act on every delivery due now; returns how many were attempted."""
        attempted = 0
        while batch := self.ledger.due(self._clock()):
            acted: set[str] = set()
            for due in batch:
                if due.delivery.id in acted:  # sent with an earlier one of its integration
                    continue
                group = self._together(due)
                self._attempt(group)
                acted.update(each.delivery.id for each in group)
                attempted += len(group)
        return attempted

    def _together(self, due: Due) -> list[Due]:
        """`due` and the deliveries that go out with it, oldest first."""
        delivery = due.delivery
        if delivery.type != DATA_CHANGED or delivery.integration_id is None:
            return [due]
        group = self.ledger.pending_of(delivery.integration_id, DATA_CHANGED)
        return group if any(each.delivery.id == delivery.id for each in group) else [due]

    def _attempt(self, group: list[Due]) -> None:
        """One attempt for the group: all done when it worked, none when it did not."""
        what = _describe(group)
        attempts = {due.delivery.id: due.attempts + 1 for due in group}
        try:
            perform(plan_together([due.delivery for due in group]), self.effects)
        except Exception as exc:  # injected side effects fail in their own ways; each is retried
            self._failed(what, attempts, f"{type(exc).__name__}: {exc}")
            return
        self.ledger.mark_done(attempts, self._clock())
        log.info("%s: done", what)

    def _failed(self, what: str, attempts: dict[str, int], error: str) -> None:
        """Each delivery gives up after its own `max_attempts`; the rest retry together, as
        soon as the one with the fewest attempts is due again."""
        given_up = {i: n for i, n in attempts.items() if n >= self.max_attempts}
        retrying = {i: n for i, n in attempts.items() if n < self.max_attempts}
        if given_up:
            most = max(given_up.values())
            log.error("%s: giving up after %d attempts: %s", what, most, error)
            self.ledger.mark_failed(given_up, error, self._clock())
        if retrying:
            fewest = min(retrying.values())
            delay = backoff_seconds(fewest, self._rand)
            log.warning("%s: attempt %d failed, retry in %.0f s: %s", what, fewest, delay, error)
            self.ledger.mark_retry(retrying, error, self._clock() + timedelta(seconds=delay))

    # -- the thread -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Something was recorded: look at the ledger now rather than at the next due time."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the webhook worker is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="stagewatch-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the delivery in hand; what is still pending waits for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before the pass: a wake during it is kept for the next wait
            try:
                self.run_pending()
                wait = self._seconds_until_due()
            except LedgerError as exc:
                log.error("webhook worker: %s", exc)
                wait = INITIAL_DELAY_SECONDS * 5
            self._wake.wait(wait)

    def _seconds_until_due(self) -> float:
        due = self.ledger.next_due_at()
        if due is None:
            return IDLE_SECONDS
        seconds = (parse_ts(due) - self._clock()).total_seconds()
        return min(IDLE_SECONDS, max(0.0, seconds))


def _describe(group: list[Due]) -> str:
    first = group[0].delivery
    if len(group) == 1:
        return f"webhook {first.id} ({first.type})"
    return f"webhooks {first.id} and {len(group) - 1} more ({first.type}, {first.integration_id})"
