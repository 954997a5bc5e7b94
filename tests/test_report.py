import re
import uuid
from datetime import UTC, datetime

import pytest

from stagewatch import report
from stagewatch.diff import EVENT_FIELDS
from stagewatch.report import (
    SyncOutcome,
    artifact_key,
    escape_md,
    event_table,
    integration_markdown,
    label_counts,
    labels_from_kinds,
    prefect_event,
    redact_contacts,
    slug,
    summary_markdown,
)
from stagewatch.report.events import _EVENT_NAMESPACE

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 1, 6, 9, 0, tzinfo=UTC)


def event(kind, app="app1", **fields):
    base = {
        "event_key": f"k-{kind}-{app}-{fields.get('to_stage_id', '')}",
        "integration_id": "greenhouse:AbC",
        "application_id": app,
        "kind": kind,
        "observed_at": "2026-01-06T09:00:00.000Z",
        "previous_observed_at": "2026-01-05T09:00:00.000Z",
        "job_id": "job1",
        "sync_run_id": 7,
    }
    return base | fields


def outcome(**fields):
    base = dict(
        integration_id="greenhouse:AbC",
        status="synced",
        mode="incremental",
        run_id=7,
        window_start=T0,
        listed_at=T1,
        complete=True,
        requests=4,
        retries=0,
        waited_seconds=0.0,
        duration_seconds=1.25,
        pages=2,
        applications=3,
        jobs=1,
    )
    return SyncOutcome(**(base | fields))


def test_escape_md_neutralises_markdown_html_and_newlines():
    raw = "a|b [x](http://e.com) <b>x</b> `c` *d* _e_ #f\nsecond\r\nthird & more"
    assert escape_md(raw) == (
        r"a\|b \[x\]\(http\://e\.com\) &lt;b&gt;x&lt;/b&gt; \`c\` \*d\* \_e\_ \#f second "
        r"third &amp; more"
    )


def test_lone_surrogates_become_replacement_characters_so_artifacts_encode():
    name = "Zo\ud83d \U0001f600"  # a lone high surrogate, then a real emoji
    assert escape_md(name) == "Zo\ufffd \U0001f600"
    assert escape_md(name, redact=False) == "Zo\ufffd \U0001f600"
    kwargs = prefect_event(event("stage_changed", to_stage_name=name))
    assert kwargs["payload"]["to_stage_name"].encode() == "Zo\ufffd \U0001f600".encode()


def test_escape_md_shows_missing_as_dash_and_caps_length():
    assert escape_md(None) == "-"
    assert escape_md("   ") == "-"
    assert escape_md("x" * 200, limit=10) == "xxxxxxxxx…"


def test_contact_data_is_redacted_but_dates_and_short_numbers_stay():
    assert redact_contacts("ping jane.doe+cv@mail.example.org now") == "ping [email redacted] now"
    assert redact_contacts("call +49 30 1234567 or (030) 123 45 67") == (
        "call [phone redacted] or [phone redacted]"
    )
    assert redact_contacts("Round 2 (30 min) on 2026-01-05, req 12345") == (
        "Round 2 (30 min) on 2026-01-05, req 12345"
    )


def test_slug_is_a_valid_key_and_keeps_case_variants_apart():
    a, b = slug("greenhouse:AbC"), slug("greenhouse:abc")
    assert a != b
    assert a.startswith("greenhouse-abc-") and b.startswith("greenhouse-abc-")
    for key in (artifact_key("greenhouse:AbC"), artifact_key("::"), artifact_key("Ünïcode:ID")):
        assert re.fullmatch(r"[a-z0-9-]+", key), key
    assert artifact_key("greenhouse:AbC") == f"stage-changes-{a}"


