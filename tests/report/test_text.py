"""Text safety: markdown escaping, contact redaction and artifact keys."""

import re

from stagewatch.report import (
    artifact_key,
    clip,
    escape_md,
    events_table_key,
    prefect_event,
    redact_contacts,
    short_id,
    slug,
)
from tests.report.factories import event


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


def test_digits_inside_ids_are_not_phone_numbers():
    text = "[request sim_0123456789] job req123456789 or 0123456789abc"
    assert redact_contacts(text) == text
    assert redact_contacts("call 0123456789.") == "call [phone redacted]."


def test_escape_md_redacts_only_when_asked():
    assert escape_md("jane@example.org 030 123 45 67") == r"jane@example\.org 030 123 45 67"
    assert escape_md("jane@example.org", redact=True) == r"\[email redacted\]"


def test_clip_never_cuts_inside_a_link():
    link = "https://app.kombo.dev/logs/abcdef"
    assert clip(f"failed (log: {link}) and more words after it", 20) == f"failed (log: {link})…"
    assert clip(f"failed (log: {link})", 20) == f"failed (log: {link})"
    assert clip(f"{'x' * 30} {link}", 20) == "x" * 19 + "…"
    assert clip("short", 20) == "short"


def test_short_id_keeps_the_tool_and_a_few_characters():
    assert short_id("greenhouse:DBTuKqV8wLoSUHphiWVrp28x") == "greenhouse:DBTu…"
    assert short_id("greenhouse:DBTuK") == "greenhouse:DBTuK"
    assert short_id("app_0123456789", keep=6) == "app_01…"
    assert short_id(None) == ""


def test_slug_is_a_valid_key_and_keeps_case_variants_apart():
    a, b = slug("greenhouse:AbC"), slug("greenhouse:abc")
    assert a != b
    assert a.startswith("greenhouse-abc-") and b.startswith("greenhouse-abc-")
    for key in (artifact_key("greenhouse:AbC"), artifact_key("::"), artifact_key("Ünïcode:ID")):
        assert re.fullmatch(r"[a-z0-9-]+", key), key
    assert artifact_key("greenhouse:AbC") == f"stage-changes-{a}"


def test_keys_are_short_with_segments_the_ui_can_wrap_between():
    integration_id = "successfactors:HWUTwvyx2wLoSUHphiWVrp28"
    key = events_table_key(integration_id)
    assert re.fullmatch(r"stage-rows-successfactors-hwut-[0-9a-f]{6}", key), key
    assert max(len(part) for part in artifact_key(integration_id).split("-")) <= 16
