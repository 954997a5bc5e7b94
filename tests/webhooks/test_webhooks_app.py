"""The receiver over HTTP: every answer it gives, dedupe across restarts, the 503 that makes Kombo
deliver again, what never reaches logs, and the request path's latency (measured, printed)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import sqlite3
import statistics
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from stagewatch.simulator.server import build_server
from stagewatch.webhooks import (
    KNOWN_TYPES,
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    WEBHOOK_PATH,
    Ledger,
    WebhookConfigError,
    create_app,
    event_id,
    sign,
)
from stagewatch.webhooks.app import _BodyTooLarge, read_capped
from tests.webhooks.test_webhooks_ledger import Recorder

SECRET = "whsec_receiver-test-5f1c9a"
INTEGRATION = "greenhouse:CBNMt7dSNCzBdnRTx87dev4E"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
BODY_MARKER = "Marker Organisation 7731"  # in bodies, never in logs
END_USER = {
    "organization_name": BODY_MARKER,
    "creator_email": "admin@example.com",
    "origin_id": "1",
}


def body(type_: str = "data-changed", delivery_id: str = "d-1", **data) -> bytes:
    defaults = {
        "data-changed": {
            "integration_id": INTEGRATION,
            "integration_tool": "greenhouse",
            "integration_category": "ATS",
            "changed_models": [{"name": "ats_applications"}],
        },
        "integration-created": {
            "id": INTEGRATION,
            "tool": "greenhouse",
            "category": "ATS",
            "end_user": END_USER,
        },
        "integration-state-changed": {
            "integration_tool": "greenhouse",
            "integration_category": "ATS",
            "integration_id": INTEGRATION,
            "end_user": END_USER,
            "qa_status": "PASSED",
            "setup_status": "COMPLETED",
            "state": "INACTIVE",
            "updated_at": "2026-12-01T08:00:00.000Z",
        },
    }
    payload = {"id": delivery_id, "type": type_, "data": defaults.get(type_, {}) | data}
    return json.dumps(payload).encode()


class Client:
    """The app in-process through httpx's ASGI transport, one event loop per request (starlette's
    TestClient is deprecated over httpx). Lifespan does not run: the worker is the test's."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as c:
                return await c.request(method, path, **kwargs)

        return asyncio.run(send())

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)


def signed(content: bytes, secret: str = SECRET) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(secret, content), "content-type": "application/json"}


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def receiver(tmp_path, recorder):
    """A receiver whose worker the test runs by hand; yields (client, app)."""
    ledger = Ledger(tmp_path / "stagewatch-webhooks.db")
    app = create_app(SECRET, ledger, recorder.effects(), clock=lambda: T0, run_worker=False)
    yield Client(app), app
    ledger.close()


def post(client: Client, content: bytes, headers: dict[str, str] | None = None):
    return client.request("POST", "/kombo/webhooks", content=content, headers=headers)


def test_a_signed_ats_data_change_is_recorded_then_emitted(receiver, recorder):
    client, app = receiver
    content = body()
    answer = post(client, content, signed(content))
    assert (answer.status_code, answer.json()) == (200, {"status": "accepted"})
    assert recorder.calls == []  # nothing on the request path
    assert app.state.worker.run_pending() == 1
    assert recorder.calls == [
        (
            "emit",
            {
                "event": "kombo.data-changed",
                "resource": {"prefect.resource.id": f"kombo.integration.{INTEGRATION}"},
                "payload": {
                    "delivery_id": "d-1",
                    "integration_id": INTEGRATION,
                    "integration_tool": "greenhouse",
                    "integration_category": "ATS",
                    "changed_models": ["ats_applications"],
                    "delivery_ids": ["d-1"],
                },
                "id": event_id("d-1"),
            },
        )
    ]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {SIGNATURE_HEADER: ""},
        {SIGNATURE_HEADER: sign("whsec_someone-else", body())},
        {SIGNATURE_HEADER: sign(SECRET, body() + b"\n")},  # signs another body
    ],
    ids=["missing", "empty", "wrong-secret", "tampered"],
)
def test_a_missing_or_wrong_signature_is_401_and_records_nothing(receiver, recorder, headers):
    client, app = receiver
    answer = post(client, body(), headers)
    assert (answer.status_code, answer.json()) == (401, {"status": "unauthorized"})
    assert app.state.ledger.deliveries() == []
    assert app.state.worker.run_pending() == 0
    assert recorder.calls == []


