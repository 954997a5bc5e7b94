"""`POST /ats/import-tracked-application`: the per-ATS id shapes, request bodies and answers.

Kombo tracks only the applications created through it; importing makes an existing ATS application
tracked. The ATS-side ids differ per ATS (`PostAtsImportTrackedApplicationRequestBody`): each tool
names one or more `id_type`s, each with its own required fields. `IMPORT_SHAPES` mirrors the spec
and Kombo's SDK (tests hold it to both), so a bad row is refused here, before anything is sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from stagewatch.timeutil import format_ts

IMPORT_PATH = "/ats/import-tracked-application"

# tool -> id_type -> the id fields that id_type requires (besides `id_type` itself), from the spec.
IMPORT_SHAPES: dict[str, dict[str, tuple[str, ...]]] = {
    "erecruiter": {
        "application_and_job_remote_ids": ("application_remote_id", "job_remote_id"),
        "application_and_candidate_remote_ids": ("candidate_remote_id", "application_remote_id"),
    },
    "successfactors": {"application_remote_id": ("application_remote_id",)},
    "recruitee": {"placement_id": ("placement_id",)},
    "greenhouse": {"application_id": ("application_id",)},
    # Not in the spec snapshot (2026-05-05); Kombo's SDK 1.4.0, generated from the live API, has it.
    "greenhousev3": {"application_id": ("application_id",)},
    "onlyfy": {"application_id": ("application_id",)},
    "smartrecruiters": {
        "candidate_and_job_remote_ids": ("candidate_remote_id", "job_remote_id"),
    },
}
# The spec's pattern for `tracked_at`; stagewatch always sends `YYYY-MM-DDTHH:MM:SS.sssZ`.
TRACKED_AT_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?Z?$")
# Columns a row may carry besides the ATS's id fields.
ROW_OPTIONS = ("id_type", "tracked_at")

ImportStatus = Literal["imported", "already_tracked"]


class ImportRowError(ValueError):
    """A row that cannot become a valid request: the message names the problem in one line."""


@dataclass(frozen=True)
class ImportRequest:
    """One valid import: the ATS, its id_type and ids, and when tracking starts (None: Kombo's
    choice)."""

    tool: str
    id_type: str
    ids: tuple[tuple[str, str], ...]  # (field, value) in the spec's order
    tracked_at: str | None = None

    @property
    def tool_ids(self) -> dict[str, dict[str, str]]:
        """The `{<tool>: {id_type, ...ids}}` part of the body, as Kombo echoes it back."""
        return {self.tool: {"id_type": self.id_type, **dict(self.ids)}}

    @property
    def key(self) -> str:
        """The import's identity: the same ATS ids give the same key, whatever `tracked_at`."""
        return json.dumps(self.tool_ids, sort_keys=True, separators=(",", ":"))

    def body(self) -> dict[str, Any]:
        return {"tracked_at": self.tracked_at, **self.tool_ids}


class ImportAnswer(BaseModel):
    """What Kombo said to one import that changed nothing for the worse.

    `imported`: Kombo tracks it now; `application_id` is its Kombo id and its data arrives with
    Kombo's next sync. `already_tracked`: Kombo tracked it before (`ATS.APPLICATION_ALREADY_EXISTS`);
    `note` holds Kombo's message.
    """

    status: ImportStatus
    application_id: str | None = None
    tracked_at: str | None = None
    warnings: list[str] = Field(default_factory=list)
    note: str | None = None


