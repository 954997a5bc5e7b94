"""Kombo's OpenAPI subset, as copied into the repo (descriptions stripped), for tests to check against."""

import json
from functools import cache
from pathlib import Path

SPEC_PATH = Path(__file__).parent / "data" / "openapi-ats.json"


@cache
def load_spec() -> dict:
    return json.loads(SPEC_PATH.read_text())
