"""The integration and summary markdown artifacts."""

import re

import pytest

from stagewatch import report
from stagewatch.report import integration_markdown, summary_markdown
from tests.report.factories import event, outcome


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
    assert text.splitlines()[:14] == [
        r"# greenhouse\:AbC: incremental sync, 5 changes",
        "",
        r"**Integration:** greenhouse\:AbC",
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
        r"| a2 | Backend \*Engineer\* | Interview → Applied | **⚠ backward** "
        "| 2026-01-06 09:00 |"
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


def test_summary_says_which_integration_did_what():
    outcomes = [
        outcome(counts={"hired": 2, "stage moved": 5}),
        outcome(integration_id="lever:X", status="not_ready", message="setup | pending"),
        outcome(integration_id="bamboo:Y", status="failed", message="PLATFORM.X: bad key"),
    ]
    assert summary_markdown(outcomes).splitlines() == [
        "# stagewatch sync: 3 integrations (1 synced, 1 not ready, 1 failed)",
        "",
        "| integration | status | mode | changes | hires | declines | moves |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        r"| greenhouse\:AbC | synced | incremental | 7 | 2 | 0 | 5 |",
        r"| lever\:X | not ready [1] | incremental | 0 | 0 | 0 | 0 |",
        r"| bamboo\:Y | failed [2] | incremental | 0 | 0 | 0 | 0 |",
        "",
        "## Notes",
        "",
        r"1. **lever\:X**: setup \| pending",
        r"2. **bamboo\:Y**: PLATFORM\.X\: bad key",
    ]


def test_summary_notes_keep_request_ids_and_whole_log_links():
    log = "https://app.kombo.dev/logs/" + "0123456789" * 20
    message = (
        "INTEGRATION.NOT_FOUND (HTTP 404): No integration with id 'greenhouse:AAAA' "
        f"[request sim_0123456789] (log: {log})"
    )
    failed = outcome(integration_id="greenhouse:AAAA", status="failed", message=message)
    notes = summary_markdown([failed]).splitlines()[-1]
    assert r"\[request sim\_0123456789\]" in notes
    assert notes.endswith(r"(log\: https\://app\.kombo\.dev/logs/" + "0123456789" * 20 + r"\)")


def test_job_changes_deletions_and_restores_are_listed_and_capped():
    events = [
        event("job_changed", app="j1", from_job_id="job1", to_job_id="job2"),
        event("deleted", app="d1", deleted_reason="remote_deleted"),
        event("deleted", app="d2", deleted_reason="missing_from_full_listing"),
        event("deleted", app="d3", deleted_reason="remote_deleted"),
        event("restored", app="r1"),
    ]
    counts = {"job changed": 1, "deleted": 3, "restored": 1}
    text = integration_markdown(
        outcome(counts=counts), events, job_names={"job1": "Nurse", "job2": "Chef"}, cap=2
    )
    assert text.split("## Job changes (1)\n\n", 1)[1].split("## Notes")[0].splitlines() == [
        "| application | from job | to job | observed |",
        "| --- | --- | --- | --- |",
        "| j1 | Nurse | Chef | 2026-01-06 09:00 |",
        "",
        "## Deletions (3)",
        "",
        "| application | job | why | observed |",
        "| --- | --- | --- | --- |",
        "| d1 | Nurse | deleted in the ATS | 2026-01-06 09:00 |",
        "| d2 | Nurse | missing from the full listing | 2026-01-06 09:00 |",
        "",
        "…and 1 more in the events table artifact and `stagewatch changes`.",
        "",
        "## Restores (1)",
        "",
        "| application | job | observed |",
        "| --- | --- | --- |",
        "| r1 | Nurse | 2026-01-06 09:00 |",
        "",
        "## Run statistics",
        "",
        "| requests | retries | waited | duration | pages | applications listed | jobs |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| 4 | 0 | 0.0 s | 1.2 s | 2 | 3 | 1 |",
    ]


def test_only_candidate_fields_are_redacted():
    events = [
        event(
            "outcome_changed",
            app="sim_0123456789",
            to_outcome="DECLINED",
            rejection_reason_name="call me on +49 30 1234567",
            job_id="req_123456789",
        )
    ]
    text = integration_markdown(
        outcome(counts={"declined": 1}),
        events,
        candidate_names={"sim_0123456789": "Eve (eve@example.org)"},
    )
    assert (
        r"- **Declined**: sim\_0123456789 (Eve \(\[email redacted\]\)), job req\_123456789, "
        r"reason call me on \[phone redacted\], observed"
    ) in text
