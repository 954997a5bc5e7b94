"""The real `KomboClient` against the simulator in-process: listings, mutation, limits, faults."""

from __future__ import annotations

import math

import httpx
import pytest

from stagewatch.kombo.client import KomboClient, RetryPolicy
from stagewatch.kombo.errors import (
    AuthenticationError,
    FatalError,
    IntegrationNotFoundError,
    NotReadyError,
    PermissionDeniedError,
    UnsupportedError,
)
from stagewatch.kombo.models import Application
from stagewatch.simulator import FAULT_KINDS, FaultConfig, SimulatorTransport, World

KEY = "sk_client_sim"


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def raw_listing(world: World, integration: str, path: str, **params) -> list[dict]:
    """The records as the simulator serves them, fetched without the client under test."""
    http = httpx.Client(
        transport=SimulatorTransport(world),
        base_url="https://api.kombo.dev/v1",
        headers={"Authorization": f"Bearer {KEY}", "X-Integration-Id": integration},
    )
    records, cursor = [], None
    while True:
        query = {"page_size": 250, **params} | ({"cursor": cursor} if cursor else {})
        data = http.get(path, params=query).json()["data"]
        records += data["results"]
        cursor = data["next"]
        if cursor is None:
            return records


def by_id(records) -> dict[str, dict]:
    return {r.id: r.model_dump(mode="json", exclude_unset=True) for r in records}


def listing(client: KomboClient, **filters) -> list:
    records = []
    for page in client.iter_application_pages(**filters):
        assert page.quarantined == []
        records += page.records
    return records


@pytest.fixture
def world() -> World:
    return World(seed=31, applications=1_300, jobs=15, api_key=KEY)


def client_for(world: World, integration: str | None = None, **options) -> KomboClient:
    transport_options = {k: options.pop(k) for k in ("faults", "sleep") if k in options}
    transport = SimulatorTransport(world, transport_options.get("faults"), sleep=lambda s: None)
    return KomboClient(
        KEY,
        integration or world.normal_integration_id,
        transport=transport,
        sleep=transport_options.get("sleep", lambda s: None),
        **options,
    )


def test_a_full_listing_costs_one_request_per_250_records_and_matches_the_wire(world):
    normal = world.normal_integration_id
    wire = raw_listing(world, normal, "/ats/applications", include_deleted="true")
    with client_for(world) as client:
        records = listing(client, include_deleted=True)
        assert client.stats.requests == math.ceil(len(wire) / 250)
        assert client.stats.retries == 0
        jobs = [job for page in client.iter_job_pages() for job in page.records]
    assert [r.id for r in records] == [r["id"] for r in wire]
    first = records[0]
    assert (first.outcome, first.stage_id, first.effective_job_id) == (
        wire[0]["outcome"],
        wire[0]["current_stage_id"],
        wire[0]["job_id"],
    )
    assert [j.id for j in jobs] == [j["id"] for j in raw_listing(world, normal, "/ats/jobs")]
    assert {len(j.stages) for j in jobs} != {0}


def test_paging_under_concurrent_mutation_neither_loses_nor_doubles_records(world):
    normal = world.normal_integration_id
    integ = world.integration(normal)
    seen: dict[str, Application] = {}
    served_total = 0
    # The world changes between pages, so the next request must wait for the change: no send-ahead.
    with client_for(world, send_ahead=False) as client:
        for number, page in enumerate(client.iter_application_pages(include_deleted=True)):
            served_total += len(page.records)
            for record in page.records:
                seen[record.id] = record
            if page.next_cursor is None:
                break
            # Between pages: change records already served and records still to come.
            served = list(seen)
            integ.rename_candidate(served[number], first_name=f"Renamed{number}")
            integ.hire(served[-1])
            world.advance(hours=2)
    final = raw_listing(world, normal, "/ats/applications", include_deleted="true")
    assert set(seen) == {r["id"] for r in final}
    assert {i: r.model_dump(mode="json") for i, r in seen.items()} == {
        r["id"]: Application.model_validate(r).model_dump(mode="json") for r in final
    }
    assert served_total > len(seen)  # changed records were served again, further on