def test_the_signature_is_checked_before_the_body_is_parsed(receiver):
    client, _ = receiver
    assert post(client, b"not json").status_code == 401


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"not json", "the body is not JSON"),
        (b'{"type": "data-changed"}', "not a Kombo webhook envelope (id: Field required)"),
        (
            body(integration_id=None),
            "not a data-changed webhook (data.integration_id: Input should be a valid string)",
        ),
    ],
)
def test_a_signed_body_that_is_not_a_kombo_webhook_is_400(receiver, content, error):
    client, app = receiver
    answer = post(client, content, signed(content))
    assert (answer.status_code, answer.json()) == (400, {"status": "invalid", "error": error})
    assert app.state.ledger.deliveries() == []


def test_an_unknown_type_is_202_recorded_and_ignored(receiver, recorder):
    client, app = receiver
    content = body("hris-employee-exploded", x=1)
    answer = post(client, content, signed(content))
    assert (answer.status_code, answer.json()) == (
        202,
        {"status": "ignored", "reason": "unknown webhook type 'hris-employee-exploded'"},
    )
    assert [(d["type"], d["status"]) for d in app.state.ledger.deliveries()] == [
        ("hris-employee-exploded", "ignored")
    ]
    assert app.state.worker.run_pending() == 0
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"integration_category": "HRIS"}, "not an ATS integration (category HRIS)"),
        ({"changed_models": [{"name": "ats_tags"}]}, "no change to applications, stages or jobs"),
    ],
)
def test_other_data_changes_are_acknowledged_and_ignored(receiver, recorder, data, reason):
    client, app = receiver
    content = body(**data)
    answer = post(client, content, signed(content))
    assert (answer.status_code, answer.json()) == (200, {"status": "ignored", "reason": reason})
    assert app.state.worker.run_pending() == 0
    assert recorder.calls == []


def test_a_repeated_delivery_is_200_and_emitted_once(receiver, recorder):
    client, app = receiver
    content = body()
    assert post(client, content, signed(content)).json() == {"status": "accepted"}
    app.state.worker.run_pending()
    for _ in range(2):
        answer = post(client, content, signed(content))
        assert (answer.status_code, answer.json()) == (200, {"status": "duplicate"})
    assert app.state.worker.run_pending() == 0
    assert len(recorder.calls) == 1


def test_dedupe_survives_a_receiver_restart(tmp_path, recorder):
    path = tmp_path / "ledger.db"
    content = body()
    with Ledger(path) as ledger:
        app = create_app(SECRET, ledger, recorder.effects(), run_worker=False)
        assert post(Client(app), content, signed(content)).json() == {"status": "accepted"}
        app.state.worker.run_pending()
    with Ledger(path) as ledger:
        app = create_app(SECRET, ledger, recorder.effects(), run_worker=False)
        answer = post(Client(app), content, signed(content))
        assert (answer.status_code, answer.json()) == (200, {"status": "duplicate"})
        assert app.state.worker.run_pending() == 0
    assert len(recorder.calls) == 1


