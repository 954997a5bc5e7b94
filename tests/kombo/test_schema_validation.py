"""Every body the simulator answers validates against Kombo's OpenAPI response schemas.

`tests/data/openapi-ats.json` is Kombo's published subset with description texts stripped. The test
drives every endpoint on every scenario integration through success and error paths (faults and
rate limits included) and validates each JSON body with the schema of its status, or `default`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from stagewatch.simulator import FaultConfig, SimulatorTransport, World

SPEC_PATH = Path(__file__).parents[1] / "data" / "openapi-ats.json"


def _nullable_enums(schema: Any) -> Any:
    """Read `type: [..., "null"]` with an `enum` lacking null as a nullable enum.

    That is how Kombo's generator writes nullable enums (its docs and README say `outcome` can be
    null, yet the enum omits it); strict JSON Schema would reject every null such a field holds.
    """
    if isinstance(schema, list):
        return [_nullable_enums(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    fixed = {key: _nullable_enums(value) for key, value in schema.items()}
    types = fixed.get("type")
    enum = fixed.get("enum")
    if isinstance(types, list) and "null" in types and isinstance(enum, list) and None not in enum:
        fixed["enum"] = [*enum, None]
    return fixed


SPEC = _nullable_enums(json.loads(SPEC_PATH.read_text()))
REGISTRY = Registry().with_resource(
    "urn:kombo-ats", Resource.from_contents(SPEC, default_specification=DRAFT202012)
)
KEY = "sk_schema"
KOMBO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_validators: dict[tuple[str, str, str], Draft202012Validator] = {}


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def validator(spec_path: str, method: str, status: int) -> Draft202012Validator:
    responses = SPEC["paths"][spec_path][method]["responses"]
    key = str(status) if str(status) in responses else "default"
    cache_key = (spec_path, method, key)
    if cache_key not in _validators:
        response = responses[key]
        if "$ref" in response:
            pointer = response["$ref"].removeprefix("#") + _pointer("content", "application/json")
        else:
            pointer = _pointer(
                "paths", spec_path, method, "responses", key, "content", "application/json"
            )
        schema = {"$ref": f"urn:kombo-ats#{pointer}/schema"}
        _validators[cache_key] = Draft202012Validator(
            schema, registry=REGISTRY, format_checker=FormatChecker()
        )
    return _validators[cache_key]


def timestamps(value: Any) -> list[str]:
    """Every string under a key ending in `_at` (Kombo's timestamps)."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("_at") and isinstance(item, str):
                found.append(item)
            else:
                found += timestamps(item)
    elif isinstance(value, list):
        for item in value:
            found += timestamps(item)
    return found


class Recorder(httpx.BaseTransport):
    """Passes requests to the simulator and keeps each JSON answer with the spec path it answers."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.answers: list[tuple[str, str, int, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        body = response.read()
        path = request.url.path.removeprefix("/v1")
        spec_path = re.sub(
            r"^/ats/jobs/[^/]+/applications$", "/ats/jobs/{job_id}/applications", path
        )
        spec_path = re.sub(
            r"^/ats/applications/[^/]+/stage$",
            "/ats/applications/{application_id}/stage",
            spec_path,
        )
        if spec_path not in SPEC["paths"]:
            spec_path = "/check-api-key"  # unknown routes: only the general error envelope fits
        if response.headers.get("content-type", "").startswith("application/json"):
            self.answers.append(
                (spec_path, request.method.lower(), response.status_code, json.loads(body))
            )
        return response


def exercise(client: httpx.Client, world: World) -> None:
    """Every endpoint, every integration, success and failure."""
    candidate = {"first_name": "Grace", "last_name": "Hopper", "email_address": "grace@ex.org"}
    client.get("/check-api-key")
    client.get("/check-api-key", headers={"Authorization": "Bearer wrong"})
    client.get("/ats/unknown", headers={"X-Integration-Id": world.normal_integration_id})
    client.get("/ats/jobs")
    client.get("/ats/jobs", headers={"X-Integration-Id": "greenhouse:NoSuchIntegration0000000"})
    for integration in world.integrations:
        h = {"X-Integration-Id": integration}
        integ = world.integration(integration)
        for path in ("/ats/jobs", "/ats/applications"):
            cursor = None
            while True:
                params = {"page_size": 250, "include_deleted": "true"}
                response = client.get(
                    path, params=params | ({"cursor": cursor} if cursor else {}), headers=h
                )
                if response.status_code != 200:
                    break
                cursor = response.json()["data"]["next"]
                if cursor is None:
                    break
            client.get(path, params={"page_size": 0}, headers=h)
            client.get(path, params={"cursor": "bogus"}, headers=h)
            client.get(path, params={"updated_after": "2026-01-01T00:00:00+01:00"}, headers=h)
            client.get(path, headers={**h, "Authorization": "Bearer wrong"})
        client.get("/ats/applications", params={"outcomes": "HIRED"}, headers=h)
        client.get("/ats/applications", params={"current_stage_ids": "x"}, headers=h)
        open_jobs = [j for j in integ.jobs if j.accepts_applications]
        closed_jobs = [j for j in integ.jobs if not j.accepts_applications]
        job_id = open_jobs[0].id if open_jobs else "NoSuchJob000000000000000"
        created = client.post(
            f"/ats/jobs/{job_id}/applications", json={"candidate": candidate}, headers=h
        )
        client.post(f"/ats/jobs/{job_id}/applications", json={"candidate": candidate}, headers=h)
        client.post(f"/ats/jobs/{job_id}/applications", json={"candidate": {}}, headers=h)
        if closed_jobs:
            client.post(
                f"/ats/jobs/{closed_jobs[0].id}/applications",
                json={"candidate": candidate},
                headers=h,
            )
        if created.status_code == 200:
            application_id = created.json()["data"]["id"]
            stages = open_jobs[0].stages
            stage_id = stages[-1].id if stages else "NoStage"
            client.put(
                f"/ats/applications/{application_id}/stage", json={"stage_id": stage_id}, headers=h
            )
        client.put("/ats/applications/NoSuchApp/stage", json={"stage_id": "x"}, headers=h)
        client.put("/ats/applications/NoSuchApp/stage", content=b"not json", headers=h)


@pytest.fixture(scope="module")
def answers() -> list[tuple[str, str, int, Any]]:
    world = World(seed=17, applications=400, jobs=12, api_key=KEY)
    world.advance(hours=20 * 24)  # hires, declines, deletions, renames, moved and purged records
    recorded = []
    transports = [
        SimulatorTransport(world),
        SimulatorTransport(world, rate_limit=5, clock=lambda: 0.0),
        SimulatorTransport(world, FaultConfig(rate=0.5, seed=2, kinds=["rate-limit"])),
        SimulatorTransport(world, FaultConfig(rate=1.0, kinds=["rate-limit-no-retry-after"])),
        SimulatorTransport(world, FaultConfig(rate=1.0, kinds=["unavailable-503"])),
    ]
    for transport in transports:
        recorder = Recorder(transport)
        client = httpx.Client(
            transport=recorder,
            base_url="https://api.kombo.dev/v1",
            headers={"Authorization": f"Bearer {KEY}"},
        )
        exercise(client, world)
        recorded += recorder.answers
    return recorded


# In Kombo's spec but not served by the simulator yet: stagewatch never calls it.
NOT_SIMULATED = {("/ats/import-tracked-application", "post")}


def test_the_exercise_covers_every_endpoint_and_error_family(answers):
    covered = {(path, method) for path, method, _, _ in answers}
    in_spec = {(path, method) for path, ops in SPEC["paths"].items() for method in ops}
    assert covered == in_spec - NOT_SIMULATED
    statuses = {status for _, _, status, _ in answers}
    assert statuses == {200, 400, 401, 403, 404, 409, 429, 503}
    codes = {body["error"]["code"] for _, _, _, body in answers if body["status"] == "error"}
    assert codes == {
        "PLATFORM.INPUT_INVALID",
        "PLATFORM.AUTHENTICATION_INVALID",
        "PLATFORM.INTEGRATION_NOT_FOUND",
        "PLATFORM.RATE_LIMIT_EXCEEDED",
        "PLATFORM.UNKNOWN_ERROR",
        "INTEGRATION.PERMISSION_MISSING",
        "INTEGRATION.SETUP_SYNC_PENDING",
        "INTEGRATION.MODEL_NOT_AVAILABLE",
        "INTEGRATION.ACTION_NOT_AVAILABLE",
        "REMOTE.SERVICE_UNAVAILABLE",
        "ATS.JOB_CLOSED",
        "ATS.APPLICATION_ALREADY_EXISTS",
    }
    records = sum(
        len(body["data"]["results"])
        for path, _, status, body in answers
        if status == 200 and "results" in body.get("data", {})
    )
    assert records > 1_000


def test_every_answer_validates_against_its_response_schema(answers):
    failures = []
    for path, method, status, body in answers:
        errors = list(validator(path, method, status).iter_errors(body))
        if errors:
            failures.append(
                (path, method, status, errors[0].message, list(errors[0].absolute_path))
            )
        assert (body["status"] == "success") == (status == 200)
    assert failures == []


def test_every_timestamp_has_kombos_millisecond_utc_form(answers):
    stamps = [t for _, _, status, body in answers if status == 200 for t in timestamps(body)]
    assert len(stamps) > 5_000
    assert [t for t in stamps if not KOMBO_TIMESTAMP.match(t)] == []


def test_the_validators_do_reject_a_body_that_breaks_the_schema(answers):
    """Guard against a vacuous pass (an unresolved $ref validates anything)."""
    page = next(
        body
        for path, _, status, body in answers
        if path == "/ats/applications" and status == 200 and body["data"]["results"]
    )
    check = validator("/ats/applications", "get", 200)
    assert check.is_valid(page)
    missing = json.loads(json.dumps(page))
    del missing["data"]["results"][0]["changed_at"]
    unknown = json.loads(json.dumps(page))
    unknown["data"]["results"][0]["outcome"] = "WITHDRAWN"
    bad_time = json.loads(json.dumps(page))
    bad_time["data"]["results"][0]["changed_at"] = "yesterday"
    assert [check.is_valid(b) for b in (missing, unknown, bad_time)] == [False, False, False]
    error = validator("/ats/applications", "get", 400)
    assert not error.is_valid(
        {
            "status": "error",
            "error": {"code": "NOPE", "title": None, "message": "x", "log_url": None},
        }
    )
