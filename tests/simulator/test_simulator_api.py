"""The simulator's Kombo API: filters, cursors, validation, nested `updated_after`, scenarios.

Expected results are derived from the full listing with the filter's documented meaning, so a filter
test checks the filter, not a copy of its implementation.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import timedelta

import httpx
import pytest

from stagewatch.simulator import SimulatorTransport, World
from stagewatch.simulator.render import format_ms

KEY = "sk_test_api"
BASE_URL = "https://api.kombo.dev/v1"


class Api:
    """A plain httpx client on the in-process transport, with listing helpers."""

    def __init__(self, world: World, **transport_options) -> None:
        self.world = world
        self.transport = SimulatorTransport(world, **transport_options)
        self.http = httpx.Client(
            transport=self.transport,
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {KEY}"},
        )

    def request(self, method, path, integration=None, **kwargs) -> httpx.Response:
        headers = {"X-Integration-Id": integration} if integration else {}
        return self.http.request(method, path, headers=headers, **kwargs)

    def get(self, path, integration=None, **params) -> httpx.Response:
        return self.request("GET", path, integration, params=params)

    def pages(self, path, integration, **params) -> list[dict]:
        pages, cursor = [], None
        while True:
            query = dict(params, **({"cursor": cursor} if cursor else {}))
            response = self.get(path, integration, **query)
            assert response.status_code == 200, response.text
            body = response.json()
            pages.append(body)
            cursor = body["data"]["next"]
            if cursor is None:
                return pages

    def list_all(self, path, integration, **params) -> list[dict]:
        return [
            r for page in self.pages(path, integration, **params) for r in page["data"]["results"]
        ]


def error_of(response: httpx.Response) -> tuple[int, str | None, str]:
    body = response.json()
    assert body["status"] == "error"
    assert set(body["error"]) == {"code", "title", "message", "log_url"}
    return response.status_code, body["error"]["code"], body["error"]["message"]


def ids(records) -> list[str]:
    return [r["id"] for r in records]


@pytest.fixture(scope="module")
def world() -> World:
    """Read-only tests share one world: 600 applications on 40 jobs, advanced 10 days."""
    w = World(seed=11, applications=600, jobs=40, api_key=KEY)
    w.advance(hours=240)
    return w


@pytest.fixture(scope="module")
def api(world) -> Api:
    return Api(world)


@pytest.fixture(scope="module")
def normal(world) -> str:
    return world.normal_integration_id


@pytest.fixture(scope="module")
def all_apps(api, normal) -> list[dict]:
    return api.list_all("/ats/applications", normal, include_deleted="true", page_size=250)


@pytest.fixture(scope="module")
def all_jobs(api, normal) -> list[dict]:
    return api.list_all("/ats/jobs", normal, include_deleted="true", page_size=250)


def fresh(seed: int = 5, applications: int = 300, jobs: int = 8, **kwargs) -> tuple[World, Api]:
    w = World(seed=seed, applications=applications, jobs=jobs, api_key=KEY, **kwargs)
    return w, Api(w)


# -- listing and filters -------------------------------------------------------------------------


def test_world_fixture_has_the_variety_the_filter_tests_rely_on(all_apps, all_jobs):
    outcomes = {r["outcome"] for r in all_apps}
    assert outcomes == {"PENDING", "HIRED", "DECLINED"}
    assert any(r["remote_deleted_at"] for r in all_apps)
    assert any(j["remote_deleted_at"] for j in all_jobs)
    assert {j["status"] for j in all_jobs} >= {"OPEN", "CLOSED"}
    assert len(all_apps) == len(set(ids(all_apps)))


def _app_filter_cases(all_apps, all_jobs):
    visible = [r for r in all_apps if r["remote_deleted_at"] is None]
    deleted = [r for r in all_apps if r["remote_deleted_at"] is not None]
    some = [visible[3], visible[100], visible[-1], deleted[0]]
    chosen_ids = {r["id"] for r in some}
    chosen_remote = {r["remote_id"] for r in some}
    job_a, job_b = visible[0]["job"], visible[1]["job"]
    stage_a, stage_b = visible[5]["current_stage"], visible[6]["current_stage"]
    created = sorted(r["remote_created_at"] for r in visible)[len(visible) // 2]
    recent = sorted(r["remote_created_at"] for r in visible)[len(visible) * 19 // 20]
    return [
        (
            {"ids": ",".join([*sorted(chosen_ids), "NoSuchId1234567890abcdef"])},
            lambda r: r["id"] in chosen_ids and r["remote_deleted_at"] is None,
        ),
        (
            {"ids": ",".join(sorted(chosen_ids)), "include_deleted": "true"},
            lambda r: r["id"] in chosen_ids,
        ),
        (
            {"remote_ids": ",".join([*sorted(chosen_remote), "999"])},
            lambda r: r["remote_id"] in chosen_remote and r["remote_deleted_at"] is None,
        ),
        (
            {"outcomes": "HIRED,DECLINED"},
            lambda r: r["outcome"] in ("HIRED", "DECLINED") and not r["remote_deleted_at"],
        ),
        ({"outcome": "HIRED"}, lambda r: r["outcome"] == "HIRED" and not r["remote_deleted_at"]),
        (
            {"job_ids": f"{job_a['id']},{job_b['id']}"},
            lambda r: r["job_id"] in (job_a["id"], job_b["id"]) and not r["remote_deleted_at"],
        ),
        (
            {"job_remote_ids": job_a["remote_id"]},
            lambda r: r["job_id"] == job_a["id"] and not r["remote_deleted_at"],
        ),
        (
            {"current_stage_ids": f"{stage_a['id']},{stage_b['id']}"},
            lambda r: (
                r["current_stage_id"] in (stage_a["id"], stage_b["id"])
                and not r["remote_deleted_at"]
            ),
        ),
        (
            {"remote_created_after": created},
            lambda r: r["remote_created_at"] > created and not r["remote_deleted_at"],
        ),
        (  # few rows: served from the creation-time index instead of a scan
            {"remote_created_after": recent},
            lambda r: r["remote_created_at"] > recent and not r["remote_deleted_at"],
        ),
        (
            {"job_ids": job_a["id"], "outcomes": "PENDING", "remote_created_after": "2025-01-01"},
            lambda r: (
                r["job_id"] == job_a["id"]
                and r["outcome"] == "PENDING"
                and not r["remote_deleted_at"]
            ),
        ),
        ({"ids": ""}, lambda r: not r["remote_deleted_at"]),
        ({"include_deleted": "true"}, lambda r: True),
        ({"include_deleted": "false"}, lambda r: not r["remote_deleted_at"]),
        ({"job_ids": "NoSuchJob123456789012345"}, lambda r: False),
    ]


def test_every_application_filter_selects_what_kombo_documents(api, normal, all_apps, all_jobs):
    for params, keep in _app_filter_cases(all_apps, all_jobs):
        got = api.list_all("/ats/applications", normal, page_size=250, **params)
        expected = [r for r in all_apps if keep(r)]
        assert ids(got) == ids(expected), params
        assert got == expected, params
    # Sanity: the cases are not all empty or all full.
    sizes = {
        len(api.list_all("/ats/applications", normal, page_size=250, **p))
        for p, _ in _app_filter_cases(all_apps, all_jobs)
    }
    assert len(sizes) > 8


def _job_filter_cases(all_jobs):
    visible = [j for j in all_jobs if j["remote_deleted_at"] is None]
    deleted = [j for j in all_jobs if j["remote_deleted_at"] is not None]
    some = [visible[0], visible[7], deleted[0]]
    chosen = {j["id"] for j in some}
    created = sorted(j["remote_created_at"] for j in visible)[len(visible) // 2]
    alive = lambda j: j["remote_deleted_at"] is None  # noqa: E731
    return [
        ({"ids": ",".join(sorted(chosen))}, lambda j: j["id"] in chosen and alive(j)),
        (
            {"remote_ids": ",".join(j["remote_id"] for j in some), "include_deleted": "true"},
            lambda j: j["id"] in chosen,
        ),
        (
            {"job_codes": f"{visible[2]['job_code']},{visible[3]['job_code']}"},
            lambda j: (
                j["job_code"] in (visible[2]["job_code"], visible[3]["job_code"]) and alive(j)
            ),
        ),
        ({"post_url": visible[4]["post_url"]}, lambda j: j["post_url"] == visible[4]["post_url"]),
        ({"statuses": "OPEN,CLOSED"}, lambda j: j["status"] in ("OPEN", "CLOSED") and alive(j)),
        ({"status": "CLOSED"}, lambda j: j["status"] == "CLOSED" and alive(j)),
        (
            {"employment_types": "FULL_TIME,CONTRACT"},
            lambda j: j["employment_type"] in ("FULL_TIME", "CONTRACT") and alive(j),
        ),
        ({"visibilities": "PUBLIC"}, lambda j: j["visibility"] == "PUBLIC" and alive(j)),
        ({"name_contains": "ENGINEER"}, lambda j: "engineer" in j["name"].lower() and alive(j)),
        (
            {"remote_created_after": created},
            lambda j: j["remote_created_at"] > created and alive(j),
        ),
        ({"include_deleted": "true"}, lambda j: True),
        ({}, alive),
    ]


def test_every_job_filter_selects_what_kombo_documents(api, normal, all_jobs):
    for params, keep in _job_filter_cases(all_jobs):
        got = api.list_all("/ats/jobs", normal, page_size=250, **params)
        expected = [j for j in all_jobs if keep(j)]
        assert got == expected, params
        assert got or params.get("post_url") is None, params


def test_jobs_carry_stage_lists_with_the_quirks_of_real_atss(all_jobs):
    """Missing, null and tied `index` values and inactive stages all occur, ids are per job."""
    stages = [s for j in all_jobs for s in j["stages"]]
    assert any("index" not in s for s in stages)
    assert any("index" in s and s["index"] is None for s in stages)
    assert any(s["status"] == "INACTIVE" for s in stages)
    tied = [j for j in all_jobs if [s.get("index") for s in j["stages"]][:2] == [0, 0]]
    assert tied
    stage_ids = [s["id"] for s in stages]
    assert len(stage_ids) == len(set(stage_ids))
    assert {"Offer", "Hired"} <= {s["name"] for s in stages}


def test_an_unsupported_filter_empties_the_listing_unless_told_to_ignore_it(api, world):
    no_outcomes = world.integration_for("no-outcomes")
    everything = api.list_all("/ats/applications", no_outcomes, page_size=250)
    assert everything and all(r["outcome"] is None for r in everything)
    empty = api.get("/ats/applications", no_outcomes, outcomes="HIRED")
    assert empty.json() == {"status": "success", "data": {"next": None, "results": []}}
    ignored = api.list_all(
        "/ats/applications",
        no_outcomes,
        page_size=250,
        outcomes="HIRED",
        ignore_unsupported_filters="true",
    )
    assert ignored == everything

    no_stages = world.integration_for("no-stages")
    stageless = api.list_all("/ats/applications", no_stages, page_size=250)
    stage_filter = {"current_stage_ids": "AnyStageId00000000000000"}
    assert api.list_all("/ats/applications", no_stages, **stage_filter) == []
    assert (
        api.list_all(
            "/ats/applications",
            no_stages,
            page_size=250,
            ignore_unsupported_filters="true",
            **stage_filter,
        )
        == stageless
    )


# -- pagination ----------------------------------------------------------------------------------


def test_page_size_defaults_to_100_and_any_size_lists_the_same_records(api, normal, all_apps):
    visible = [r for r in all_apps if r["remote_deleted_at"] is None]
    first = api.get("/ats/applications", normal).json()["data"]
    assert first["results"] == visible[:100]
    for size in (1, 7, 250):
        pages = api.pages("/ats/applications", normal, page_size=size)
        assert len(pages) == math.ceil(len(visible) / size)  # no trailing empty page
        assert [len(p["data"]["results"]) for p in pages[:-1]] == [size] * (len(pages) - 1)
        assert [r for p in pages for r in p["data"]["results"]] == visible


@pytest.mark.parametrize("bad", ["0", "251", "-1", "abc", "2.5", ""])
def test_page_size_outside_1_to_250_is_input_invalid(api, normal, bad):
    response = api.get("/ats/applications", normal, page_size=bad)
    assert error_of(response) == (
        400,
        "PLATFORM.INPUT_INVALID",
        f"page_size must be an integer from 1 to 250, got {bad!r}.",
    )
    assert error_of(api.get("/ats/jobs", normal, page_size=bad))[:2] == (
        400,
        "PLATFORM.INPUT_INVALID",
    )


def test_cursors_are_opaque_and_tied_to_their_listing(api, world, normal):
    page = api.get("/ats/applications", normal, page_size=5, outcomes="PENDING").json()
    cursor = page["data"]["next"]
    assert cursor and "=" not in cursor
    following = api.get("/ats/applications", normal, page_size=5, outcomes="PENDING", cursor=cursor)
    assert following.status_code == 200
    cases = {
        "cursor was issued for different filters; re-send the same filters.": (
            "/ats/applications",
            normal,
            {"outcomes": "HIRED"},
        ),
        "cursor belongs to a different listing (endpoint or integration).": (
            "/ats/jobs",
            normal,
            {},
        ),
        "cursor is not a cursor this API issued; copy it from data.next.": (
            "/ats/applications",
            normal,
            {"cursor": "not-a-cursor!"},
        ),
    }
    for message, (path, integration, params) in cases.items():
        query = {"cursor": cursor, "outcomes": "PENDING", **params}
        if path == "/ats/jobs":
            query.pop("outcomes")
        assert error_of(api.get(path, integration, **query)) == (
            400,
            "PLATFORM.INPUT_INVALID",
            message,
        )
    other = world.integration_for("no-outcomes")
    assert error_of(api.get("/ats/applications", other, cursor=cursor, outcomes="PENDING"))[2] == (
        "cursor belongs to a different listing (endpoint or integration)."
    )
    forged = base64.urlsafe_b64encode(json.dumps({"s": "x"}).encode()).decode()
    assert error_of(api.get("/ats/applications", normal, cursor=forged))[0] == 400


def test_paging_while_the_world_changes_loses_and_doubles_nothing():
    """Changed records move behind the cursor: deduped by id, the last version seen is current."""
    world, api = fresh(seed=21, applications=400, jobs=6)
    integration = world.normal_integration_id
    integ = world.integration(integration)
    seen: dict[str, dict] = {}
    cursor, pages = None, 0
    while True:
        query = {"page_size": 40, "include_deleted": "true"} | (
            {"cursor": cursor} if cursor else {}
        )
        body = api.get("/ats/applications", integration, **query).json()["data"]
        for record in body["results"]:
            seen[record["id"]] = record
        pages += 1
        if pages <= 8:
            # Mutate records already served and records not yet served, and add new ones.
            served = list(seen)
            integ.rename_candidate(served[0], last_name=f"Changed{pages}")
            integ.hire(served[pages]) if pages % 2 else integ.decline(served[pages])
            world.advance(hours=3)
        cursor = body["next"]
        if cursor is None:
            break
    final = api.list_all("/ats/applications", integration, include_deleted="true", page_size=250)
    assert {r["id"]: r for r in final} == seen


# -- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"updated_after": "2026-01-05T10:00:00+02:00"},
            "updated_after must look like YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS.sssZ (UTC, no offset); "
            "got '2026-01-05T10:00:00+02:00'.",
        ),
        ({"updated_after": "2026-02-30"}, "updated_after is not a valid date: '2026-02-30'."),
        ({"include_deleted": "yes"}, "include_deleted must be 'true' or 'false', got 'yes'."),
        (
            {"ignore_unsupported_filters": "1"},
            "ignore_unsupported_filters must be 'true' or 'false', got '1'.",
        ),
        (
            {"outcomes": "HIRED,WITHDRAWN"},
            "outcomes has unknown value(s) ['WITHDRAWN']; allowed: PENDING, HIRED, DECLINED.",
        ),
        ({"statuses": "OPEN"}, "Unknown query parameter 'statuses' for GET /ats/applications."),
    ],
)
def test_invalid_parameters_are_input_invalid_with_a_message_naming_them(
    api, normal, params, message
):
    assert error_of(api.get("/ats/applications", normal, **params)) == (
        400,
        "PLATFORM.INPUT_INVALID",
        message,
    )


def test_a_repeated_parameter_is_rejected_because_kombo_wants_one_comma_joined_value(api, normal):
    response = api.http.get("/ats/applications?ids=a&ids=b", headers={"X-Integration-Id": normal})
    assert error_of(response) == (
        400,
        "PLATFORM.INPUT_INVALID",
        "Query parameter 'ids' was given more than once; "
        "send multiple values as one comma-separated value.",
    )


def test_updated_after_accepts_the_documented_forms(api, normal, all_apps):
    visible = [r for r in all_apps if r["remote_deleted_at"] is None]
    for value in ("2026-01-09", "2026-01-09T00:00:00Z", "2026-01-09T00:00:00.000Z"):
        got = api.list_all("/ats/applications", normal, updated_after=value, page_size=250)
        assert got, value
        assert set(ids(got)) <= set(ids(visible))
    first = api.list_all("/ats/applications", normal, updated_after="2026-01-09T12:30:00.5Z")
    second = api.list_all("/ats/applications", normal, updated_after="2026-01-09T12:30:00.500Z")
    assert first == second


# -- nested updated_after, deletion --------------------------------------------------------------


def test_nested_changes_surface_in_updated_after_while_changed_at_stays_put():
    world, api = fresh(seed=8, applications=200, jobs=4)
    integration = world.normal_integration_id
    integ = world.integration(integration)
    before = api.list_all("/ats/applications", integration, page_size=250)
    since = world.now
    assert world.advance(hours=0.001) == 0  # 3.6 simulated seconds, nothing happens
    assert (
        api.list_all(
            "/ats/applications", integration, updated_after=format_ms(int(since.timestamp() * 1000))
        )
        == []
    )

    renamed = before[10]
    stage = next(r for r in before if r["job_id"] != renamed["job_id"])["current_stage"]
    in_stage = [r for r in before if r["current_stage_id"] == stage["id"]]
    integ.rename_candidate(renamed["id"], last_name="Nakamura")
    integ.rename_stage(stage["id"], "Recruiter Call")

    after = api.list_all(
        "/ats/applications", integration, updated_after=since.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    )
    by_id = {r["id"]: r for r in before}
    assert sorted(ids(after)) == sorted({renamed["id"], *ids(in_stage)})
    for record in after:
        assert record["changed_at"] == by_id[record["id"]]["changed_at"]
    assert (
        next(r for r in after if r["id"] == renamed["id"])["candidate"]["last_name"] == "Nakamura"
    )
    assert {r["current_stage"]["name"] for r in after if r["id"] != renamed["id"]} == {
        "Recruiter Call"
    }
    # Per Kombo's table, a linked stage record changing does not surface the job itself.
    assert (
        api.list_all(
            "/ats/jobs", integration, updated_after=format_ms(int(since.timestamp() * 1000))
        )
        == []
    )

    # An own-field change moves changed_at.
    job = api.list_all("/ats/jobs", integration, ids=renamed["job_id"])[0]
    target = next(s for s in job["stages"] if s["id"] != renamed["current_stage_id"])
    put = api.request(
        "PUT",
        f"/ats/applications/{renamed['id']}/stage",
        integration,
        json={"stage_id": target["id"]},
    )
    assert put.json() == {"status": "success", "data": {}, "warnings": []}
    moved = api.list_all("/ats/applications", integration, ids=renamed["id"])[0]
    assert moved["current_stage"] == {
        "id": target["id"],
        "remote_id": target["remote_id"],
        "name": target["name"],
        "index": target.get("index"),
        "status": target["status"],
        "custom_fields": target["custom_fields"],
    }
    assert moved["changed_at"] == format_ms(world.now_ms)


def test_soft_delete_hides_restore_returns_and_purge_removes_after_14_days():
    world, api = fresh(seed=9, applications=100, jobs=3)
    integration = world.normal_integration_id
    integ = world.integration(integration)
    victim = api.list_all("/ats/applications", integration, page_size=250)[0]
    since = format_ms(world.now_ms)
    world.advance(hours=1)
    integ.delete_application(victim["id"])
    deleted_at = format_ms(world.now_ms)

    assert api.list_all("/ats/applications", integration, ids=victim["id"]) == []
    shown = api.list_all("/ats/applications", integration, ids=victim["id"], include_deleted="true")
    assert [(r["remote_deleted_at"], r["changed_at"]) for r in shown] == [(deleted_at, deleted_at)]
    changed = api.list_all(
        "/ats/applications", integration, updated_after=since, include_deleted="true"
    )
    assert victim["id"] in ids(changed)
    assert victim["id"] not in ids(
        api.list_all("/ats/applications", integration, updated_after=since)
    )

    world.advance(hours=2)
    integ.restore_application(victim["id"])
    restored = api.list_all("/ats/applications", integration, ids=victim["id"])
    assert [(r["remote_deleted_at"], r["changed_at"]) for r in restored] == [
        (None, format_ms(world.now_ms))
    ]

    integ.delete_application(victim["id"])
    world.advance(hours=14 * 24 - 1)
    assert ids(
        api.list_all("/ats/applications", integration, ids=victim["id"], include_deleted="true")
    ) == [victim["id"]]
    world.advance(hours=1)
    gone = api.list_all("/ats/applications", integration, ids=victim["id"], include_deleted="true")
    assert gone == []
    put = api.request(
        "PUT",
        f"/ats/applications/{victim['id']}/stage",
        integration,
        json={"stage_id": victim["current_stage_id"]},
    )
    assert error_of(put) == (
        400,
        "PLATFORM.INPUT_INVALID",
        f"No application with id {victim['id']!r} in this integration.",
    )


# -- writes --------------------------------------------------------------------------------------


def test_creating_an_application_tracks_it_from_then_on():
    world, api = fresh(seed=4, applications=20, jobs=3)
    integration = world.normal_integration_id
    job = api.list_all("/ats/jobs", integration, statuses="OPEN")[0]
    body = {
        "candidate": {
            "first_name": "Frank",
            "last_name": "Doe",
            "email_address": "frank.doe@example.com",
            "phone_number": "+1-541-754-3010",
        },
        "stage_id": job["stages"][1]["id"],
    }
    just_now = format_ms(world.now_ms - 1)
    assert api.list_all("/ats/applications", integration, remote_created_after=just_now) == []
    created = api.request("POST", f"/ats/jobs/{job['id']}/applications", integration, json=body)
    assert created.status_code == 200
    data = created.json()["data"]
    assert created.json()["warnings"] == []
    assert (data["outcome"], data["job_id"], data["current_stage_id"]) == (
        "PENDING",
        job["id"],
        job["stages"][1]["id"],
    )
    assert data["candidate"]["email_addresses"] == [
        {"email_address": "frank.doe@example.com", "type": "PRIVATE"}
    ]
    listed = api.list_all("/ats/applications", integration, ids=data["id"])
    assert api.list_all("/ats/applications", integration, remote_created_after=just_now) == listed
    assert len(listed) == 1 and listed[0]["candidate"]["first_name"] == "Frank"
    assert listed[0]["changed_at"] == listed[0]["remote_created_at"] == format_ms(world.now_ms)

    again = api.request("POST", f"/ats/jobs/{job['id']}/applications", integration, json=body)
    assert error_of(again)[:2] == (409, "ATS.APPLICATION_ALREADY_EXISTS")
    bad = api.request(
        "POST",
        f"/ats/jobs/{job['id']}/applications",
        integration,
        json={"candidate": {"first_name": "A", "last_name": "B"}},
    )
    assert error_of(bad) == (
        400,
        "PLATFORM.INPUT_INVALID",
        "candidate.email_address is required and must be a non-empty string.",
    )
    closed = [j for j in api.list_all("/ats/jobs", integration) if j["status"] == "CLOSED"]
    if closed:
        refused = api.request(
            "POST", f"/ats/jobs/{closed[0]['id']}/applications", integration, json=body
        )
        assert error_of(refused)[:2] == (400, "ATS.JOB_CLOSED")
    wrong_stage = api.request(
        "PUT",
        f"/ats/applications/{data['id']}/stage",
        integration,
        json={"stage_id": "NotAStageOfThisJob000000"},
    )
    assert error_of(wrong_stage)[:2] == (400, "PLATFORM.INPUT_INVALID")


# -- auth and scenarios --------------------------------------------------------------------------


def test_auth_and_integration_errors_use_kombos_codes(api, world, normal):
    anonymous = httpx.Client(transport=api.transport, base_url=BASE_URL)
    assert error_of(anonymous.get("/check-api-key"))[:2] == (401, "PLATFORM.AUTHENTICATION_INVALID")
    wrong = anonymous.get(
        "/ats/jobs", headers={"Authorization": "Bearer nope", "X-Integration-Id": normal}
    )
    assert error_of(wrong)[:2] == (401, "PLATFORM.AUTHENTICATION_INVALID")
    assert KEY not in wrong.text and "nope" not in wrong.text
    assert api.get("/check-api-key").json() == {
        "status": "success",
        "data": {"environment_id": world.environment_id, "customer_id": world.environment_id},
    }
    assert error_of(api.get("/ats/jobs")) == (
        400,
        "PLATFORM.INPUT_INVALID",
        "The X-Integration-Id header is required for /ats endpoints.",
    )
    unknown = "greenhouse:AAAAAAAAAAAAAAAAAAAAAAAA"
    assert error_of(api.get("/ats/jobs", unknown)) == (
        404,
        "PLATFORM.INTEGRATION_NOT_FOUND",
        f"No integration with id {unknown!r}.",
    )
    assert error_of(api.get("/ats/nothing-here", normal))[:2] == (404, "PLATFORM.INPUT_INVALID")
    assert error_of(api.request("DELETE", "/ats/jobs", normal))[:2] == (
        405,
        "PLATFORM.INPUT_INVALID",
    )


def test_each_limitation_scenario_answers_as_documented(api, world):
    pending = world.integration_for("setup-pending")
    denied = world.integration_for("permission-missing")
    for path, method in (
        ("/ats/jobs", "GET"),
        ("/ats/applications", "GET"),
        ("/ats/jobs/x/applications", "POST"),
        ("/ats/applications/x/stage", "PUT"),
    ):
        assert error_of(api.request(method, path, pending, json={}))[:2] == (
            409,
            "INTEGRATION.SETUP_SYNC_PENDING",
        )
        assert error_of(api.request(method, path, denied, json={}))[:2] == (
            403,
            "INTEGRATION.PERMISSION_MISSING",
        )

    no_apps = world.integration_for("no-applications")
    assert error_of(api.get("/ats/applications", no_apps))[:2] == (
        400,
        "INTEGRATION.MODEL_NOT_AVAILABLE",
    )
    jobs = api.list_all("/ats/jobs", no_apps)
    assert jobs and all(j["stages"] for j in jobs)
    create = api.request(
        "POST",
        f"/ats/jobs/{jobs[0]['id']}/applications",
        no_apps,
        json={"candidate": {"first_name": "A", "last_name": "B", "email_address": "a@b.de"}},
    )
    assert error_of(create)[:2] == (400, "INTEGRATION.ACTION_NOT_AVAILABLE")

    no_stages = world.integration_for("no-stages")
    stageless = api.list_all("/ats/applications", no_stages, include_deleted="true")
    assert stageless
    assert {(r["current_stage"], r["current_stage_id"]) for r in stageless} == {(None, None)}
    assert {r["outcome"] for r in stageless} >= {"PENDING", "DECLINED"}
    assert all(j["stages"] == [] for j in api.list_all("/ats/jobs", no_stages))
    put = api.request(
        "PUT", f"/ats/applications/{stageless[0]['id']}/stage", no_stages, json={"stage_id": "x"}
    )
    assert error_of(put)[:2] == (400, "INTEGRATION.ACTION_NOT_AVAILABLE")

    no_outcomes = world.integration_for("no-outcomes")
    outcomeless = api.list_all("/ats/applications", no_outcomes, include_deleted="true")
    assert {(r["outcome"], r["rejection_reason_name"], r["rejected_at"]) for r in outcomeless} == {
        (None, None, None)
    }
    assert {r["current_stage"] is not None for r in outcomeless} == {True}

    no_jobs = world.integration_for("no-jobs")
    assert error_of(api.get("/ats/jobs", no_jobs))[:2] == (400, "INTEGRATION.MODEL_NOT_AVAILABLE")
    jobless = api.list_all("/ats/applications", no_jobs, include_deleted="true")
    assert jobless and all(r["current_stage"]["name"] for r in jobless if r["current_stage"])


def test_the_world_serves_one_integration_per_scenario_with_kombo_shaped_ids(world):
    assert list(world.integrations.values()) == [
        "normal",
        "no-applications",
        "no-outcomes",
        "no-stages",
        "setup-pending",
        "permission-missing",
        "no-jobs",
    ]
    for integration_id in world.integrations:
        tool, _, key = integration_id.partition(":")
        assert tool.isalpha() and len(key) == 24 and key.isalnum()


def test_the_control_endpoint_moves_simulated_time():
    w, fresh_api = fresh(seed=2, applications=50, jobs=2)
    start = w.now
    answer = fresh_api.http.post("/_sim/advance", params={"hours": "36"})
    assert answer.status_code == 200
    assert answer.json()["now"] == format_ms(int((start + timedelta(hours=36)).timestamp() * 1000))
    assert answer.json()["changes"] > 0
    assert w.now == start + timedelta(hours=36)
    for bad in ("-1", "abc", "inf", "10000"):
        refused = fresh_api.http.post("/_sim/advance", params={"hours": bad})
        assert error_of(refused)[:2] == (400, "PLATFORM.INPUT_INVALID"), bad
    assert w.now == start + timedelta(hours=36)
    # Without the /v1 prefix too, and never needing Kombo auth.
    bare = httpx.Client(transport=fresh_api.transport, base_url="http://sim")
    assert bare.post("/_sim/advance?hours=1").json()["now"] == format_ms(w.now_ms)
    listed = bare.get("/_sim/integrations").json()
    assert [(i["id"], i["scenario"]) for i in listed["integrations"]] == list(
        w.integrations.items()
    )
    # Loopback only.
    remote = fresh_api.transport.simulator.handle(
        "POST", "/_sim/advance", [("hours", "1")], {}, client_host="192.0.2.7"
    )
    assert remote.status == 403
    assert w.now == start + timedelta(hours=37)
