"""Webhook-triggered syncs of one integration, coalesced: one runs, one waits, the rest do nothing.

Kombo sends a `data-changed` webhook per change it sees, so a busy integration sends bursts, and
each webhook becomes a triggered sync. A sync lists everything changed since the last one, so a
sync that begins listing after a webhook arrived records that webhook's change. Hence one waiting
sync per integration is enough: it holds the integration's waiting place (`sync_waiters`) from
before its listing begins, every trigger that finds the place taken ends Coalesced at once, and
the waiter, once the running sync's lock is free, takes a slot of the limit all integrations'
triggered syncs share and lists what all of them announced. Other integrations have places of their
own; only the slots, never held while a waiter waits for the lock, are shared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

from stagewatch.pipeline import Steps
from stagewatch.report import SyncOutcome
from stagewatch.store import Run, Store

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# How long one attempt at a slot may wait before the waiter renews its place and tries again.
SLOT_WAIT_SECONDS = 30.0
COALESCED = "Coalesced"
LOST_PLACE = "a waiter that took the place over"

Slot = Callable[[float], AbstractContextManager[object]]
"""Entered, holds one slot of the limit shared by every integration's triggered syncs; raises
TimeoutError when no slot came free within the seconds given."""


def no_slot(seconds: float) -> AbstractContextManager[object]:
    return nullcontext()


@dataclass(frozen=True)
class Coalesced:
    """A triggered sync that did not sync: the waiter `into` lists its change."""

    integration_id: str
    into: str

    @property
    def message(self) -> str:
        return (
            f"{self.integration_id} already has a sync waiting ({self.into}); it lists this "
            "change, so this run does not sync"
        )


class ReleaseOnOpen:
    """The steps of the waiter's sync: the waiting place is given up once its run has begun (it
    holds the lock then), so the next trigger waits behind it instead of coalescing into a sync
    that may have listed already. Every other step is the wrapped one."""

    def __init__(self, steps: Steps, release: Callable[[], Any]) -> None:
        self._steps = steps
        self._release = release

    def open_run(self, store: Store, integration_id: str, options: Any, *, fresh: bool) -> Run:
        run = self._steps.open_run(store, integration_id, options, fresh=fresh)
        self._release()
        return run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._steps, name)


class _Place:
    def __init__(self, store: Store, integration_id: str, token: str) -> None:
        self.store, self.integration_id, self.token = store, integration_id, token
        self.coalesced: int | None = None

    def leave(self) -> None:
        left = self.store.leave_waiting_place(self.integration_id, self.token)
        if left is not None:
            self.coalesced = left
            log.info("%s: this sync also lists %d coalesced triggers", self.integration_id, left)


def sync_coalesced(
    store: Store,
    integration_id: str,
    token: str,
    sync: Callable[[Callable[[Steps], Steps]], SyncOutcome],
    *,
    slot: Slot = no_slot,
    slot_wait: float = SLOT_WAIT_SECONDS,
    poll: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncOutcome | Coalesced:
    """Sync `integration_id` for the trigger `token`, or coalesce it into the sync waiting.

    `sync(wrap)` runs the pipeline with its steps wrapped by `wrap` (`ReleaseOnOpen`), holding a
    `slot`. `store` only keeps the waiting place; the sync opens its own. While a live run holds
    the lock the waiter polls every `poll` seconds, and while no slot is free it asks again every
    `slot_wait` seconds, renewing its place each time, so a waiter that died frees it.
    """
    taken_by = store.take_waiting_place(integration_id, token)
    if taken_by is not None:
        return Coalesced(integration_id, taken_by)
    place = _Place(store, integration_id, token)
    try:
        with ExitStack() as held:
            if not _wait_for_turn(place, held, slot, poll=poll, slot_wait=slot_wait, sleep=sleep):
                return Coalesced(integration_id, LOST_PLACE)
            return sync(lambda steps: ReleaseOnOpen(steps, place.leave))
    finally:
        place.leave()  # a sync that failed before its run began frees the place too


def _wait_for_turn(
    place: _Place,
    held: ExitStack,
    slot: Slot,
    *,
    poll: float,
    slot_wait: float,
    sleep: Callable[[float], None],
) -> bool:
    """Wait until no live run holds the lock, then until `held` holds a slot; False when the place
    was lost meanwhile (this process stalled past its lease and another trigger took it over).
    The lock comes first: a waiter holding a slot while the lock is busy would keep other
    integrations from syncing."""
    store, integration_id, token = place.store, place.integration_id, place.token
    started = time.monotonic()
    while store.lock_held(integration_id):
        sleep(poll)
        if not store.renew_waiting_place(integration_id, token):
            return False
    unlocked = time.monotonic()
    while True:
        try:
            held.enter_context(slot(slot_wait))
            break
        except TimeoutError:
            if not store.renew_waiting_place(integration_id, token):
                return False
    if time.monotonic() - started >= poll:
        log.info(
            "%s: waited %.1f s for the running sync and %.1f s for a slot",
            integration_id,
            unlocked - started,
            time.monotonic() - unlocked,
        )
    return True
