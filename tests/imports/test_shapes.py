"""Each ATS shape of `PostAtsImportTrackedApplicationRequestBody`: valid rows become bodies the
spec accepts, invalid rows are refused with a one-line reason before anything is sent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stagewatch.kombo.imports import (
    IMPORT_SHAPES,
    ImportRowError,
    import_request,
    request_from_tool_ids,
)
from stagewatch.simulator.backlog import IMPORT_ID_TYPES
from tests.imports.conftest import body_validator, spec_shapes

# One valid row per (tool, id_type), and the body it must become.
VALID = [
    (
        "greenhouse",
        {"application_id": "4567"},
        {"greenhouse": {"id_type": "application_id", "application_id": "4567"}},
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


def test_the_shapes_are_the_specs():
    spec = spec_shapes()
    assert spec == IMPORT_SHAPES
    assert spec == IMPORT_ID_TYPES  # the simulator keeps its own copy
    covered = {(tool, next(iter(body[tool].values()))) for tool, _, body in VALID}
    assert covered == {(t, i) for t, types in spec_shapes().items() for i in types}


@pytest.mark.parametrize(("tool", "row", "expected"), VALID)
def test_a_valid_row_becomes_a_body_the_spec_accepts(tool, row, expected):
    request = import_request(tool, row, tracked_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC))
    body = request.body()
    assert body == {"tracked_at": "2026-03-01T09:30:00.000Z", **expected}
    body_validator().validate(body)
    assert import_request(tool, row).body() == {"tracked_at": None, **expected}
    body_validator().validate(import_request(tool, row).body())


@pytest.mark.parametrize(("tool", "row", "expected"), VALID)
def test_dropping_any_required_id_fails_here_and_in_the_spec(tool, row, expected):
    for field in row:
        partial = {k: v for k, v in row.items() if k != field}
        with pytest.raises(ImportRowError):
            import_request(tool, {**partial, "id_type": expected[tool]["id_type"]})
        ids = {k: v for k, v in expected[tool].items() if k != field}
        assert not body_validator().is_valid({"tracked_at": None, tool: ids})


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
            "Kombo imports applications only for erecruiter, greenhouse, onlyfy, recruitee, "
            "smartrecruiters, successfactors; not for 'lever'",
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
