"""The receiver over HTTP: `POST /kombo/webhooks` and `GET /healthz`, for uvicorn.

The request path verifies, parses, writes one ledger row and answers; everything that talks to
Prefect happens later, in the worker. Only the receiver object holds the secret, and neither it nor
a body is ever logged: a log line names a delivery by id, type and integration.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stagewatch.errors import StagewatchError
from stagewatch.timeutil import utcnow
from stagewatch.webhooks.envelope import (
    INTEGRATION_STATE_CHANGED,
    Delivery,
    EnvelopeError,
    IntegrationStateChanged,
    parse_delivery,
    plan,
    state_fields,
)
from stagewatch.webhooks.ledger import Ledger, LedgerError
from stagewatch.webhooks.signature import SIGNATURE_HEADER, verify
from stagewatch.webhooks.worker import SideEffects, Worker

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/kombo/webhooks"
MAX_BODY_BYTES = 1024 * 1024
RETRY_AFTER_SECONDS = 30


class WebhookConfigError(StagewatchError):
    """The receiver cannot start as configured (no secret)."""


class _BodyTooLarge(Exception):
    pass


async def read_capped(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refusing (`_BodyTooLarge`) past `limit` bytes: a declared length is checked
    before reading, an undeclared one (chunked) is counted while reading."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, outcome: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": outcome, **extra}, status_code=status)


class _Receiver:
    """The endpoints, over one ledger and its worker."""

    def __init__(
        self, key: bytes, ledger: Ledger, worker: Worker, clock: Callable[[], datetime]
    ) -> None:
        self.key = key
        self.ledger = ledger
        self.worker = worker
        self.clock = clock

    async def receive(self, request: Request) -> JSONResponse:
        try:
            body = await read_capped(request)
        except _BodyTooLarge:
            log.warning("webhook refused: body over %d bytes", MAX_BODY_BYTES)
            return _answer(413, "too-large", limit_bytes=MAX_BODY_BYTES)
        if not verify(self.key, body, request.headers.get(SIGNATURE_HEADER)):
            log.warning("webhook refused: missing or wrong %s", SIGNATURE_HEADER)
            return _answer(401, "unauthorized")
        try:
            delivery = parse_delivery(body)
        except EnvelopeError as exc:
            log.warning("webhook refused: %s", exc)
            return _answer(400, "invalid", error=str(exc))
        return await self._record(delivery)

    async def _record(self, delivery: Delivery) -> JSONResponse:
        """Write the delivery, then answer; only a written delivery gets a 2xx."""
        work = plan(delivery)
        state = None
        if delivery.type == INTEGRATION_STATE_CHANGED and work.ignored is None:
            state = state_fields(IntegrationStateChanged.model_validate(delivery.data))
        status = "ignored" if work.ignored else "pending"
        try:
            new = await run_in_threadpool(
                self.ledger.record, delivery, status=status, received_at=self.clock(), state=state
            )
        except LedgerError as exc:
            log.error("webhook %s not recorded, asking Kombo to resend: %s", delivery.id, exc)
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            return JSONResponse({"status": "unavailable"}, status_code=503, headers=headers)
        what = f"webhook {delivery.id} ({delivery.type}, integration {delivery.integration_id})"
        if not new:
            log.info("%s: already received", what)
            return _answer(200, "duplicate")
        if work.ignored:
            log.info("%s: ignored, %s", what, work.ignored)
            return _answer(200 if delivery.known else 202, "ignored", reason=work.ignored)
        self.worker.wake()
        log.info("%s: accepted", what)
        return _answer(200, "accepted")

    async def healthz(self, request: Request) -> JSONResponse:
        try:
            counts = await run_in_threadpool(self.ledger.counts)
        except LedgerError:
            return _answer(503, "ledger-unavailable")
        return _answer(200, "ok", pending=counts.get("pending", 0), failed=counts.get("failed", 0))


def create_app(
    secret: str | SecretStr | None,
    ledger: Ledger,
    effects: SideEffects,
    *,
    clock: Callable[[], datetime] = utcnow,
    run_worker: bool = True,
) -> Starlette:
    """The receiver. `app.state.worker` is its worker, started and stopped with the app's
    lifespan unless `run_worker=False` (tests then call `run_pending` themselves)."""
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not raw or not raw.strip():
        raise WebhookConfigError(
            "no Kombo webhook secret: the receiver would accept anyone's webhooks. Set the "
            "Prefect Secret block 'kombo-webhook-secret' or KOMBO_WEBHOOK_SECRET to the "
            "'Kombo Webhook Secret' of your Kombo account"
        )
    worker = Worker(ledger, effects, clock=clock)
    receiver = _Receiver(raw.strip().encode(), ledger, worker, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if run_worker:
            worker.start()  # its first pass resends what an earlier process left pending
        try:
            yield
        finally:
            if run_worker:
                await run_in_threadpool(worker.stop)

    app = Starlette(
        routes=[
            Route(WEBHOOK_PATH, receiver.receive, methods=["POST"]),
            Route("/healthz", receiver.healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.worker = worker
    app.state.ledger = ledger
    return app