def test_integration_state_changes_are_recorded_with_the_delivery(receiver, recorder):
    client, app = receiver
    content = body("integration-state-changed", delivery_id="s-1")
    assert post(client, content, signed(content)).json() == {"status": "accepted"}
    assert app.state.ledger.integration_states() == [
        {
            "integration_id": INTEGRATION,
            "state": "INACTIVE",
            "setup_status": "COMPLETED",
            "qa_status": "PASSED",
            "updated_at": "2026-12-01T08:00:00.000Z",
            "received_at": "2026-12-01T09:00:00.000Z",
            "delivery_id": "s-1",
        }
    ]
    app.state.worker.run_pending()
    assert [(c[1]["event"], c[1]["payload"]["state"]) for c in recorder.calls] == [
        ("kombo.integration-state-changed", "INACTIVE")
    ]


def test_a_body_over_1mb_is_413_and_records_nothing(receiver):
    client, app = receiver
    content = b'{"id": "big", "type": "data-changed", "data": {"pad": "' + b"x" * MAX_BODY_BYTES
    answer = post(client, content + b'"}}', signed(content + b'"}}'))
    assert (answer.status_code, answer.json()) == (
        413,
        {"status": "too-large", "limit_bytes": MAX_BODY_BYTES},
    )
    assert app.state.ledger.deliveries() == []


def _request(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[Request, list]:
    """A request whose body arrives in `chunks`; the list it returns fills as they are read."""
    read: list[bytes] = []

    async def receive():
        chunk = chunks[len(read)]
        read.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": len(read) < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/kombo/webhooks", "headers": headers}
    return Request(scope, receive), read


def test_a_declared_oversized_body_is_refused_before_reading_it():
    request, read = _request([(b"content-length", b"5000000")], [b"x" * 65536] * 80)
    with pytest.raises(_BodyTooLarge):
        asyncio.run(read_capped(request))
    assert read == []


def test_an_undeclared_body_is_read_only_up_to_the_limit():
    """A chunked body of 5 MB: reading stops at the chunk that crosses 1 MB."""
    request, read = _request([], [b"x" * 65536] * 80)
    with pytest.raises(_BodyTooLarge):
        asyncio.run(read_capped(request))
    assert len(read) == MAX_BODY_BYTES // 65536 + 1


def test_a_body_of_exactly_the_limit_is_read():
    request, _ = _request([(b"content-length", str(MAX_BODY_BYTES).encode())], [b"x" * 65536] * 16)
    assert len(asyncio.run(read_capped(request))) == MAX_BODY_BYTES


@pytest.mark.parametrize("secret", [None, "", "   "])
def test_a_receiver_without_a_secret_refuses_to_start(tmp_path, recorder, secret):
    with Ledger(tmp_path / "l.db") as ledger, pytest.raises(WebhookConfigError) as caught:
        create_app(secret, ledger, recorder.effects())
    assert "kombo-webhook-secret" in str(caught.value)
    assert "KOMBO_WEBHOOK_SECRET" in str(caught.value)


def test_healthz_reports_the_ledger(receiver):
    client, app = receiver
    content = body()
    post(client, content, signed(content))
    assert client.get("/healthz").json() == {"status": "ok", "pending": 1, "failed": 0}
    app.state.worker.run_pending()
    assert client.get("/healthz").json() == {"status": "ok", "pending": 0, "failed": 0}


def test_only_post_is_accepted(receiver):
    client, _ = receiver
    assert client.get("/kombo/webhooks").status_code == 405


