import copy
import json
from datetime import UTC, datetime, timedelta

from stagewatch.kombo.models import (
    Application,
    Candidate,
    CurrentStage,
    Job,
    JobRef,
    Quarantined,
    Stage,
    parse_records,
)
from tests.spec import load_spec

T0 = datetime(2022, 8, 7, 14, 1, 29, 196000, tzinfo=UTC)


def spec_example(schema: str) -> dict:
    spec = load_spec()
    return spec["components"]["schemas"][schema]["properties"]["data"]["examples"][0]


def spec_application() -> dict:
    return spec_example("GetAtsApplicationsPositiveResponse")["results"][0]


def spec_job() -> dict:
    return spec_example("GetAtsJobsPositiveResponse")["results"][0]


def test_spec_application_example_parses_to_the_fields_stagewatch_uses():
    app = Application.model_validate(spec_application())
    assert app.model_dump(
        include={
            "id",
            "remote_id",
            "outcome",
            "rejection_reason_name",
            "rejected_at",
            "current_stage_id",
            "current_stage",
            "job_id",
            "job",
            "candidate_id",
            "candidate",
            "changed_at",
            "remote_created_at",
            "remote_updated_at",
            "remote_deleted_at",
        }
    ) == {
        "id": "H77fDF8uvEzGNPRubiz5DvQ7",
        "remote_id": "32",
        "outcome": "HIRED",
        "rejection_reason_name": None,
        "rejected_at": None,
        "current_stage_id": "5J7L4b48wBfffYwek9Az9pkM",
        "current_stage": {
            "id": "5J7L4b48wBfffYwek9Az9pkM",
            "remote_id": "32",
            "name": "Initial Screening",
            "index": 2,
            "status": None,
        },
        "job_id": "H5daSm8e85Dmvmne3wLeCPhX",
        "job": {"id": "H5daSm8e85Dmvmne3wLeCPhX", "remote_id": "32", "name": "Backend Engineer"},
        "candidate_id": "26vafvWSRmbhNcxJYqjCzuJg",
        "candidate": {"id": "26vafvWSRmbhNcxJYqjCzuJg", "first_name": "John", "last_name": "Doe"},
        "changed_at": T0,
        "remote_created_at": T0,
        "remote_updated_at": T0,
        "remote_deleted_at": None,
    }
    assert (app.stage_id, app.stage_name, app.effective_job_id, app.candidate_name) == (
        "5J7L4b48wBfffYwek9Az9pkM",
        "Initial Screening",
        "H5daSm8e85Dmvmne3wLeCPhX",
        "John Doe",
    )


def test_spec_application_keeps_unknown_fields_but_no_candidate_contact_data_or_remote_data():
    app = Application.model_validate(spec_application())
    dumped = app.model_dump(mode="json")
    assert set(dumped) - set(Application.model_fields) == {
        "screening_question_answers",
        "custom_fields",
        "integration_fields",
        "remote_url",
        "interviews",
        "offers",
    }
    assert "remote_data" not in dumped
    assert "remote_data" not in dumped["current_stage"]
    assert dumped["offers"] == [
        {"id": "76bab8LKuFtqpZ89mofCPMHX", "remote_id": "6", "status": "ACCEPTED"}
    ]
    text = json.dumps(dumped)
    for contact in ("john.doe@example.com", "+1-541-754-3010", "youtube.com", "Employee Referral"):
        assert contact not in text


def test_created_application_example_from_the_post_endpoint_parses():
    raw = spec_example("PostAtsJobsJobIdApplicationsPositiveResponse")
    app = Application.model_validate(raw)
    assert (app.id, app.outcome, app.stage_id, app.stage_name, app.candidate) == (
        "H77fDF8uvEzGNPRubiz5DvQ7",
        "PENDING",
        "5J7L4b48wBfffYwek9Az9pkM",
        "Interview",
        Candidate(id="26vafvWSRmbhNcxJYqjCzuJg", first_name="John", last_name="Doe"),
    )


