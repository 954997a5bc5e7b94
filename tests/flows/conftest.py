"""Fixtures of the flow tests."""

import pytest

from tests.flows.flowkit import route_to_simulator


@pytest.fixture
def simulate(monkeypatch, prefect_harness):
    """Route the flows' Kombo client to an in-process simulator; returns `start(world, faults,
    wrap)`, which returns the simulator's transport."""
    return route_to_simulator(monkeypatch)
