"""Fault injection, latency, rate limits and statistics, through the in-process transport."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from stagewatch.simulator import FAULT_KINDS, FaultConfig, SimulatorTransport, World

KEY = "sk_faults"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def world() -> World:
    return World(seed=6, applications=120, jobs=4, api_key=KEY)


def client(transport: httpx.BaseTransport, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(
        transport=transport, base_url="https://api.kombo.dev/v1", headers=HEADERS, timeout=timeout
    )


def get_page(c: httpx.Client, w: World) -> httpx.Response:
    return c.get(
        "/ats/applications",
        params={"page_size": 20},
        headers={"X-Integration-Id": w.normal_integration_id},
    )


class Sleeps(list):
    """A `sleep` that records instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def only(kind: str, **options) -> FaultConfig:
    return FaultConfig(rate=1.0, kinds=[kind], **options)


def test_fault_config_refuses_nonsense():
    with pytest.raises(ValueError, match=r"fault rate must be between 0 and 1, got 1\.5"):
        FaultConfig(rate=1.5)
    with pytest.raises(ValueError, match=r"unknown fault kind\(s\) \['gremlins'\]"):
        FaultConfig(rate=0.1, kinds=["gremlins"])
    with pytest.raises(ValueError, match="needs at least one fault kind"):
        FaultConfig(rate=0.1, kinds=[])


def test_refusing_faults_answer_like_kombo_and_its_load_balancers():
    answers = {}
    for kind in (
        "rate-limit",
        "rate-limit-no-retry-after",
        "html-500",
        "empty-502",
        "unavailable-503",
    ):
        w = world()
        response = get_page(client(SimulatorTransport(w, only(kind))), w)
        answers[kind] = response
    limited = answers["rate-limit"]
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.json()["error"]["code"] == "PLATFORM.RATE_LIMIT_EXCEEDED"
    bare = answers["rate-limit-no-retry-after"]
    assert (bare.status_code, "retry-after" in bare.headers) == (429, False)
    assert (bare.headers["ratelimit-remaining"], bare.headers["ratelimit-reset"]) == ("0", "2")
    html = answers["html-500"]
    assert (html.status_code, html.headers["content-type"]) == (500, "text/html")
    assert html.text.startswith("<html>")
    assert (answers["empty-502"].status_code, answers["empty-502"].content) == (502, b"")
    unavailable = answers["unavailable-503"]
    assert unavailable.status_code == 503
    assert unavailable.json()["error"]["code"] == "REMOTE.SERVICE_UNAVAILABLE"


def test_refused_writes_change_nothing_but_lost_answers_may_have_applied():
    body = {"candidate": {"first_name": "Ada", "last_name": "L", "email_address": "ada@ex.org"}}
    seen = {}
    for kind in ("unavailable-503", "timeout", "disconnect"):
        w = world()
        integ = w.integration(w.normal_integration_id)
        before = integ.application_count
        c = client(SimulatorTransport(w, only(kind)), timeout=5)
        try:
            outcome = c.post(
                f"/ats/jobs/{integ.jobs[0].id}/applications",
                json=body,
                headers={"X-Integration-Id": w.normal_integration_id},
            ).status_code
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
        seen[kind] = (outcome, integ.application_count - before)
    assert seen == {
        "unavailable-503": (503, 0),
        "timeout": ("ReadTimeout", 1),
        "disconnect": ("RemoteProtocolError", 1),
    }


def test_a_slow_answer_times_out_without_sleeping_and_a_bearable_one_sleeps():
    w = world()
    sleeps = Sleeps()
    with pytest.raises(httpx.ReadTimeout):
        get_page(client(SimulatorTransport(w, only("timeout"), sleep=sleeps), timeout=5), w)
    assert sleeps == []
    slow = SimulatorTransport(w, only("timeout", slow_seconds=3.0), sleep=sleeps)
    assert get_page(client(slow, timeout=5), w).status_code == 200
    assert sleeps == [3.0]


