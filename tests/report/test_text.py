"""Text safety: markdown escaping, contact redaction and artifact keys."""

import re

from stagewatch.report import artifact_key, escape_md, prefect_event, redact_contacts, slug
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


def test_slug_is_a_valid_key_and_keeps_case_variants_apart():
    a, b = slug("greenhouse:AbC"), slug("greenhouse:abc")
    assert a != b
    assert a.startswith("greenhouse-abc-") and b.startswith("greenhouse-abc-")
    for key in (artifact_key("greenhouse:AbC"), artifact_key("::"), artifact_key("Ünïcode:ID")):
        assert re.fullmatch(r"[a-z0-9-]+", key), key
    assert artifact_key("greenhouse:AbC") == f"stage-changes-{a}"
