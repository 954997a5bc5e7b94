"""The simulated Kombo account: the integrations behind one API key, and the clock they share.

Listeners hear when an integration is connected, disconnected, or changed by an advance.

The same seed and the same calls give the same world, byte for byte: each integration draws from
streams seeded by `(seed, integration, purpose)`, and integration numbers are never reused.
"""

from __future__ import annotations

import hmac
import math
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from stagewatch.simulator import catalog
from stagewatch.simulator.ids import random_id
from stagewatch.simulator.integration import Integration
from stagewatch.simulator.records import MS_PER_HOUR, SimulationError, datetime_of, ms_of

__all__ = [
    "DEFAULT_SCENARIOS",
    "DEFAULT_START",
    "SCENARIOS",
    "Integration",
    "SimulationError",
    "World",
    "scenarios_with",
]

SCENARIOS = (
    "normal",
    "no-applications",
    "no-outcomes",
    "no-stages",
    "setup-pending",
    "permission-missing",
    "no-jobs",
)
DEFAULT_SCENARIOS = SCENARIOS
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
# Limitation scenarios exist to show a behaviour, not to carry volume.
LIMITED_APPLICATIONS = 500
LIMITED_JOBS = 20


def _size(scenario: str, applications: int, jobs: int) -> tuple[int, int]:
    """(applications, jobs) of a new integration with `scenario` in a world of this size."""
    if scenario == "normal":
        size = (applications, jobs)
    elif scenario in ("setup-pending", "permission-missing"):
        size = (0, 0)  # every read fails before data would matter
    else:
        size = (min(applications, LIMITED_APPLICATIONS), min(jobs, LIMITED_JOBS))
    if size[0] and not size[1]:
        size = (size[0], 1)
    return size


class World:
    """Every integration behind one API key, and the simulated clock they share."""

    def __init__(
        self,
        seed: int = 1,
        applications: int = 2_000,
        jobs: int = 50,
        api_key: str = "sk_test",
        scenarios: Sequence[str] = DEFAULT_SCENARIOS,
        start: datetime = DEFAULT_START,
        tools: Mapping[str, str] | None = None,
    ) -> None:
        unknown = [s for s in scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
        if applications < 0 or jobs < 0:
            raise ValueError("applications and jobs must be >= 0")
        if applications and not jobs:
            raise ValueError("applications need at least one job")
        if not api_key:
            raise ValueError("api_key must not be empty")
        bad_tools = {
            s: t for s, t in (tools or {}).items() if s not in SCENARIOS or not t.isalnum()
        }
        if bad_tools:
            raise ValueError(
                f"tools must map scenarios to ATS names (letters, digits): {bad_tools}"
            )
        self.seed = seed
        self._api_key = api_key
        self.start_ms = ms_of(start)
        self.now_ms = self.start_ms
        self.lock = threading.RLock()
        self._id_rng = random.Random(f"stagewatch-sim:{seed}:integration-ids")
        self.environment_id = random_id(self._id_rng)
        self._sizes = (applications, jobs)
        self._integrations: dict[str, Integration] = {}
        self._created = 0  # integrations ever created: numbers (and rng streams) are never reused
        self._listeners: list[Callable[[str, Integration], None]] = []
        # The ATS behind each scenario: catalog.SCENARIO_TOOLS unless told otherwise.
        self._tools = {**catalog.SCENARIO_TOOLS, **(tools or {})}
        for scenario in scenarios:
            self._create_integration(scenario)

    def _create_integration(self, scenario: str) -> Integration:
        integration_id = f"{self._tools[scenario]}:{random_id(self._id_rng)}"
        applications, jobs = _size(scenario, *self._sizes)
        integ = Integration(
            self, self._created, integration_id, scenario, applications=applications, jobs=jobs
        )
        self._created += 1
        self._integrations[integration_id] = integ
        return integ

    def __repr__(self) -> str:
        return (
            f"World(seed={self.seed}, integrations={len(self._integrations)}, "
            f"now={self.now.isoformat()})"
        )

    @property
    def integrations(self) -> dict[str, str]:
        """`{integration_id: scenario}` in creation order."""
        return {i: integ.scenario for i, integ in self._integrations.items()}

    @property
    def normal_integration_id(self) -> str:
        for integration_id, integ in self._integrations.items():
            if integ.scenario == "normal":
                return integration_id
        raise LookupError("this world has no integration with scenario 'normal'")

    def integration_for(self, scenario: str) -> str:
        """The first integration id serving `scenario`."""
        for integration_id, integ in self._integrations.items():
            if integ.scenario == scenario:
                return integration_id
        raise LookupError(f"this world has no integration with scenario {scenario!r}")

    def integration(self, integration_id: str) -> Integration:
        try:
            return self._integrations[integration_id]
        except KeyError:
            raise LookupError(f"no integration {integration_id!r} in this world") from None

    def find_integration(self, integration_id: str) -> Integration | None:
        return self._integrations.get(integration_id)

    def accepts_key(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._api_key.encode())

    @property
    def now(self) -> datetime:
        return datetime_of(self.now_ms)

    def advance(self, hours: float) -> int:
        """Move simulated time forward; applications move, get decided, deleted, purged...

        Returns the number of changes. Time moves in slices of at most an hour, so events spread
        over the whole span.
        """
        if not isinstance(hours, int | float) or not math.isfinite(hours) or hours < 0:
            raise ValueError(f"hours must be a finite number >= 0, got {hours!r}")
        end = self.now_ms + round(hours * MS_PER_HOUR)
        changes = 0
        changed: dict[str, Integration] = {}
        with self.lock:
            while self.now_ms < end:
                step_end = min(end, self.now_ms + MS_PER_HOUR)
                for integ in self._integrations.values():
                    step_changes = integ.activity.step(self.now_ms, step_end)
                    if step_changes:
                        changes += step_changes
                        changed[integ.id] = integ
                self.now_ms = step_end
            # Kombo's sync at the end of the span lists the applications imported before it.
            for integ in self._integrations.values():
                imported = integ.sync_imports(self.now_ms)
                if imported:
                    changes += imported
                    changed[integ.id] = integ
        for integ in changed.values():
            self._notify("changed", integ)
        return changes

    # -- integrations joining and leaving (the simulator's webhooks follow these) ------------

    def add_listener(self, listener: Callable[[str, Integration], None]) -> None:
        """Call `listener(kind, integration)` after an integration is `created`, `deleted`, or
        `changed` by `advance`; outside the world lock, so it may read the integration."""
        self._listeners.append(listener)

    def _notify(self, kind: str, integ: Integration) -> None:
        for listener in self._listeners:
            listener(kind, integ)

    def add_integration(self, scenario: str = "normal") -> str:
        """Connect one more integration; its id and data follow from the seed and the calls so far."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; choose from {list(SCENARIOS)}")
        with self.lock:
            integ = self._create_integration(scenario)
        self._notify("created", integ)
        return integ.id

    def remove_integration(self, integration_id: str) -> None:
        """Disconnect an integration: from now on Kombo's API no longer knows its id."""
        with self.lock:
            integ = self._integrations.pop(integration_id, None)
        if integ is None:
            raise LookupError(f"no integration {integration_id!r} in this world")
        self._notify("deleted", integ)


def scenarios_with(normal: int = 1) -> tuple[str, ...]:
    """The default set of scenarios with `normal` normal integrations first."""
    if normal < 0:
        raise ValueError("normal must be >= 0")
    return ("normal",) * normal + tuple(s for s in DEFAULT_SCENARIOS if s != "normal")