def test_a_dropped_connection_and_a_truncated_body():
    w = world()
    with pytest.raises(httpx.RemoteProtocolError):
        get_page(client(SimulatorTransport(w, only("disconnect"))), w)
    intact = get_page(client(SimulatorTransport(world())), w)
    truncated = get_page(client(SimulatorTransport(world(), only("truncated"))), w)
    assert truncated.status_code == 200
    assert truncated.content == intact.content[: len(intact.content) // 2]
    with pytest.raises(json.JSONDecodeError):
        truncated.json()


def test_record_faults_drop_or_spoil_one_record_of_a_page_but_never_drop_from_a_lookup():
    w = world()
    intact = get_page(client(SimulatorTransport(w)), w).json()["data"]
    skipped = get_page(client(SimulatorTransport(world(), only("skip-record"))), w).json()["data"]
    assert skipped["next"] == intact["next"]  # the cursor moves on past the missing record
    missing = [r for r in intact["results"] if r not in skipped["results"]]
    assert len(missing) == 1 and len(skipped["results"]) == len(intact["results"]) - 1
    spoiled = get_page(client(SimulatorTransport(world(), only("bad-record"))), w).json()["data"]
    changed = [(a, b) for a, b in zip(intact["results"], spoiled["results"], strict=True) if a != b]
    assert [(b["id"], b["remote_created_at"]) for _, b in changed] == [
        (changed[0][0]["id"], "not a timestamp")
    ]
    ids = ",".join(r["id"] for r in intact["results"][:3])
    lookup = client(SimulatorTransport(world(), only("skip-record"))).get(
        "/ats/applications",
        params={"ids": ids},
        headers={"X-Integration-Id": w.normal_integration_id},
    )
    assert [r["id"] for r in lookup.json()["data"]["results"]] == ids.split(",")
    assert "skip-record" not in FAULT_KINDS  # asked for by name only, never in the default storm


def test_fixed_latency_is_added_to_every_kombo_answer_but_not_to_control_calls():
    w = world()
    sleeps = Sleeps()
    c = client(SimulatorTransport(w, latency_ms=25, sleep=sleeps))
    get_page(c, w)
    c.get("/check-api-key")
    c.get("/_sim/stats")
    assert sleeps == [0.025, 0.025]


def test_faults_hit_the_configured_share_deterministically_and_never_the_control_surface():
    def run() -> tuple[list[int], dict]:
        w = world()
        transport = SimulatorTransport(w, FaultConfig(rate=0.3, seed=5, kinds=FAULT_KINDS[:5]))
        c = client(transport)
        statuses = [get_page(c, w).status_code for _ in range(200)]
        control = [c.get("/_sim/stats").status_code for _ in range(50)]
        assert control == [200] * 50
        return statuses, transport.stats()

    statuses, stats = run()
    assert run() == (statuses, stats)
    failed = sum(1 for s in statuses if s != 200)
    assert 40 <= failed <= 80
    assert stats["faults_total"] == failed
    assert set(stats["faults"]) == set(FAULT_KINDS[:5])
    assert stats["requests"] == {"GET /ats/applications": 200}
    assert sum(stats["statuses"].values()) == 200


def test_the_rate_limit_counts_per_window_and_answers_429_past_it():
    now = [1_000.0]
    w = world()
    transport = SimulatorTransport(w, rate_limit=3, clock=lambda: now[0])
    c = client(transport)
    answers = [c.get("/check-api-key") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert {a.headers["ratelimit-limit"] for a in answers} == {"3"}
    assert answers[3].headers["ratelimit-reset"] == "20"  # window 960..1020 s
    assert "retry-after" not in answers[3].headers
    assert answers[3].json()["error"]["code"] == "PLATFORM.RATE_LIMIT_EXCEEDED"
    now[0] = 1_021.0
    assert c.get("/check-api-key").status_code == 200
    assert transport.stats()["rate_limited"] == 1


def test_stats_record_the_most_requests_in_flight_at_once():
    w = world()
    together = threading.Barrier(4, timeout=5)
    transport = SimulatorTransport(w, latency_ms=1, sleep=lambda s: together.wait())
    c = client(transport)
    threads = [threading.Thread(target=get_page, args=(c, w)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    stats = transport.stats()
    assert (stats["max_concurrent"], stats["in_flight"]) == (4, 0)
    assert stats["requests"] == {"GET /ats/applications": 4}
    c.post("/_sim/stats/reset")
    assert transport.stats()["requests_total"] == 0
