"""The simulated world: determinism, ids, and how applications live over simulated weeks."""

from __future__ import annotations

import itertools
import random
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from stagewatch.simulator import (
    FAULT_KINDS,
    FaultConfig,
    SimulatorTransport,
    World,
    scenarios_with,
)
from stagewatch.simulator.catalog import REJECTION_REASONS
from stagewatch.simulator.changes import ChangeLog
from stagewatch.simulator.ids import ALPHABET, IdCodec
from stagewatch.simulator.render import format_ms

KEY = "sk_world"


def list_all(client: httpx.Client, path: str, integration: str, **params) -> list[dict]:
    records, cursor = [], None
    while True:
        query = {"page_size": 250, **params} | ({"cursor": cursor} if cursor else {})
        response = client.get(path, params=query, headers={"X-Integration-Id": integration})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        records += data["results"]
        cursor = data["next"]
        if cursor is None:
            return records


def client_for(transport: httpx.BaseTransport) -> httpx.Client:
    return httpx.Client(
        transport=transport,
        base_url="https://api.kombo.dev/v1",
        headers={"Authorization": f"Bearer {KEY}"},
    )


# -- determinism ---------------------------------------------------------------------------------


def _session(seed: int) -> list[tuple[int, list, bytes]]:
    """A fixed series of calls, faults included; returns every answer byte for byte."""
    world = World(seed=seed, applications=300, jobs=6, api_key=KEY)
    faults = FaultConfig(rate=0.3, seed=seed, kinds=["rate-limit", "html-500", "truncated"])
    transport = SimulatorTransport(world, faults, clock=lambda: 1_000.0, sleep=lambda s: None)
    client = client_for(transport)
    normal = world.normal_integration_id
    headers = {"X-Integration-Id": normal}
    answers = []

    def keep(response: httpx.Response) -> httpx.Response:
        answers.append((response.status_code, response.headers.raw, response.content))
        return response

    keep(client.get("/check-api-key"))
    for integration in world.integrations:
        keep(client.get("/ats/jobs", headers={"X-Integration-Id": integration}))
    cursor = None
    for _ in range(4):
        params = {"page_size": 60} | ({"cursor": cursor} if cursor else {})
        page = keep(client.get("/ats/applications", params=params, headers=headers))
        if page.status_code == 200 and page.content.endswith(b"}"):
            cursor = page.json()["data"]["next"]
    keep(client.post("/_sim/advance", params={"hours": 72}))
    since = "2026-01-06T00:00:00.000Z"
    keep(client.get("/ats/applications", params={"updated_after": since}, headers=headers))
    jobs = world.integration(normal).jobs
    body = {"candidate": {"first_name": "Ada", "last_name": "L", "email_address": "ada@ex.org"}}
    keep(client.post(f"/ats/jobs/{jobs[0].id}/applications", json=body, headers=headers))
    keep(client.get("/ats/applications", params={"include_deleted": "true"}, headers=headers))
    keep(client.get("/_sim/stats"))
    return answers


def test_same_seed_and_same_calls_give_byte_identical_answers():
    first, second = _session(3), _session(3)
    assert len(first) == 17
    assert first == second
    other = _session(4)
    assert [a[2] for a in other] != [a[2] for a in first]


def test_worlds_do_not_depend_on_the_process_hash_seed():
    """Ids and names come from seeded streams, never from `hash()`: pinned values stay put."""
    world = World(seed=1, applications=10, jobs=2)
    assert list(world.integrations) == [
        "greenhouse:qxxaHehnVGNcBQJGJwi7Dwca",
        "personio:x4FavHs8iMZMWRKiTz4JWKUX",
        "recruitee:vKCa5t6AbFDgaxc9Q1mgrtwJ",
        "factorial:tC3TixFE5PHa7kbPNeHPakiB",
        "workday:3UbmG58BoXru1YiBffeD8rMt",
        "lever:auMFb65WjDwbux5WcqaMWs3W",
        "softgarden:RcZ6TLFsKAAn94KfaE8bBXwX",
    ]


# -- ids -----------------------------------------------------------------------------------------


def test_ids_are_24_base58_characters_that_decode_to_their_row_and_nothing_else():
    codec = IdCodec(random.Random(1))
    other = IdCodec(random.Random(2))
    rows = [*range(2_000), 999_999, 2**40 + 17]
    ids = [codec.encode(row) for row in rows]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and set(i) <= set(ALPHABET) for i in ids)
    assert [codec.decode(i) for i in ids] == rows
    assert {other.decode(i) for i in ids} == {None}
    assert codec.decode("0" * 24) is None  # not base58
    assert codec.decode(ids[5][:-1]) is None
    assert codec.decode(ids[5][:-1] + ("A" if ids[5][-1] != "A" else "B")) is None


# -- construction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenarios": ["normal", "flaky"]}, "unknown scenario(s) ['flaky']"),
        ({"applications": -1}, "applications and jobs must be >= 0"),
        ({"applications": 5, "jobs": 0}, "applications need at least one job"),
        ({"api_key": ""}, "api_key must not be empty"),
        ({"start": datetime(2026, 1, 5)}, "simulated times must be timezone-aware"),
    ],
)
def test_bad_world_options_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        World(**kwargs)


@pytest.mark.parametrize("hours", [-1, float("nan"), float("inf"), "3"])
def test_advance_refuses_anything_but_a_finite_non_negative_number(hours):
    world = World(applications=5, jobs=1)
    with pytest.raises(ValueError, match="hours must be a finite number >= 0"):
        world.advance(hours=hours)
    assert world.now == datetime(2026, 1, 5, tzinfo=UTC)


