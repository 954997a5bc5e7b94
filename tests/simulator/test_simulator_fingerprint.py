"""The simulator's answers for fixed seeds and calls, hashed and pinned.

A restructuring of `stagewatch.simulator` must not change a byte a client or a webhook receiver
sees: every page of every listing, the writes and their refusals, the change counts of `advance`,
and every webhook body. A change that is meant to alter the simulated world updates the pin, and
says so in its commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx

from stagewatch.simulator import SimulationError, SimulatorTransport, World
from stagewatch.simulator.catalog import REJECTION_REASONS
from stagewatch.simulator.webhooks import WebhookSender

KEY = "sk_fingerprint"
SEEDS = (1, 2, 7)
# Recorded from the single-module `world.py`, before the simulator was split by role.
PINNED = "bba14af02d3d1d254d1246dbf3c4d1ad2f98a9e3c2689a23ee23697dd58c3718"


def _client(world: World) -> httpx.Client:
    transport = SimulatorTransport(world, clock=lambda: 1_000.0, sleep=lambda _: None)
    return httpx.Client(
        transport=transport,
        base_url="https://api.kombo.dev/v1",
        headers={"Authorization": f"Bearer {KEY}"},
    )


def _answer(response: httpx.Response) -> bytes:
    return json.dumps(
        [response.status_code, response.headers.multi_items(), response.text]
    ).encode()


def _pages(client: httpx.Client, path: str, integration: str, **params: str) -> Iterator[bytes]:
    """Every page of one listing, error answers included (they end the listing)."""
    cursor = None
    while True:
        query = {"page_size": "250", **params} | ({"cursor": cursor} if cursor else {})
        response = client.get(path, params=query, headers={"X-Integration-Id": integration})
        yield _answer(response)
        if response.status_code != 200:
            return
        cursor = response.json()["data"]["next"]
        if cursor is None:
            return


def _snapshot(world: World, client: httpx.Client) -> Iterator[bytes]:
    yield repr(world).encode()
    yield json.dumps(world.integrations).encode()
    for integration_id in world.integrations:
        yield from _pages(client, "/ats/jobs", integration_id, include_deleted="true")
        yield from _pages(client, "/ats/applications", integration_id, include_deleted="true")


def _filtered(world: World, client: httpx.Client) -> Iterator[bytes]:
    """Listings through each filter, on the integrations whose ATS can and cannot evaluate it."""
    for scenario in ("normal", "no-outcomes", "no-stages"):
        integ = world.integration(world.integration_for(scenario))
        job = integ.jobs[0]
        stage_ids = ",".join(stage.id for stage in job.stages[:2]) or "nope"
        ids = ",".join(integ.application_ids.encode(row) for row in (0, 3, 5, 400, 2_100))
        for params in (
            {},
            {"outcomes": "HIRED,DECLINED"},
            {"outcome": "PENDING", "ignore_unsupported_filters": "true"},
            {"current_stage_ids": stage_ids},
            {"current_stage_ids": stage_ids, "ignore_unsupported_filters": "true"},
            {"job_ids": f"{job.id},{integ.jobs[1].id}", "job_remote_ids": job.remote_id},
            {"ids": ids, "include_deleted": "true"},
            {"remote_ids": "100000,100002,100007,99", "outcomes": "PENDING"},
            {"remote_created_after": "2026-01-02T00:00:00.000Z"},
            {"remote_created_after": "2025-12-10", "updated_after": "2026-01-03T12:00:00Z"},
        ):
            yield from _pages(client, "/ats/applications", integ.id, **params)
        for params in (
            {"statuses": "OPEN,CLOSED"},
            {"name_contains": "engineer", "employment_types": "FULL_TIME"},
            {"job_codes": job.job_code, "visibilities": "PUBLIC,INTERNAL"},
            {"remote_created_after": "2025-10-01", "updated_after": "2025-12-20"},
        ):
            yield from _pages(client, "/ats/jobs", integ.id, **params)


def _refusals(world: World, client: httpx.Client) -> Iterator[bytes]:
    """Routing, auth and parameter errors, as the handler words them."""
    normal = {"X-Integration-Id": world.normal_integration_id}
    yield _answer(client.get("/check-api-key"))
    yield _answer(client.delete("/ats/jobs", headers=normal))
    yield _answer(client.get("/ats/nothing", headers=normal))
    yield _answer(client.get("/ats/jobs", headers={"Authorization": "Bearer wrong", **normal}))
    yield _answer(client.get("/ats/jobs"))
    yield _answer(client.get("/ats/jobs", headers={"X-Integration-Id": "greenhouse:nope"}))
    yield _answer(client.get("/ats/applications", params={"page_size": "0"}, headers=normal))
    yield _answer(client.get("/ats/applications", params={"cursor": "abc"}, headers=normal))
    yield _answer(client.get("/ats/applications", params={"outcomes": "MAYBE"}, headers=normal))


def _try(call, *args) -> bytes:
    try:
        return repr(call(*args)).encode()
    except SimulationError as exc:
        return f"{exc.code}: {exc}".encode()


def _writes(world: World, client: httpx.Client) -> Iterator[bytes]:
    """Every public mutation, the refused ones included, directly and over the API."""
    integ = world.integration(world.normal_integration_id)
    job = integ.jobs[0]
    other = next(j for j in integ.jobs[1:] if j.accepts_applications)
    rows = [
        integ.create_application(job.id, f"Ada{k}", "Lovelace", f"ada{k}@example.org", None)
        for k in range(6)
    ]
    rows.append(
        integ.create_application(
            job.id, "Alan", "Turing", "alan@example.org", "+44 1", job.stages[2].id
        )
    )
    ids = [integ.application_ids.encode(row) for row in rows]
    yield repr(rows).encode()
    yield _try(integ.create_application, job.id, "Ada", "Again", "ADA0@example.org", None)
    yield _try(integ.create_application, "nope", "A", "B", "ab@example.org", None)
    yield _try(
        integ.create_application, job.id, "A", "B", "ab@example.org", None, other.stages[0].id
    )
    yield _try(integ.set_stage, ids[0], job.stages[3].id)
    yield _try(integ.set_stage, ids[0], other.stages[0].id)
    yield _try(integ.hire, ids[1])
    yield _try(integ.decline, ids[2], REJECTION_REASONS[3])
    yield _try(integ.decline, ids[2], "bored")
    yield _try(integ.delete_application, ids[3])
    yield _try(integ.delete_application, ids[3])
    yield _try(integ.restore_application, ids[3])
    yield _try(integ.restore_application, ids[3])
    yield _try(integ.delete_application, ids[4])
    yield _try(integ.rename_candidate, ids[5], "Grace", None)
    yield _try(integ.rename_candidate, ids[6], None, None)
    yield _try(integ.rename_candidate, integ.application_ids.encode(10), None, None)
    yield _try(integ.rename_stage, job.stages[1].id, "Screen call")
    yield _try(integ.rename_stage, "nope", "x")
    yield _try(integ.move_to_job, ids[0], other.id)
    yield _try(integ.move_to_job, ids[0], "nope")
    yield _try(integ.hire, "nope")
    flat = world.integration(world.integration_for("no-stages"))
    flat_row = flat.create_application(flat.jobs[0].id, "Flat", "Pipe", "flat@example.org", None)
    flat_id = flat.application_ids.encode(flat_row)
    yield _try(flat.set_stage, flat_id, "nope")
    yield _try(flat.hire, flat_id)
    empty = world.integration(world.integration_for("no-applications"))
    yield _try(empty.create_application, empty.jobs[0].id, "N", "O", "no@example.org", None)
    yield from _api_writes(client, integ.id, other.id, other.stages[-1].id, ids)


def _api_writes(
    client: httpx.Client, integration_id: str, job_id: str, stage_id: str, ids: list[str]
) -> Iterator[bytes]:
    headers = {"X-Integration-Id": integration_id}
    body = {"candidate": {"first_name": "Bo", "last_name": "P", "email_address": "bo@ex.org"}}
    yield _answer(client.post(f"/ats/jobs/{job_id}/applications", json=body, headers=headers))
    yield _answer(client.post(f"/ats/jobs/{job_id}/applications", json=body, headers=headers))
    yield _answer(client.post(f"/ats/jobs/{job_id}/applications", json={}, headers=headers))
    stage = {"stage_id": stage_id}
    yield _answer(client.put(f"/ats/applications/{ids[0]}/stage", json=stage, headers=headers))
    yield _answer(client.put(f"/ats/applications/{ids[1]}/stage", json=stage, headers=headers))


def _session(seed: int) -> Iterator[bytes]:
    world = World(seed=seed, api_key=KEY)
    client = _client(world)
    requests: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(204)

    sender = WebhookSender(
        world, "http://receiver.test/hooks", "whsec_fp", transport=httpx.MockTransport(receive)
    )
    sender.start()
    yield from _snapshot(world, client)
    yield from _refusals(world, client)
    yield b"advance %d" % world.advance(72)
    yield from _snapshot(world, client)
    yield from _writes(world, client)
    yield from _snapshot(world, client)
    yield from _filtered(world, client)
    added = [world.add_integration("normal"), world.add_integration("no-stages")]
    yield json.dumps(added).encode()
    yield b"advance %d" % world.advance(24 * 15)
    world.remove_integration(world.integration_for("no-applications"))
    world.remove_integration(added[1])
    yield b"advance %d" % world.advance(5.5)
    yield from _snapshot(world, client)
    assert sender.flush()
    sender.close()
    for request in requests:
        yield request.content


def fingerprint() -> str:
    digest = hashlib.sha256()
    for seed in SEEDS:
        for part in _session(seed):
            digest.update(b"%d:" % len(part))
            digest.update(part)
    return digest.hexdigest()


def test_the_simulator_answers_exactly_as_pinned():
    assert fingerprint() == PINNED