def _tracked_at_text(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_ts(value)
    if not isinstance(value, str) or not TRACKED_AT_PATTERN.match(value.strip()):
        raise ImportRowError(
            f"tracked_at must look like YYYY-MM-DDTHH:MM:SS.sssZ (UTC), got {value!r}"
        )
    return value.strip()


def _text(value: Any) -> str | None:
    """A cell's text: numbers are ids too (JSONL may hold them unquoted); blank is missing."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _pick_id_type(tool: str, given: Mapping[str, str], id_type: str | None) -> str:
    shapes = IMPORT_SHAPES[tool]
    if id_type is not None:
        if id_type not in shapes:
            raise ImportRowError(
                f"id_type {id_type!r} is not one {tool} accepts; use one of {sorted(shapes)}"
            )
        return id_type
    complete = [name for name, fields in shapes.items() if all(f in given for f in fields)]
    if len(complete) == 1:
        return complete[0]
    if complete:
        raise ImportRowError(
            f"the row fits several {tool} id types ({', '.join(complete)}); add an id_type column"
        )
    wanted = " or ".join("+".join(fields) for fields in shapes.values())
    raise ImportRowError(f"{tool} needs {wanted}; the row has {sorted(given) or 'no ids'}")


def import_request(
    tool: str, row: Mapping[str, Any], *, tracked_at: datetime | str | None = None
) -> ImportRequest:
    """The request a row of ATS ids stands for, or `ImportRowError` naming what is wrong.

    Columns are the ATS's id field names (`application_id` for Greenhouse), plus optional
    `id_type` (needed only where one row fits two shapes) and `tracked_at` (overrides the default).
    """
    if tool not in IMPORT_SHAPES:
        raise ImportRowError(
            f"Kombo imports applications only for {', '.join(sorted(IMPORT_SHAPES))}; "
            f"not for {tool!r}"
        )
    fields = {f for shape in IMPORT_SHAPES[tool].values() for f in shape}
    unknown = sorted(str(k) for k in row if k not in fields and k not in ROW_OPTIONS)
    if unknown:
        raise ImportRowError(
            f"unknown column(s) {', '.join(unknown)} for {tool}; expected {sorted(fields)}"
        )
    given = {k: v for k in fields if (v := _text(row.get(k))) is not None}
    bad = sorted(k for k in fields if k in row and row[k] not in (None, "") and k not in given)
    if bad:
        raise ImportRowError(f"{', '.join(bad)} must be a non-empty string or a whole number")
    id_type = _pick_id_type(tool, given, _text(row.get("id_type")))
    required = IMPORT_SHAPES[tool][id_type]
    missing = [f for f in required if f not in given]
    if missing:
        raise ImportRowError(f"{tool} id_type {id_type} needs {', '.join(missing)}")
    extra = sorted(set(given) - set(required))
    if extra:
        raise ImportRowError(f"{', '.join(extra)} is not part of {tool} id_type {id_type}")
    when = _tracked_at_text(row["tracked_at"]) if _text(row.get("tracked_at")) else None
    if when is None:
        when = _tracked_at_text(tracked_at)
    return ImportRequest(tool, id_type, tuple((f, given[f]) for f in required), when)


def request_from_tool_ids(
    tool_ids: Mapping[str, Any], tracked_at: datetime | str | None
) -> ImportRequest:
    """`{<tool>: {id_type, ...ids}}` checked against the spec's shapes."""
    if not isinstance(tool_ids, Mapping) or len(tool_ids) != 1:
        raise ImportRowError("tool_ids must name exactly one ATS, e.g. {'greenhouse': {...}}")
    [(tool, ids)] = tool_ids.items()
    if not isinstance(ids, Mapping) or not _text(ids.get("id_type")):
        raise ImportRowError(f"tool_ids[{tool!r}] must be an object with an id_type")
    return import_request(tool, ids, tracked_at=tracked_at)


def parse_answer(body: Mapping[str, Any]) -> ImportAnswer:
    """The success envelope's data, or ValueError when it lacks the application's Kombo id."""
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise ValueError("Kombo answered success without data.id")
    warnings = [
        w["message"]
        for w in body.get("warnings") or []
        if isinstance(w, dict) and isinstance(w.get("message"), str)
    ]
    tracked = data.get("tracked_at")
    return ImportAnswer(
        status="imported",
        application_id=data["id"],
        tracked_at=tracked if isinstance(tracked, str) else None,
        warnings=warnings,
        note="; ".join(warnings) or None,
    )
