"""Kombo's official Python SDK (`kombo`, pinned in pyproject's dev extra) against the simulator.

The SDK is generated from Kombo's current OpenAPI, so its response models are the API's live shape:
every page the simulator serves must pass them, and our client must send the queries the SDK sends.
A release that requires a new field fails here on its validation error (README: bumping the pin).
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from kombo import Kombo, errors, models
from kombo.types import UNSET

from stagewatch.kombo.client import KomboClient, RetryPolicy
from stagewatch.kombo.errors import KomboError
from stagewatch.kombo.filters import APPLICATION_FILTERS, JOB_FILTERS
from stagewatch.simulator import SCENARIOS, SimulatorTransport, World, serve_in_thread
from stagewatch.timeutil import parse_ts
from tests.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk_sdk_compat"
PAGE_SIZES = {"jobs": 8, "applications": 40}  # several pages per listing in the small world
ENDPOINTS = ("jobs", "applications")
ONE_ATTEMPT = RetryPolicy(max_attempts=1)  # an error scenario must answer at once, no backoff
# What the error scenarios answer; every other (scenario, endpoint) pair serves pages.
ERROR_CODES = {
    ("setup-pending", "jobs"): "INTEGRATION.SETUP_SYNC_PENDING",
    ("setup-pending", "applications"): "INTEGRATION.SETUP_SYNC_PENDING",
    ("permission-missing", "jobs"): "INTEGRATION.PERMISSION_MISSING",
    ("permission-missing", "applications"): "INTEGRATION.PERMISSION_MISSING",
    ("no-applications", "applications"): "INTEGRATION.MODEL_NOT_AVAILABLE",
    ("no-jobs", "jobs"): "INTEGRATION.MODEL_NOT_AVAILABLE",
}


@pytest.fixture(scope="module")
def world() -> World:
    world = World(seed=1, applications=300, jobs=20, api_key=KEY)
    world.advance(hours=5 * 24)  # moves, hires, deletions and renamed stages to read
    return world


def test_the_sdk_held_to_is_the_pinned_one_the_readme_names():
    """Bumping the pin on purpose means bumping the README's claim with it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = pyproject["project"]["optional-dependencies"]["dev"]
    installed = version("kombo")
    assert [d for d in dev if d.startswith("kombo")] == [f"kombo=={installed}"]
    assert f"`kombo` {installed}" in (ROOT / "README.md").read_text()


def sdk_in_process(world: World, integration: str) -> Kombo:
    """The SDK takes an httpx client: the simulator's in-process transport, no sockets."""
    http = httpx.Client(transport=SimulatorTransport(world), follow_redirects=True)
    return Kombo(api_key=KEY, integration_id=integration, server_url="http://sim/v1", client=http)


def sdk_listing(sdk: Kombo, endpoint: str) -> list[list[Any]]:
    """Every page by the SDK's own pagination (`next()`), each a list of parsed results."""
    call = sdk.ats.get_jobs if endpoint == "jobs" else sdk.ats.get_applications
    response = call(include_deleted=True, page_size=PAGE_SIZES[endpoint])
    pages = []
    while response is not None:
        pages.append(response.result.data.results)
        response = response.next()
    return pages


def raw_listing(world: World, integration: str, endpoint: str) -> list[list[dict]]:
    """The pages as the simulator serves them, read as plain JSON."""
    http = httpx.Client(
        transport=SimulatorTransport(world),
        base_url="http://sim/v1",
        headers={"Authorization": f"Bearer {KEY}", "X-Integration-Id": integration},
    )
    pages, cursor = [], None
    while True:
        query = {"page_size": PAGE_SIZES[endpoint], "include_deleted": "true"}
        data = http.get(f"/ats/{endpoint}", params=query | ({"cursor": cursor} if cursor else {}))
        pages.append(data.json()["data"]["results"])
        cursor = data.json()["data"]["next"]
        if cursor is None:
            return pages


def without_remote_data(stage: dict) -> dict:
    return {k: v for k, v in stage.items() if k != "remote_data"}


def served(world: World, endpoint: str) -> list[dict]:
    """Every record of `endpoint` that the test world's integrations serve."""
    return [
        record
        for integration, scenario in world.integrations.items()
        if (scenario, endpoint) not in ERROR_CODES
        for page in raw_listing(world, integration, endpoint)
        for record in page
    ]