def test_spec_job_example_parses_with_its_stages():
    job = Job.model_validate(spec_job())
    assert job.model_dump(
        include={"id", "remote_id", "name", "status", "changed_at", "remote_deleted_at", "stages"}
    ) == {
        "id": "H5daSm8e85Dmvmne3wLeCPhX",
        "remote_id": "32",
        "name": "Backend Engineer",
        "status": "OPEN",
        "changed_at": T0,
        "remote_deleted_at": None,
        "stages": [
            {
                "id": "5J7L4b48wBfffYwek9Az9pkM",
                "remote_id": "32",
                "name": "Initial Screening",
                "index": 0,
                "status": None,
            }
        ],
    }


def test_application_with_only_an_id_parses_with_everything_else_empty():
    app = Application.model_validate({"id": "a1"})
    assert app == Application(id="a1")
    assert (app.stage_id, app.stage_name, app.effective_job_id, app.candidate_name) == (
        None,
        None,
        None,
        None,
    )


def test_application_with_every_nullable_field_null_parses():
    raw = {
        key: None for key in spec_application() if key not in ("id", "integration_fields", "offers")
    }
    app = Application.model_validate({"id": "a1", **raw})
    assert (app.current_stage, app.job, app.candidate, app.outcome, app.changed_at) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_open_enums_keep_unknown_values_as_given():
    app = Application.model_validate({"id": "a1", "outcome": "WITHDRAWN"})
    job = Job.model_validate({"id": "j1", "status": "On hold (pending budget)"})
    stage = Stage.model_validate({"id": "s1", "status": "PAUSED"})
    assert (app.outcome, job.status, stage.status) == (
        "WITHDRAWN",
        "On hold (pending budget)",
        "PAUSED",
    )


def test_current_stage_status_parses_in_the_older_and_the_current_shape():
    """The spec snapshot's current_stage has no status; Kombo's live API (SDK 1.4.0) sends it."""
    stage = {"id": "s1", "remote_id": "7", "name": "Offer", "index": 3}
    current = {"status": "INACTIVE", "custom_fields": {"category": "offer"}}
    shapes = [stage, {**stage, **current}, {**stage, "status": None}, {**stage, "status": "HIDDEN"}]
    parsed = [Application.model_validate({"id": "a1", "current_stage": s}) for s in shapes]
    assert [a.current_stage.model_dump(mode="json") for a in parsed] == [
        {"id": "s1", "remote_id": "7", "name": "Offer", "index": 3, "status": None},
        {
            "id": "s1",
            "remote_id": "7",
            "name": "Offer",
            "index": 3,
            "status": "INACTIVE",
            "custom_fields": {"category": "offer"},
        },
        {"id": "s1", "remote_id": "7", "name": "Offer", "index": 3, "status": None},
        {"id": "s1", "remote_id": "7", "name": "Offer", "index": 3, "status": "HIDDEN"},
    ]


def test_timestamps_become_aware_utc_whatever_form_they_come_in():
    app = Application.model_validate(
        {
            "id": "a1",
            "changed_at": "2026-01-05T10:00:00Z",
            "rejected_at": "2026-01-05T12:00:00+02:00",
            "remote_created_at": "2026-01-05T10:00:00",
            "remote_updated_at": "2026-01-05T10:00:00.5Z",
        }
    )
    ten = datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert (app.changed_at, app.rejected_at, app.remote_created_at, app.remote_updated_at) == (
        ten,
        ten,
        ten,
        ten + timedelta(milliseconds=500),
    )
    assert app.rejected_at.tzinfo is UTC
    assert app.remote_created_at.tzinfo is UTC


def test_stage_helpers_prefer_the_nested_current_stage():
    app = Application.model_validate(
        {"id": "a1", "current_stage_id": "old", "current_stage": {"id": "new", "name": "Offer"}}
    )
    assert (app.stage_id, app.stage_name, app.current_stage) == (
        "new",
        "Offer",
        CurrentStage(id="new", name="Offer"),
    )
    flat = Application.model_validate({"id": "a2", "current_stage_id": "s9", "current_stage": None})
    assert (flat.stage_id, flat.stage_name) == ("s9", None)


