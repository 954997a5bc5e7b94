"""The README's import section says what the code does: the file format per ATS, the statuses and
the flow's parameters."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from flows.imports import ImportParams
from stagewatch.importer import RowStatus
from stagewatch.kombo.imports import IMPORT_SHAPES

README = Path(__file__).resolve().parents[2] / "README.md"


def section(title: str) -> str:
    text = README.read_text().split("## Importing applications Kombo did not create")[1]
    return text.split(f"### {title}\n")[1].split("\n### ")[0].split("\n## ")[0]


def table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_the_file_format_table_is_the_shapes_the_client_checks():
    documented = {}
    for tool, columns, id_type in table(section("The file, per ATS")):
        fields = tuple(re.findall(r"`(\w+)`", columns))
        documented.setdefault(tool.strip("`"), {})[id_type.split("`")[1]] = fields
    assert documented == IMPORT_SHAPES


def test_every_status_and_flow_parameter_is_documented():
    statuses = [row[0].strip("`") for row in table(section("Results, re-runs and the ledger"))]
    assert statuses == list(typing.get_args(RowStatus))
    documented = []
    for row in table(section("On Prefect")):
        documented += re.findall(r"`(\w+)`", row[0])
    assert documented == list(ImportParams.model_fields)