def test_the_test_world_serves_every_stage_shape(world):
    """Guards the tests below against a vacuous pass: each shape the SDK must read occurs."""
    apps = served(world, "applications")
    stages = [s for job in served(world, "jobs") for s in job["stages"]]
    in_stages = [r["current_stage"] for r in apps if r["current_stage"]]
    assert {s["status"] for s in in_stages} == {"ACTIVE", "INACTIVE", None}
    assert {s["status"] for s in stages} == {"ACTIVE", "INACTIVE", None}
    assert {type(s["custom_fields"]) for s in in_stages + stages} == {dict, type(None)}
    assert any(s["custom_fields"] for s in in_stages)
    assert any(r["remote_deleted_at"] for r in apps)
    assert any(r["current_stage"] is None for r in apps)  # the no-stages integration


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_sdk_parses_every_page_the_simulator_serves(world, scenario, endpoint):
    integration = world.integration_for(scenario)
    if (scenario, endpoint) in ERROR_CODES:
        with pytest.raises(errors.KomboAtsError) as raised:
            sdk_listing(sdk_in_process(world, integration), endpoint)
        transport = SimulatorTransport(world)
        with (
            KomboClient(KEY, integration, transport=transport, retry=ONE_ATTEMPT) as ours,
            pytest.raises(KomboError) as ours_raised,
        ):
            next(ours.iter_job_pages() if endpoint == "jobs" else ours.iter_application_pages())
        expected = ERROR_CODES[scenario, endpoint]
        assert (raised.value.data.error.code, ours_raised.value.code) == (expected, expected)
        assert raised.value.status_code == ours_raised.value.status_code
        return
    parsed = sdk_listing(sdk_in_process(world, integration), endpoint)
    raw = raw_listing(world, integration, endpoint)
    assert [[r.id for r in page] for page in parsed] == [[r["id"] for r in page] for page in raw]
    if endpoint == "jobs":
        got = [[s.model_dump() for s in job.stages] for page in parsed for job in page]
        sent = [[without_remote_data(s) for s in job["stages"]] for page in raw for job in page]
    else:
        got = [r.current_stage and r.current_stage.model_dump() for page in parsed for r in page]
        sent = [r["current_stage"] for page in raw for r in page]
    assert got == sent
    assert len(raw) > 1  # the SDK followed `next`


def plain(value: Any) -> Any:
    """The SDK marks a field absent from the body as `Unset`; our models read it as None."""
    return None if isinstance(value, type(UNSET)) else value


def view(jobs: list, apps: list) -> tuple[list, list]:
    """What stagewatch keeps of a listing, read off either side's models."""
    return (
        [
            (
                j.id,
                j.name,
                plain(j.status),
                [(s.id, s.name, plain(s.index), s.status) for s in j.stages],
            )
            for j in jobs
        ],
        [
            (
                a.id,
                a.outcome,
                a.job_id,
                a.current_stage and (a.current_stage.id, a.current_stage.status),
                a.remote_deleted_at,
            )
            for a in apps
        ],
    )


def test_sdk_pagination_and_our_client_list_the_same_records(world):
    """Over loopback with the SDK's own HTTP client, as issue 23 ran it."""
    integration = world.normal_integration_id
    base_url, stop = serve_in_thread(world)
    try:
        sdk = Kombo(api_key=KEY, integration_id=integration, server_url=base_url)
        sdk_jobs = [j for page in sdk_listing(sdk, "jobs") for j in page]
        sdk_apps = [a for page in sdk_listing(sdk, "applications") for a in page]
        with KomboClient(KEY, integration, base_url=base_url) as ours:
            our_jobs = [
                job
                for page in ours.iter_job_pages(page_size=PAGE_SIZES["jobs"], include_deleted=True)
                for job in page.records
            ]
            our_apps = [
                app
                for page in ours.iter_application_pages(
                    page_size=PAGE_SIZES["applications"], include_deleted=True
                )
                for app in page.records
            ]
    finally:
        stop()
    assert view(sdk_jobs, sdk_apps) == view(our_jobs, our_apps)
    raw = raw_listing(world, integration, "applications")
    assert [a.id for a in our_apps] == [r["id"] for page in raw for r in page]
    assert len(our_jobs) == 20
    assert {a.current_stage.status for a in our_apps} == {"ACTIVE", "INACTIVE", None}


# -- what goes out: our client's queries against the SDK's, for the same filters -------------------

SDK_FILTERS = {
    endpoint: set(request.model_fields) - {"cursor", "page_size"}
    for endpoint, request in (
        ("jobs", models.GetAtsJobsRequest),
        ("applications", models.GetAtsApplicationsRequest),
    )
}
# Kombo still documents these, marked deprecated; SDK 1.4.0 no longer sends them.
DEPRECATED_FILTERS = {"jobs": {"status"}, "applications": {"outcome"}}
TIMESTAMP_FILTERS = ("updated_after", "remote_created_after")
KOMBO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# One value per filter either client accepts: characters that need encoding, lists of two.
SAMPLES: dict[str, Any] = {
    "updated_after": datetime(2026, 1, 5, 12, 30, 15, 123000, tzinfo=UTC),
    "remote_created_after": datetime(2025, 12, 1, 9, 0, tzinfo=timezone(timedelta(hours=1))),
    "include_deleted": True,
    "ignore_unsupported_filters": True,
    "ids": ["222k7eCGyUdgt2JWZDNnkDs3", "B5DVmypWENfU6eMe6gYDyJG3"],
    "remote_ids": ["1001", "req/7 a:b"],
    "job_codes": ["ENG-2026-0001", "SAL 7&8"],
    "post_url": "https://jobs.example.com/greenhouse/1001?ref=a&b=c d",
    "statuses": ["OPEN", "CLOSED"],
    "employment_types": ["FULL_TIME", "PART_TIME"],
    "visibilities": ["PUBLIC", "INTERNAL"],
    "name_contains": "Senior & Lead+",
    "outcomes": ["HIRED", "DECLINED"],
    "job_ids": ["H5daSm8e85Dmvmne3wLeCPhX", "Zf78WiLncQRANLXKAJWSCHdu"],
    "job_remote_ids": ["32", "1001"],
    "current_stage_ids": ["5J7L4b48wBfffYwek9Az9pkM", "7CCvGcizcYtqxdZU3iUjhEkZ"],
}
CASES = [
    *(
        pytest.param(endpoint, {n: SAMPLES[n] for n in SDK_FILTERS[endpoint]}, id=f"{endpoint}-all")
        for endpoint in ENDPOINTS
    ),
    pytest.param("jobs", {}, id="jobs-none"),
    pytest.param(
        "applications",
        {"include_deleted": False, "ignore_unsupported_filters": False},
        id="applications-false",
    ),
]