def test_job_reference_and_candidate_name_helpers():
    app = Application.model_validate(
        {"id": "a1", "job_id": None, "job": {"id": "j1"}, "candidate": {"last_name": "Doe"}}
    )
    assert (app.effective_job_id, app.job, app.candidate_name) == ("j1", JobRef(id="j1"), "Doe")
    empty = Application.model_validate({"id": "a2", "candidate": {"first_name": None}})
    assert empty.candidate_name is None


def test_job_stages_may_be_null_missing_tied_or_hold_null_entries():
    job = Job.model_validate(
        {
            "id": "j1",
            "stages": [
                {"id": "s1", "name": "Screen", "index": 0, "remote_data": None},
                None,
                {"id": "s2", "name": "Interview", "index": 0},
                {"id": "s3", "name": "Offer"},
            ],
        }
    )
    assert [(s.id, s.name, s.index) for s in job.stages] == [
        ("s1", "Screen", 0),
        ("s2", "Interview", 0),
        ("s3", "Offer", None),
    ]
    assert Job.model_validate({"id": "j2", "stages": None}).stages is None
    assert Job.model_validate({"id": "j3"}).stages is None


def test_parse_records_keeps_good_records_and_quarantines_bad_ones_with_reasons():
    good_1 = {"id": "a1", "outcome": "PENDING"}
    no_id = {
        "outcome": "HIRED",
        "candidate": {
            "first_name": "Ann",
            "last_name": "Lee",
            "email_addresses": [{"email_address": "ann@example.com", "type": "WORK"}],
            "phone_numbers": [{"phone_number": "+49 30 1234", "type": "WORK"}],
        },
    }
    bad_date = {"id": "a3", "changed_at": "yesterday"}
    empty_id = {"id": ""}
    good_2 = {"id": "a5", "current_stage": {"id": "s1", "name": "Screen"}}
    records, quarantined = parse_records(
        Application, [good_1, no_id, bad_date, "oops", empty_id, good_2, None], "application"
    )
    assert [r.id for r in records] == ["a1", "a5"]
    assert records[1].stage_name == "Screen"
    assert quarantined == [
        Quarantined(
            model="application",
            record_id=None,
            reason="id: Field required",
            raw={"outcome": "HIRED", "candidate": {"first_name": "Ann", "last_name": "Lee"}},
        ),
        Quarantined(
            model="application",
            record_id="a3",
            reason="changed_at: Input should be a valid datetime or date, input is too short",
            raw={"id": "a3", "changed_at": "yesterday"},
        ),
        Quarantined(
            model="application", record_id=None, reason="record is str, not an object", raw="oops"
        ),
        Quarantined(
            model="application",
            record_id=None,
            reason="id: String should have at least 1 character",
            raw={"id": ""},
        ),
        Quarantined(
            model="application",
            record_id=None,
            reason="record is NoneType, not an object",
            raw=None,
        ),
    ]
    assert no_id["candidate"]["email_addresses"], "the caller's payload is not modified"


def test_parse_records_reports_nested_field_paths():
    _, quarantined = parse_records(
        Job, [{"id": "j1", "stages": [{"id": "s1"}, {"name": "no id"}]}], "job"
    )
    assert [(q.record_id, q.reason) for q in quarantined] == [("j1", "stages.1.id: Field required")]


def test_parse_records_of_a_valid_page_returns_every_record_and_nothing_quarantined():
    page = []
    for i in range(5):
        record = copy.deepcopy(spec_application())
        record["id"] = f"app{i}"
        page.append(record)
    records, quarantined = parse_records(Application, page, "application")
    assert ([r.id for r in records], quarantined) == ([f"app{i}" for i in range(5)], [])
    assert all(type(r) is Application for r in records)


def test_parse_records_with_an_empty_list():
    assert parse_records(Job, [], "job") == ([], [])


def test_explicit_utc_offsets_other_than_zero_are_converted():
    job = Job.model_validate({"id": "j1", "changed_at": "2026-03-01T09:30:00-05:00"})
    assert job.changed_at == datetime(2026, 3, 1, 14, 30, tzinfo=UTC)
    assert job.changed_at.tzinfo is UTC