@pytest.mark.parametrize(
    ("scenario", "error", "code"),
    [
        ("setup-pending", NotReadyError, "INTEGRATION.SETUP_SYNC_PENDING"),
        ("no-applications", UnsupportedError, "INTEGRATION.MODEL_NOT_AVAILABLE"),
        ("permission-missing", PermissionDeniedError, "INTEGRATION.PERMISSION_MISSING"),
    ],
)
def test_each_limitation_integration_raises_its_error_family_without_retrying(
    world, scenario, error, code
):
    with client_for(world, world.integration_for(scenario)) as client:
        with pytest.raises(error) as raised:
            listing(client)
        assert raised.value.code == code
        assert (client.stats.requests, client.stats.retries) == (1, 0)
        assert KEY not in str(raised.value) and KEY not in repr(raised.value)


def test_limited_but_readable_integrations_list_with_their_gaps(world):
    with client_for(world, world.integration_for("no-outcomes")) as client:
        outcomeless = listing(client)
        assert outcomeless and {r.outcome for r in outcomeless} == {None}
        assert listing(client, outcomes=["HIRED"]) == []
        assert len(listing(client, outcomes=["HIRED"], ignore_unsupported_filters=True)) == len(
            outcomeless
        )
    with client_for(world, world.integration_for("no-stages")) as client:
        stageless = listing(client)
        assert stageless and {(r.stage_id, r.stage_name) for r in stageless} == {(None, None)}
        assert {len(j.stages or []) for p in client.iter_job_pages() for j in p.records} == {0}
    with client_for(world, world.integration_for("no-applications")) as client:
        assert [j for p in client.iter_job_pages() for j in p.records]


def test_auth_and_unknown_integrations_are_fatal(world):
    with client_for(world, "greenhouse:NoSuchIntegration0000000") as client:
        with pytest.raises(IntegrationNotFoundError):
            listing(client)
        assert client.check_api_key() == {
            "environment_id": world.environment_id,
            "customer_id": world.environment_id,
        }
    wrong = KomboClient(
        "sk_wrong", world.normal_integration_id, transport=SimulatorTransport(world)
    )
    with wrong, pytest.raises(AuthenticationError):
        wrong.check_api_key()
    assert issubclass(AuthenticationError, FatalError)


def test_retries_through_every_fault_kind_yield_the_fault_free_records(world):
    normal = world.normal_integration_id
    expected = raw_listing(world, normal, "/ats/applications")
    sleeps = Sleeps()
    faults = FaultConfig(rate=0.35, kinds=FAULT_KINDS, seed=8)
    transport = SimulatorTransport(world, faults, sleep=sleeps)
    retry = RetryPolicy(max_attempts=10)
    with KomboClient(KEY, normal, transport=transport, sleep=sleeps, retry=retry) as client:
        records = listing(client, page_size=25)
        stats = client.stats
    assert [r.id for r in records] == [r["id"] for r in expected]
    assert by_id(records) == by_id([Application.model_validate(r) for r in expected])
    injected = transport.stats()["faults"]
    assert set(injected) == set(FAULT_KINDS)  # every kind was met and survived
    # A fault either made its page be retried or hit a next-page request sent early and dropped
    # (the page before it failed to parse); every request is a used page, a retry or dropped.
    assert stats.retries <= sum(injected.values()) <= stats.retries + stats.dropped
    assert stats.requests == math.ceil(len(expected) / 25) + stats.retries + stats.dropped
    assert sleeps and all(0 < s <= 30 for s in sleeps)
    assert 2.0 in sleeps  # Retry-After (or ratelimit-reset) honoured


def test_writes_through_the_client_show_up_in_the_next_incremental_listing(world):
    normal = world.normal_integration_id
    integ = world.integration(normal)
    job = next(j for j in integ.jobs if j.accepts_applications and len(j.stages) > 2)
    with client_for(world) as client:
        created = client.create_application(
            job.id,
            {"candidate": {"first_name": "Ada", "last_name": "L", "email_address": "ada@ex.org"}},
        )
        application_id = created["data"]["id"]
        since = world.now
        world.advance(hours=1)
        moved = client.set_application_stage(application_id, job.stages[2].id)
        assert moved == {"status": "success", "data": {}, "warnings": []}
        changed = listing(client, updated_after=since)
    mine = [r for r in changed if r.id == application_id]
    assert [(r.stage_id, r.stage_name, r.outcome) for r in mine] == [
        (job.stages[2].id, job.stages[2].name, "PENDING")
    ]