def spec_parameters(endpoint: str) -> dict[str, dict]:
    """`{name: schema}` of the endpoint's query parameters in the spec copy, refs resolved."""
    spec = load_spec()
    found = {}
    for parameter in spec["paths"][f"/ats/{endpoint}"]["get"]["parameters"]:
        if parameter["in"] == "query":
            schema = parameter["schema"]
            if "$ref" in schema:
                schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            found[parameter["name"]] = schema
    return found


class KomboStandIn:
    """Keeps every request and answers two empty pages, so the cursor request is compared too."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        following = None if "cursor" in request.url.params else "cursor/2 of 2"
        body = {"status": "success", "data": {"next": following, "results": []}}
        return httpx.Response(200, json=body)


def sent_by_sdk(endpoint: str, filters: dict) -> list[httpx.Request]:
    stand_in = KomboStandIn()
    http = httpx.Client(transport=httpx.MockTransport(stand_in))
    sdk = Kombo(api_key=KEY, integration_id="greenhouse:x", server_url="http://k/v1", client=http)
    call = sdk.ats.get_jobs if endpoint == "jobs" else sdk.ats.get_applications
    call(page_size=50, **filters).next()
    return stand_in.requests


def sent_by_us(endpoint: str, filters: dict) -> list[httpx.Request]:
    stand_in = KomboStandIn()
    transport = httpx.MockTransport(stand_in)
    with KomboClient(KEY, "greenhouse:x", base_url="http://k/v1", transport=transport) as ours:
        pages = ours.iter_job_pages if endpoint == "jobs" else ours.iter_application_pages
        assert len(list(pages(page_size=50, **filters))) == 2
    return stand_in.requests


def query_of(request: httpx.Request, defaults: dict[str, str]) -> dict[str, str]:
    """Name -> value as sent (still percent-encoded); a parameter left out counts as its default."""
    pairs = [p.split("=", 1) for p in request.url.query.decode("ascii").split("&") if p]
    assert len(pairs) == len(dict(pairs))  # one value per name: lists go comma-separated
    return {**defaults, **dict(pairs)}


@pytest.mark.parametrize(("endpoint", "filters"), CASES)
def test_our_client_sends_the_query_the_sdk_sends(endpoint, filters):
    parameters = spec_parameters(endpoint)
    defaults = {n: str(s["default"]) for n, s in parameters.items() if "default" in s}
    ours, theirs = sent_by_us(endpoint, filters), sent_by_sdk(endpoint, filters)
    assert len(ours) == len(theirs) == 2
    for our_request, sdk_request in zip(ours, theirs, strict=True):
        our_query, sdk_query = query_of(our_request, defaults), query_of(sdk_request, defaults)
        for name in TIMESTAMP_FILTERS:
            if name in filters:
                ours_sent, sdk_sent = unquote(our_query.pop(name)), unquote(sdk_query.pop(name))
                # The same instant; ours in the one form Kombo documents, which its pattern allows.
                assert parse_ts(ours_sent) == parse_ts(sdk_sent) == filters[name]
                assert KOMBO_TIMESTAMP.match(ours_sent)
                assert re.match(parameters[name]["pattern"], ours_sent)
        assert our_query == sdk_query
        assert our_request.url.path == sdk_request.url.path
        headers = ("authorization", "x-integration-id", "accept")
        assert [our_request.headers[h] for h in headers] == [
            sdk_request.headers[h] for h in headers
        ]
    assert httpx.QueryParams(ours[1].url.query.decode()).get("cursor") == "cursor/2 of 2"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_our_client_knows_every_filter_the_sdk_sends(endpoint):
    ours = set(JOB_FILTERS if endpoint == "jobs" else APPLICATION_FILTERS)
    assert ours == SDK_FILTERS[endpoint] | DEPRECATED_FILTERS[endpoint]
    assert ours <= set(spec_parameters(endpoint))
