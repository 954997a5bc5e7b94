"""The simulator stays readable top-down: no function in it runs over 50 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import stagewatch.simulator

MAX_FUNCTION_LINES = 50
PACKAGE = Path(stagewatch.simulator.__file__).parent


def _function_lengths(path: Path) -> dict[str, int]:
    lengths = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lengths[f"{path.name}:{node.lineno} {node.name}"] = node.end_lineno - node.lineno + 1
    return lengths


def test_no_simulator_function_is_longer_than_50_lines():
    lengths = {
        k: v for path in sorted(PACKAGE.glob("*.py")) for k, v in _function_lengths(path).items()
    }
    assert lengths  # the walk found the package's functions
    assert {k: v for k, v in lengths.items() if v > MAX_FUNCTION_LINES} == {}