def test_markdown_lists_hires_first_flags_backward_moves_and_counts_every_kind():
    events = [
        event("first_seen", app="a0", to_stage_id="s1", to_stage_name="Applied"),
        event(
            "stage_changed",
            app="a1",
            from_stage_id="s1",
            from_stage_name="Applied",
            to_stage_id="s2",
            to_stage_name="Interview",
            direction="forward",
        ),
        event(
            "stage_changed",
            app="a2",
            from_stage_id="s2",
            from_stage_name="Interview",
            to_stage_id="s1",
            to_stage_name="Applied",
            direction="backward",
        ),
        event("outcome_changed", app="a3", from_outcome="PENDING", to_outcome="HIRED"),
        event(
            "outcome_changed",
            app="a4",
            from_outcome="PENDING",
            to_outcome="DECLINED",
            rejection_reason_name="Salary | too <high>",
        ),
    ]
    text = integration_markdown(
        outcome(counts={"hired": 1, "declined": 1, "stage moved": 2, "first seen": 1}),
        events,
        job_names={"job1": "Backend *Engineer*"},
        candidate_names={"a3": "Ada Lovelace"},
    )
    assert text.splitlines()[:12] == [
        r"# greenhouse\:AbC: incremental sync, 5 changes",
        "",
        "**Window:** changes after 2026-01-05T09:00:00.000Z, listing started "
        "2026-01-06T09:00:00.000Z",
        "",
        "| change | count |",
        "| --- | ---: |",
        "| hired | 1 |",
        "| declined | 1 |",
        "| stage moved | 2 |",
        "| first seen | 1 |",
        "",
        "## Hires and declines",
    ]
    assert (
        r"- **Hired**: a3 (Ada Lovelace), job Backend \*Engineer\*, observed "
        "2026-01-05T09:00:00.000Z → 2026-01-06T09:00:00.000Z"
    ) in text
    assert r"reason Salary \| too &lt;high&gt;" in text
    assert "## Stage moves (2, 1 backward)" in text
    assert (
        r"| a2 | Backend \*Engineer\* | Interview | Applied | **⚠ backward** "
        "| 2026-01-05T09:00:00.000Z → 2026-01-06T09:00:00.000Z |"
    ) in text
    assert "| Applied → Interview | 1 |" in text
    assert "| Interview → Applied | 1 |" in text
    assert text.endswith("| 4 | 0 | 0.0 s | 1.2 s | 2 | 3 | 1 |\n")


def test_markdown_without_candidate_permission_names_nobody():
    events = [event("outcome_changed", app="a3", to_outcome="HIRED")]
    text = integration_markdown(outcome(counts={"hired": 1}), events, candidate_names=None)
    assert "Ada" not in text
    assert "- **Hired**: a3, job job1, observed" in text


def test_markdown_caps_long_lists_and_counts_the_rest():
    moves = [
        event(
            "stage_changed",
            app=f"a{i}",
            from_stage_name="Applied",
            to_stage_name=f"S{i % 4}",
            to_stage_id=f"s{i}",
            direction="forward",
        )
        for i in range(30)
    ]
    text = integration_markdown(outcome(counts={"stage moved": 30}), moves, cap=5)
    rows = [line for line in text.splitlines() if re.match(r"\| a\d", line)]
    assert len(rows) == 5
    assert "…and 25 more stage moves" in text
    assert "| Applied → S0 | 8 |" in text


def test_no_changes_is_one_line():
    text = integration_markdown(outcome(), [])
    assert "No changes in this window." in text
    assert "| change | count |" not in text
    assert "## Stage moves" not in text


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("not_ready", r"**Not ready:** Kombo has not finished setting up this integration"),
        ("unsupported", r"**Unsupported:** the connected ATS does not offer applications"),
    ],
)
def test_not_ready_and_unsupported_are_explained(status, expected):
    text = integration_markdown(
        outcome(status=status, error_code="INTEGRATION.X", complete=False), []
    )
    assert text.startswith(rf"# greenhouse\:AbC: {report.STATUS_LABELS[status]}")
    assert expected in text
    assert r"(INTEGRATION\.X)" in text
    assert "No changes in this window." not in text


def test_notes_cover_quarantine_retries_and_incomplete_listings():
    text = integration_markdown(
        outcome(quarantined=2, retries=3, waited_seconds=4.5, task_retries=1, complete=False), []
    )
    assert "**Quarantined:** 2 record(s) could not be parsed" in text
    assert "**Retries:** 3 request(s) retried after transient errors, 4.5 s waited." in text
    assert "**Task retries:** 1 listing(s) started again." in text
    assert "**Incomplete listing:** no deletions inferred, watermark not advanced." in text


def test_a_baseline_says_its_first_sightings_are_counted_and_where_to_find_them():
    first = integration_markdown(outcome(counts={"first seen": 3}), [], baseline=True)
    assert (
        r"- **Baseline:** the first sync of this integration. Its applications are what existed "
        "before stagewatch looked, so they are counted, not listed in a table or sent as events; "
        "`stagewatch changes --integration` with this integration's id lists them."
    ) in first
    assert "| first seen | 3 |" in first
    assert "Baseline" not in integration_markdown(outcome(counts={"first seen": 3}), [])


def test_full_listing_window():
    text = integration_markdown(outcome(window_start=None, mode="full"), [])
    assert "**Window:** full listing, started 2026-01-06T09:00:00.000Z" in text


def test_label_counts_split_outcomes():
    events = [
        event("outcome_changed", to_outcome="HIRED"),
        event("outcome_changed", to_outcome="DECLINED"),
        event("outcome_changed", to_outcome="ON_HOLD"),
        event("deleted"),
    ]
    assert label_counts(events) == {
        "hired": 1,
        "declined": 1,
        "outcome changed": 1,
        "deleted": 1,
    }