@contextmanager
def write_lock(path):
    """Another connection holding the ledger's write lock."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_a_ledger_that_cannot_be_written_is_503_so_kombo_resends(tmp_path, recorder):
    path = tmp_path / "ledger.db"
    with Ledger(path, busy_timeout_ms=0) as ledger:
        app = create_app(SECRET, ledger, recorder.effects(), run_worker=False)
        client = Client(app)
        content = body()
        with write_lock(path):
            answer = post(client, content, signed(content))
        assert (answer.status_code, answer.json()) == (503, {"status": "unavailable"})
        assert answer.headers["retry-after"] == "30"
        assert ledger.deliveries() == []
        # Kombo's redelivery, once the ledger is writable again:
        assert post(client, content, signed(content)).json() == {"status": "accepted"}
        assert app.state.worker.run_pending() == 1
    assert len(recorder.calls) == 1


def test_the_secret_and_bodies_never_reach_logs_ledger_or_events(tmp_path, recorder, caplog):
    caplog.set_level(logging.DEBUG)
    recorder.fail = 1  # a failed attempt logs too
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        app = create_app(SECRET, ledger, recorder.effects(), run_worker=False)
        client = Client(app)
        for n, type_ in enumerate(
            ["data-changed", "integration-created", "integration-state-changed"]
        ):
            content = body(type_, delivery_id=f"d-{n}")
            post(client, content, signed(content))
            post(client, content, signed(content))  # duplicate
            post(client, content, {SIGNATURE_HEADER: "wrong"})
        post(client, b"junk " + SECRET.encode(), signed(b"junk " + SECRET.encode()))
        app.state.worker.run_pending()
        stored = ledger.deliveries()
    files = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert caplog.records  # it does log
    assert BODY_MARKER not in caplog.text  # no body, not even its harmless parts
    for text in (caplog.text, repr(stored), repr(recorder.calls)):
        assert SECRET not in text
        assert "admin@example.com" not in text  # contact data
    assert SECRET.encode() not in files
    assert b"admin@example.com" not in files


# -- over loopback ------------------------------------------------------------------------------


@contextmanager
def served(app):
    """The app under uvicorn on loopback, lifespan (and so the worker thread) included."""
    # IPPROTO_TCP, so asyncio sets TCP_NODELAY on accepted connections as uvicorn.run's own
    # sockets get: without it every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    ready = threading.Event()
    server = build_server(app, ready.set)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert ready.wait(10), "the receiver did not start"
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_request_path_latency_over_loopback(tmp_path, recorder):
    """Measured and printed, not asserted: `pytest tests/webhooks/test_webhooks_app.py -k latency -s`."""
    with Ledger(tmp_path / "ledger.db") as ledger:
        app = create_app(SECRET, ledger, recorder.effects())
        with served(app) as url, httpx.Client(base_url=url) as client:
            timings = []
            for n in range(300):
                content = body(delivery_id=f"latency-{n}")
                started = time.perf_counter()
                answer = client.post("/kombo/webhooks", content=content, headers=signed(content))
                timings.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200
        counts = ledger.counts()
    timings = timings[20:]  # connection set-up and first-call imports
    quantiles = statistics.quantiles(timings, n=100)
    print(
        f"\nwebhook request path over loopback, {len(timings)} signed data-changed deliveries "
        f"(ledger synchronous=FULL): p50 {quantiles[49]:.2f} ms, p95 {quantiles[94]:.2f} ms, "
        f"max {max(timings):.2f} ms"
    )
    assert sum(counts.values()) == 300


# -- the README's Webhooks section ---------------------------------------------------------------


def _readme_section() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return readme.split("\n## Webhooks\n")[1].split("\n## ")[0]


def test_the_readme_names_only_real_options_events_and_answers():
    from typer.testing import CliRunner

    from stagewatch.cli import app

    section = _readme_section()
    runner = CliRunner()
    helps = "".join(
        runner.invoke(app, [command, "--help"], terminal_width=200).output
        for command in ("webhooks", "simulator")
    )
    options = set(re.findall(r"(--[a-z][a-z-]+)", section))
    assert options >= {"--webhook-url", "--webhook-secret", "--ledger", "--host", "--port"}
    assert {o for o in options if o not in helps} == set()
    events = set(re.findall(r"kombo\.(?:[a-z]+-)+[a-z]+", section))
    assert events == {f"kombo.{kind}" for kind in KNOWN_TYPES}
    answers = [int(code) for code in re.findall(r"^\| (\d{3}) \|", section, re.MULTILINE)]
    assert answers == [401, 413, 400, 202, 200, 503]
    assert WEBHOOK_PATH in section and f"{MAX_BODY_BYTES // 1024 // 1024} MB" in section
