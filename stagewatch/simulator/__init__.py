"""A deterministic, in-process or loopback stand-in for Kombo's ATS API.

`World` holds the data and the simulated clock; `Simulator` answers requests; `SimulatorTransport`
plugs it into an `httpx.Client`; `create_app` / `serve_in_thread` serve it over HTTP.
"""

from stagewatch.simulator.faults import FAULT_KINDS, FaultConfig
from stagewatch.simulator.handler import SimResponse, Simulator
from stagewatch.simulator.integration import Integration
from stagewatch.simulator.records import SimulationError
from stagewatch.simulator.server import create_app, serve_in_thread
from stagewatch.simulator.transport import SimulatorTransport
from stagewatch.simulator.world import DEFAULT_SCENARIOS, SCENARIOS, World, scenarios_with

__all__ = [
    "DEFAULT_SCENARIOS",
    "FAULT_KINDS",
    "SCENARIOS",
    "FaultConfig",
    "Integration",
    "SimResponse",
    "SimulationError",
    "Simulator",
    "SimulatorTransport",
    "World",
    "create_app",
    "scenarios_with",
    "serve_in_thread",
]
