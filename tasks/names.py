"""Task run names that say which integration a run belongs to: `fetch-jobs[greenhouse:DBTu…]`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stagewatch.report import short_id


def run_name(step: str, parameter: str) -> Callable[..., str]:
    """A `task_run_name` callable: the step and the integration its `parameter` names (an id,
    or anything with an `integration_id`: a run, an outcome, a list of run rows)."""

    def name(parameters: dict[str, Any]) -> str:
        return f"{step}[{short_id(integration_of(parameters.get(parameter)))}]"

    return name


def integration_of(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        return str(value.get("integration_id", ""))
    if isinstance(value, str):
        return value
    return str(getattr(value, "integration_id", ""))
