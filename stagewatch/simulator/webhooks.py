"""Kombo's webhooks, simulated, signed and posted to a receiver from a thread of their own.

`data-changed` follows an advance that changes an integration, `integration-created` /
`integration-deleted` one that is connected or disconnected.

The world tells the sender what happened (`World.add_listener`); the sender builds Kombo's payload
at once, on the world's clock and with delivery ids from the seed, then POSTs it from its own
thread, so neither an advance nor a control request waits for the receiver. A delivery is retried
a few times on a connection error, a 5xx, 408 or 429, like a webhook sender that wants a 2xx.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from stagewatch import __version__
from stagewatch.simulator.ids import random_id
from stagewatch.simulator.integration import Integration
from stagewatch.simulator.render import format_ms
from stagewatch.simulator.world import World
from stagewatch.webhooks.signature import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

CATEGORY = "ATS"
MAX_ATTEMPTS = 4
INITIAL_DELAY_SECONDS = 0.5
TIMEOUT_SECONDS = 5.0
ORIGIN_ID_BASE = 36_000
_RETRY_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class Marks:
    """How far an integration's change logs have grown: compared before and after an advance,
    they say which of Kombo's models changed."""

    applications: int
    stage_renames: int
    jobs: int


def marks(integ: Integration) -> Marks:
    renames = sum(stage.renames for job in integ.jobs for stage in job.stages)
    return Marks(integ.app_log.next_seq, renames, integ.job_log.next_seq)


def changed_models(before: Marks, after: Marks) -> list[str]:
    """Kombo's model names for what changed between two marks, in Kombo's enum order."""
    models = []
    if after.jobs != before.jobs:
        models.append("ats_jobs")
    if after.stage_renames != before.stage_renames:
        models.append("ats_application_stages")
    if after.applications != before.applications:
        models.append("ats_applications")
    return models


def end_user(integ: Integration) -> dict[str, Any]:
    return {
        "organization_name": f"Simulated customer {integ.number}",
        "creator_email": f"admin+{integ.number}@example.com",
        "origin_id": str(ORIGIN_ID_BASE + integ.number),
    }


def data_changed(delivery_id: str, integ: Integration, models: list[str]) -> dict[str, Any]:
    data = {
        "integration_id": integ.id,
        "integration_tool": integ.tool,
        "integration_category": CATEGORY,
        "changed_models": [{"name": name} for name in models],
    }
    return {"id": delivery_id, "type": "data-changed", "data": data}


def integration_lifecycle(
    delivery_id: str, integ: Integration, deleted_at: str | None = None
) -> dict[str, Any]:
    """`integration-created`, or `integration-deleted` when `deleted_at` is given."""
    data: dict[str, Any] = {
        "id": integ.id,
        "tool": integ.tool,
        "category": CATEGORY,
        "end_user": end_user(integ),
    }
    if deleted_at is None:
        return {"id": delivery_id, "type": "integration-created", "data": data}
    return {
        "id": delivery_id,
        "type": "integration-deleted",
        "data": data | {"deleted_at": deleted_at},
    }


class WebhookSender:
    """Posts `world`'s webhooks to `url`, signed with `secret`, once `start`ed; `close` at the end.
    `flush` waits until everything queued has been delivered or given up."""

    def __init__(
        self,
        world: World,
        url: str,
        secret: str,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if not secret:
            raise ValueError("the simulator signs webhooks: give it the receiver's secret")
        self.url = url
        self._secret = secret.encode()
        self._client = httpx.Client(
            transport=transport,
            timeout=TIMEOUT_SECONDS,
            headers={"user-agent": f"stagewatch-simulator/{__version__}"},
        )
        self._sleep = sleep
        self.max_attempts = max_attempts
        self._lock = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._in_flight = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self.results: list[tuple[str, str, int | None]] = []  # (delivery id, type, last status)
        self._ids = random.Random(f"stagewatch-sim:{world.seed}:webhooks")
        with world.lock:
            self._marks = {i: marks(world.integration(i)) for i in world.integrations}
        world.add_listener(self._on_world)

    # -- what the world says ----------------------------------------------------------------

    def _on_world(self, kind: str, integ: Integration) -> None:
        with self._lock:
            if kind == "changed":
                after = marks(integ)
                before = self._marks.get(integ.id, Marks(0, 0, 0))
                self._marks[integ.id] = after
                models = changed_models(before, after)
                if not models:
                    return
                envelope = data_changed(random_id(self._ids), integ, models)
            elif kind == "created":
                self._marks[integ.id] = marks(integ)
                envelope = integration_lifecycle(random_id(self._ids), integ)
            elif kind == "deleted":
                self._marks.pop(integ.id, None)
                deleted_at = format_ms(integ.world.now_ms)
                envelope = integration_lifecycle(random_id(self._ids), integ, deleted_at)
            else:
                return
            self._queue.append(envelope)
            self._lock.notify_all()

    # -- delivery -----------------------------------------------------------------------------

    def deliver(self, envelope: dict[str, Any]) -> int | None:
        """POST one webhook, retrying transient failures; the last status (None: no answer)."""
        body = json.dumps(envelope, separators=(",", ":")).encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(self._secret, body)}
        status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                status = self._client.post(self.url, content=body, headers=headers).status_code
            except httpx.TransportError as exc:
                status = None
                log.warning("webhook %s: %s", envelope["id"], type(exc).__name__)
            if status is not None and (status < 500 and status not in _RETRY_STATUSES):
                break
            if attempt < self.max_attempts:
                self._sleep(INITIAL_DELAY_SECONDS * 2 ** (attempt - 1))
        if status is None or not 200 <= status < 300:
            log.warning(
                "webhook %s (%s) not delivered: %s", envelope["id"], envelope["type"], status
            )
        return status

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="simulator-webhooks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._lock.wait()
                if not self._queue:
                    return
                envelope = self._queue.popleft()
                self._in_flight += 1
            status = self.deliver(envelope)
            with self._lock:
                self.results.append((envelope["id"], envelope["type"], status))
                self._in_flight -= 1
                self._lock.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued webhook is delivered or given up; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._queue and not self._in_flight, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to `timeout`), then stop."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # still retrying: leave it its client, the process ends
                log.warning("%d webhooks not delivered", len(self._queue) + self._in_flight)
                return
        self._client.close()
