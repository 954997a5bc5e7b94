"""Each ATS shape of `PostAtsImportTrackedApplicationRequestBody`: valid rows become bodies the
spec accepts, invalid rows are refused with a one-line reason before anything is sent."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

import pytest
from kombo.models import PostAtsImportTrackedApplicationRequestBody
from pydantic import BaseModel, ValidationError

from stagewatch.kombo.imports import (
    IMPORT_SHAPES,
    ImportRowError,
    import_request,
    request_from_tool_ids,
)
from stagewatch.simulator.backlog import IMPORT_ID_TYPES
from stagewatch.timeutil import parse_ts
from tests.imports.conftest import body_validator, spec_shapes

# One valid row per (tool, id_type), and the body it must become.
VALID = [
    (
        "greenhouse",
        {"application_id": "4567"},
        {"greenhouse": {"id_type": "application_id", "application_id": "4567"}},
    ),
    (
        "greenhousev3",
        {"application_id": "4568"},
        {"greenhousev3": {"id_type": "application_id", "application_id": "4568"}},
    ),
    (
        "onlyfy",
        {"application_id": "77"},
        {"onlyfy": {"id_type": "application_id", "application_id": "77"}},
    ),
    (
        "recruitee",
        {"placement_id": "p-9"},
        {"recruitee": {"id_type": "placement_id", "placement_id": "p-9"}},
    ),
    (
        "successfactors",
        {"application_remote_id": "1224042"},
        {
            "successfactors": {
                "id_type": "application_remote_id",
                "application_remote_id": "1224042",
            }
        },
    ),
    (
        "smartrecruiters",
        {"candidate_remote_id": "c1", "job_remote_id": "j1"},
        {
            "smartrecruiters": {
                "id_type": "candidate_and_job_remote_ids",
                "candidate_remote_id": "c1",
                "job_remote_id": "j1",
            }
        },
    ),
    (
        "erecruiter",
        {"application_remote_id": "a1", "job_remote_id": "j1"},
        {
            "erecruiter": {
                "id_type": "application_and_job_remote_ids",
                "application_remote_id": "a1",
                "job_remote_id": "j1",
            }
        },
    ),
    (
        "erecruiter",
        {"candidate_remote_id": "c1", "application_remote_id": "a1"},
        {
            "erecruiter": {
                "id_type": "application_and_candidate_remote_ids",
                "candidate_remote_id": "c1",
                "application_remote_id": "a1",
            }
        },
    ),
]


def _models(annotation) -> list[type[BaseModel]]:
    """The pydantic models inside Optional[...], Union[...] and Annotated[...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        args = args[:1]
    return [model for arg in args for model in _models(arg)]


def sdk_shapes() -> dict[str, dict[str, tuple[str, ...]]]:
    """tool -> id_type -> required id fields, from the request model of Kombo's SDK."""
    shapes: dict[str, dict[str, tuple[str, ...]]] = {}
    for tool, field in PostAtsImportTrackedApplicationRequestBody.model_fields.items():
        if tool == "tracked_at":
            continue
        for variant in _models(field.annotation):
            fields = variant.model_fields
            id_type = fields["ID_TYPE"].default
            required = tuple(n for n, f in fields.items() if n != "ID_TYPE" and f.is_required())
            shapes.setdefault(tool, {})[id_type] = required
    return shapes


def test_the_shapes_are_the_specs_and_the_sdks():
    spec = spec_shapes()
    assert {t: s for t, s in IMPORT_SHAPES.items() if t != "greenhousev3"} == spec
    assert IMPORT_ID_TYPES == IMPORT_SHAPES  # the simulator keeps its own copy
    sdk = sdk_shapes()  # Kombo's SDK 1.4.0 is newer than the spec snapshot: greenhousev3
    assert {t: {i: set(f) for i, f in s.items()} for t, s in sdk.items()} == {
        t: {i: set(f) for i, f in s.items()} for t, s in IMPORT_SHAPES.items()
    }
    covered = {(tool, next(iter(body[tool].values()))) for tool, _, body in VALID}
    assert covered == {(t, i) for t, types in IMPORT_SHAPES.items() for i in types}


@pytest.mark.parametrize(("tool", "row", "expected"), VALID)
def test_a_valid_row_becomes_a_body_the_spec_accepts(tool, row, expected):
    request = import_request(tool, row, tracked_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC))
    body = request.body()
    assert body == {"tracked_at": "2026-03-01T09:30:00.000Z", **expected}
    assert import_request(tool, row).body() == {"tracked_at": None, **expected}
    for sent in (body, import_request(tool, row).body()):
        if tool in spec_shapes():
            body_validator().validate(sent)
        sdk = PostAtsImportTrackedApplicationRequestBody.model_validate(sent)
        dumped = sdk.model_dump(by_alias=True, exclude_none=True)
        assert {k: v for k, v in dumped.items() if k != "tracked_at"} == expected
        when = sent["tracked_at"]
        assert sdk.tracked_at == (None if when is None else parse_ts(when))


