"""ATS text made safe to show: markdown escaping, contact redaction, and artifact keys.

Everything that came from the ATS goes through `escape_md` before it reaches markdown, and through
`redact_contacts` before it reaches an event.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

MAX_TEXT = 120

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Digits joined by one or two phone separators; nine or more digits make a phone number, which leaves
# dates (eight digits) and short ids alone.
_PHONE = re.compile(r"\+?\(?\d(?:[ ().\-/]{0,2}\d)+")
_PHONE_DIGITS = 9
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# A lone surrogate (JSON's "\ud83d" without its pair) cannot be encoded, so no artifact or event
# holding one could be sent; in a str every paired character is one code point, never these.
_SURROGATE = re.compile("[\ud800-\udfff]")
_MD_PUNCTUATION = set("\\`*_{}[]()#+-.!|~:=$^\"'")
_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


def redact_contacts(text: str) -> str:
    """Defence in depth: ATS free text (stage names, reasons) sometimes carries an email or phone.
    Also replaces lone surrogates, which no JSON or markdown sent to Prefect may hold."""
    text = _EMAIL.sub("[email redacted]", _SURROGATE.sub("\ufffd", text))
    return _PHONE.sub(
        lambda m: "[phone redacted]" if sum(c.isdigit() for c in m[0]) >= _PHONE_DIGITS else m[0],
        text,
    )


def escape_md(value: Any, *, limit: int = MAX_TEXT, redact: bool = True) -> str:
    """Render an ATS value as inert markdown text on one line, safe inside a table cell.
    `redact=False` only for identifiers, where a long digit run is not a phone number."""
    if value is None:
        return "-"
    text = redact_contacts(str(value)) if redact else _SURROGATE.sub("\ufffd", str(value))
    text = _CONTROL.sub("", text.replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    text = text.replace("\t", " ").strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    if not text:
        return "-"
    out = []
    for char in text:
        if char in _HTML:
            out.append(_HTML[char])
        elif char in _MD_PUNCTUATION:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def stage_label(event: Any, side: str) -> str | None:
    """A change's stage on `side` ("from" or "to"): its name, else its id, marked when the ATS
    says the stage is inactive (an application can sit in a stage no longer in use)."""
    label = event.get(f"{side}_stage_name") or event.get(f"{side}_stage_id")
    status = event.get(f"{side}_stage_status")
    if label is not None and isinstance(status, str) and status.upper() == "INACTIVE":
        return f"{label} (inactive)"
    return label


def slug(integration_id: str) -> str:
    """`greenhouse:AbC` -> `greenhouse-abc-1a2b3c4d`: valid in an artifact key, and the hash of the
    exact id keeps ids that differ only by case or punctuation apart."""
    readable = re.sub(r"[^a-z0-9]+", "-", integration_id.lower()).strip("-")[:48].strip("-")
    digest = hashlib.sha256(integration_id.encode()).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest


def artifact_key(integration_id: str) -> str:
    return f"stage-changes-{slug(integration_id)}"


def events_table_key(integration_id: str) -> str:
    return f"stage-events-{slug(integration_id)}"
