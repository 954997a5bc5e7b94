"""Fixtures of the import tests: Kombo's request schema, and the simulator behind a client."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from stagewatch.kombo.client import KomboClient
from stagewatch.simulator import Simulator, SimulatorTransport, World
from tests.spec import load_spec

KEY = "sk_import_tests_key_never_printed_42"
KOMBO_URL = "https://api.kombo.dev/v1"  # in-process transports answer it; nothing leaves
BODY_SCHEMA = "PostAtsImportTrackedApplicationRequestBody"


def spec_validator(*pointer: str) -> Draft202012Validator:
    """A validator for the schema at `pointer` inside Kombo's spec (refs resolved in the spec)."""
    spec = load_spec()
    registry = Registry().with_resource(
        "urn:kombo-ats", Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    path = "/".join(p.replace("~", "~0").replace("/", "~1") for p in pointer)
    return Draft202012Validator(
        {"$ref": f"urn:kombo-ats#/{path}"}, registry=registry, format_checker=FormatChecker()
    )


def body_validator() -> Draft202012Validator:
    return spec_validator("components", "schemas", BODY_SCHEMA)


def spec_shapes() -> dict[str, dict[str, tuple[str, ...]]]:
    """tool -> id_type -> required id fields, read from the spec itself."""
    schema = load_spec()["components"]["schemas"][BODY_SCHEMA]
    shapes = {}
    for tool, prop in schema["properties"].items():
        if tool == "tracked_at":
            continue
        variants = prop.get("oneOf") or prop.get("anyOf")
        shapes[tool] = {
            v["properties"]["id_type"]["const"]: tuple(f for f in v["required"] if f != "id_type")
            for v in variants
        }
    return shapes


class Recording(httpx.BaseTransport):
    """The simulator's transport, keeping every request it was sent (method, path, JSON body)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str, object]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.sent.append((request.method, request.url.path, json.loads(body) if body else None))
        return self.inner.handle_request(request)


def import_requests(simulator: Simulator) -> int:
    """Import requests the simulator received, counted by the simulator."""
    return simulator.stats()["requests"].get("POST /ats/import-tracked-application", 0)


def client_for(
    world: World, integration_id: str, simulator: Simulator | None = None, *, then=None, **kw
):
    """A client on the simulator whose sleeps are recorded (and passed to `then`), not slept."""
    simulator = simulator or Simulator(world)
    transport = Recording(SimulatorTransport(simulator, sleep=lambda s: None))
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if then is not None:
            then(seconds)

    client = KomboClient(
        KEY,
        integration_id,
        base_url=KOMBO_URL,
        transport=transport,
        sleep=sleep,
        rng=random.Random(0),
        **kw,
    )
    return client, transport, simulator, sleeps


@pytest.fixture
def world() -> World:
    return World(seed=7, applications=120, jobs=6, api_key=KEY, scenarios=("normal", "no-stages"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