def test_sizes_per_scenario_and_extra_normal_integrations():
    world = World(applications=1_200, jobs=30, scenarios=scenarios_with(normal=3))
    sizes = {
        (s, world.integration(i).application_count, len(world.integration(i).jobs))
        for i, s in world.integrations.items()
    }
    assert sizes == {
        ("normal", 1_200, 30),
        ("no-applications", 0, 20),
        ("no-outcomes", 500, 20),
        ("no-stages", 500, 20),
        ("setup-pending", 0, 0),
        ("permission-missing", 0, 0),
        ("no-jobs", 500, 20),
    }
    assert list(world.integrations.values()).count("normal") == 3
    assert world.normal_integration_id == next(iter(world.integrations))
    assert "sk_test" not in repr(world)
    assert FaultConfig.parse_kinds(" timeout , html-500 ") == ("timeout", "html-500")
    assert FaultConfig.parse_kinds("") == FAULT_KINDS


# -- life over simulated time --------------------------------------------------------------------


def test_a_month_of_hiring_moves_decides_deletes_restores_and_purges_applications():
    world = World(seed=13, applications=400, jobs=8, api_key=KEY)
    client = client_for(SimulatorTransport(world))
    normal = world.normal_integration_id
    snapshots = []
    for _ in range(31):
        records = list_all(client, "/ats/applications", normal, include_deleted="true")
        snapshots.append((world.now, {r["id"]: r for r in records}))
        world.advance(hours=24)
    jobs = {j["id"]: j for j in list_all(client, "/ats/jobs", normal, include_deleted="true")}
    position = {s["id"]: p for j in jobs.values() for p, s in enumerate(j["stages"])}
    seen = {
        k: 0
        for k in (
            "forward",
            "skip",
            "back",
            "hire",
            "decline",
            "move",
            "rename",
            "delete",
            "restore",
            "purge",
        )
    }
    for (before_at, before), (after_at, after) in itertools.pairwise(snapshots):
        for app_id, old in before.items():
            new = after.get(app_id)
            if new is None:
                seen["purge"] += 1
                deleted_at = datetime.fromisoformat(old["remote_deleted_at"])
                assert before_at < deleted_at + timedelta(days=14) <= after_at
                continue
            if new["job_id"] != old["job_id"]:
                seen["move"] += 1
            elif new["current_stage_id"] != old["current_stage_id"] and old["outcome"] == "PENDING":
                step = position[new["current_stage_id"]] - position[old["current_stage_id"]]
                seen["forward" if step == 1 else "skip" if step > 1 else "back"] += 1
            if (old["outcome"], new["outcome"]) == ("PENDING", "HIRED"):
                seen["hire"] += 1
                names = [s["name"] for s in jobs[new["job_id"]]["stages"]]
                if "Hired" in names:
                    assert new["current_stage"]["name"] == "Hired"
            if (old["outcome"], new["outcome"]) == ("PENDING", "DECLINED"):
                seen["decline"] += 1
                assert new["rejection_reason_name"] in REJECTION_REASONS
                assert before_at.isoformat() < new["rejected_at"].replace("Z", "+00:00")
            if old["outcome"] != "PENDING":
                assert new["outcome"] == old["outcome"]  # decisions are final
            if new["candidate"]["last_name"] != old["candidate"]["last_name"]:
                seen["rename"] += 1
                assert new["candidate"]["email_addresses"] == old["candidate"]["email_addresses"]
            if old["remote_deleted_at"] is None and new["remote_deleted_at"] is not None:
                seen["delete"] += 1
            if old["remote_deleted_at"] is not None and new["remote_deleted_at"] is None:
                seen["restore"] += 1
    assert seen["forward"] > seen["back"] > 0
    assert seen["forward"] > 5 * seen["back"]  # mostly forward
    assert all(count > 0 for count in seen.values()), seen
    assert format_ms(world.now_ms) == "2026-02-05T00:00:00.000Z"


def test_candidates_carry_contact_data_and_names_beyond_ascii():
    world = World(seed=2, applications=300, jobs=4, api_key=KEY)
    records = list_all(
        client_for(SimulatorTransport(world)), "/ats/applications", world.normal_integration_id
    )
    candidates = [r["candidate"] for r in records]
    assert all(c["email_addresses"][0]["email_address"].isascii() for c in candidates)
    assert all(c["phone_numbers"][0]["phone_number"].startswith("+49 30 ") for c in candidates)
    assert any(not (c["first_name"] + c["last_name"]).isascii() for c in candidates)
    assert len({c["id"] for c in candidates}) == len(candidates)


# -- the change log ------------------------------------------------------------------------------


def test_the_change_log_orders_by_last_change_and_keeps_cursors_across_compaction():
    assert [row for _, row in ChangeLog([5, 1, 3]).scan(-1, None)] == [1, 2, 0]
    log = ChangeLog([0, 5, 5, 9])
    old_cursor = None
    t = 10
    for i in range(20_000):
        log.touch(i % 3, t)
        t += 1
        if i == 5_000:
            old_cursor = log.seq_of(i % 3)
    assert len(log.seqs) < 10_000  # stale entries were compacted away
    # Last touches: row 2 at i=19_997 (t=20_007), row 0 at t=20_008, row 1 at t=20_009.
    assert [row for _, row in log.scan(-1, None)] == [3, 2, 0, 1]
    assert [row for _, row in log.scan(old_cursor, None)] == [2, 0, 1]
    assert [row for _, row in log.scan(-1, 20_007)] == [0, 1]
    assert (log.time_of(3), log.time_of(0)) == (9, 20_008)
    log.touch(4, t)  # a new row
    log.remove(1)
    assert [row for _, row in log.scan(-1, None)] == [3, 2, 0, 4]
    assert (log.listed(1), log.listed(4), log.listed(5)) == (False, True, False)
    with pytest.raises(ValueError, match="changes must be recorded in time order"):
        log.touch(0, t - 1)