@pytest.mark.parametrize(("tool", "row", "expected"), VALID)
def test_dropping_any_required_id_fails_here_and_in_the_spec(tool, row, expected):
    for field in row:
        partial = {k: v for k, v in row.items() if k != field}
        with pytest.raises(ImportRowError):
            import_request(tool, {**partial, "id_type": expected[tool]["id_type"]})
        ids = {k: v for k, v in expected[tool].items() if k != field}
        if tool in spec_shapes():
            assert not body_validator().is_valid({"tracked_at": None, tool: ids})
        with pytest.raises(ValidationError):
            PostAtsImportTrackedApplicationRequestBody.model_validate({"tracked_at": None, tool: ids})


@pytest.mark.parametrize(
    ("tool", "row", "message"),
    [
        (
            "greenhouse",
            {"application_id": ""},
            "greenhouse needs application_id; the row has no ids",
        ),
        (
            "greenhouse",
            {"application_id": "1", "note": "x"},
            "unknown column(s) note for greenhouse; expected ['application_id']",
        ),
        (
            "greenhouse",
            {"application_id": "1", "id_type": "placement_id"},
            "id_type 'placement_id' is not one greenhouse accepts; use one of ['application_id']",
        ),
        (
            "smartrecruiters",
            {"candidate_remote_id": "c1"},
            "smartrecruiters needs candidate_remote_id+job_remote_id; the row has "
            "['candidate_remote_id']",
        ),
        (
            "erecruiter",
            {"candidate_remote_id": "c", "application_remote_id": "a", "job_remote_id": "j"},
            "the row fits several erecruiter id types (application_and_job_remote_ids, "
            "application_and_candidate_remote_ids); add an id_type column",
        ),
        (
            "erecruiter",
            {
                "candidate_remote_id": "c",
                "application_remote_id": "a",
                "job_remote_id": "j",
                "id_type": "application_and_job_remote_ids",
            },
            "candidate_remote_id is not part of erecruiter id_type application_and_job_remote_ids",
        ),
        (
            "greenhouse",
            {"application_id": "1", "tracked_at": "2026-03-01T10:00:00+02:00"},
            "tracked_at must look like YYYY-MM-DDTHH:MM:SS.sssZ (UTC), got "
            "'2026-03-01T10:00:00+02:00'",
        ),
        (
            "greenhouse",
            {"application_id": 1.5},
            "application_id must be a non-empty string or a whole number",
        ),
        (
            "lever",
            {"application_id": "1"},
            "Kombo imports applications only for erecruiter, greenhouse, greenhousev3, onlyfy, "
            "recruitee, smartrecruiters, successfactors; not for 'lever'",
        ),
    ],
)
def test_an_invalid_row_is_refused_with_its_reason(tool, row, message):
    with pytest.raises(ImportRowError) as raised:
        import_request(tool, row)
    assert str(raised.value) == message


def test_explicit_id_type_settles_an_ambiguous_erecruiter_row_and_numbers_are_ids():
    request = import_request(
        "erecruiter",
        {
            "id_type": "application_and_candidate_remote_ids",
            "candidate_remote_id": 12,
            "application_remote_id": "a",
        },
    )
    assert request.tool_ids == {
        "erecruiter": {
            "id_type": "application_and_candidate_remote_ids",
            "candidate_remote_id": "12",
            "application_remote_id": "a",
        }
    }


def test_a_rows_tracked_at_wins_over_the_default_and_the_key_ignores_it():
    row = {"application_id": "5", "tracked_at": "2025-12-01T08:00:00.000Z"}
    request = import_request("greenhouse", row, tracked_at="2026-01-01T00:00:00.000Z")
    assert request.tracked_at == "2025-12-01T08:00:00.000Z"
    assert request.key == '{"greenhouse":{"application_id":"5","id_type":"application_id"}}'
    assert import_request("greenhouse", {"application_id": "5"}).key == request.key


@pytest.mark.parametrize(
    "tool_ids",
    [{}, {"greenhouse": {"application_id": "1"}}, {"a": {}, "b": {}}, {"greenhouse": "1"}],
)
def test_tool_ids_must_name_one_ats_with_an_id_type(tool_ids):
    with pytest.raises(ImportRowError):
        request_from_tool_ids(tool_ids, None)