def test_labels_from_kind_counts_read_only_the_outcome_changes():
    outcomes = [
        event("outcome_changed", to_outcome="HIRED"),
        event("outcome_changed", to_outcome="DECLINED"),
        event("outcome_changed", to_outcome="ON_HOLD"),
    ]
    kinds = {"first_seen": 5, "stage_changed": 2, "outcome_changed": 3, "deleted": 0}
    assert list(labels_from_kinds(kinds, outcomes).items()) == [
        ("hired", 1),
        ("declined", 1),
        ("stage moved", 2),
        ("outcome changed", 1),
        ("first seen", 5),
    ]


def test_event_table_keeps_public_fields_up_to_the_cap():
    events = [event("deleted", app=f"a{i}", deleted_at=T0) for i in range(4)]
    rows = event_table(iter(events), cap=3)
    assert [row["application_id"] for row in rows] == ["a0", "a1", "a2"]
    assert rows[0] == {field: None for field in EVENT_FIELDS} | {
        "event_key": "k-deleted-a0-",
        "integration_id": "greenhouse:AbC",
        "application_id": "a0",
        "kind": "deleted",
        "observed_at": "2026-01-06T09:00:00.000Z",
        "previous_observed_at": "2026-01-05T09:00:00.000Z",
        "job_id": "job1",
        "sync_run_id": 7,
        "deleted_at": "2026-01-05T09:00:00.000Z",
    }


def test_prefect_event_names_resources_and_is_deterministic():
    hired = event(
        "outcome_changed", app="a3", from_outcome="PENDING", to_outcome="HIRED", observed_at=T1
    )
    kwargs = prefect_event(hired, job_names={"job1": "Chef mail me a@b.co"})
    assert kwargs == {
        "event": "stagewatch.application.hired",
        "resource": {
            "prefect.resource.id": "kombo.application.greenhouse:AbC.a3",
            "prefect.resource.name": "a3",
        },
        "related": [
            {
                "prefect.resource.id": "kombo.integration.greenhouse:AbC",
                "prefect.resource.role": "integration",
                "prefect.resource.name": "greenhouse:AbC",
            },
            {
                "prefect.resource.id": "kombo.job.greenhouse:AbC.job1",
                "prefect.resource.role": "job",
                "prefect.resource.name": "Chef mail me [email redacted]",
            },
        ],
        "payload": {
            "event_key": "k-outcome_changed-a3-",
            "application_id": "a3",
            "kind": "outcome_changed",
            "observed_at": "2026-01-06T09:00:00.000Z",
            "previous_observed_at": "2026-01-05T09:00:00.000Z",
            "job_id": "job1",
            "sync_run_id": 7,
            "from_outcome": "PENDING",
            "to_outcome": "HIRED",
        },
        "id": uuid.uuid5(_EVENT_NAMESPACE, "k-outcome_changed-a3-"),
    }
    assert prefect_event(hired)["id"] == kwargs["id"]


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"kind": "stage_changed"}, "stagewatch.application.stage-changed"),
        ({"kind": "outcome_changed", "to_outcome": "DECLINED"}, "stagewatch.application.declined"),
        ({"kind": "first_seen"}, "stagewatch.application.first-seen"),
        ({"kind": "deleted"}, "stagewatch.application.deleted"),
        ({"kind": "restored"}, "stagewatch.application.restored"),
        ({"kind": "job_changed"}, "stagewatch.application.job-changed"),
        ({"kind": "outcome_changed", "to_outcome": None}, "stagewatch.application.outcome-changed"),
    ],
)
def test_prefect_event_names(fields, name):
    assert prefect_event(event("x") | fields)["event"] == name


def test_summary_says_which_integration_did_what():
    outcomes = [
        outcome(counts={"hired": 2, "stage moved": 5}),
        outcome(integration_id="lever:X", status="not_ready", message="setup | pending"),
        outcome(integration_id="bamboo:Y", status="failed", message="PLATFORM.X: bad key"),
    ]
    assert summary_markdown(outcomes).splitlines() == [
        "# stagewatch sync: 3 integrations (1 synced, 1 not ready, 1 failed)",
        "",
        "| integration | status | mode | changes | hires | declines | stage moves | note |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
        r"| greenhouse\:AbC | synced | incremental | 7 | 2 | 0 | 5 |  |",
        r"| lever\:X | not ready | incremental | 0 | 0 | 0 | 0 | setup \| pending |",
        r"| bamboo\:Y | failed | incremental | 0 | 0 | 0 | 0 | PLATFORM\.X\: bad key |",
    ]
