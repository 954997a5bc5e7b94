from __future__ import annotations

import pytest

from stagewatch.store import Store
from tests.analytics.scenario import build
from tests.test_store_fixtures import FINISHED


@pytest.fixture
def store(db_url):
    """The scenario's store on each backend (tests/conftest.py's db_url)."""
    with Store(db_url, clock=lambda: FINISHED) as store:
        yield store


@pytest.fixture
def scenario(store):
    """The store after the scenario's five runs."""
    build(store)
    return store
