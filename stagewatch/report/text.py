"""ATS text made safe to show: markdown escaping, contact redaction, short ids and artifact keys.

Everything that came from the ATS goes through `escape_md` before it reaches markdown. Contact data
is scrubbed only where it can be, in candidate fields (names, rejection reasons) and event free
text; ids, keys and error messages are never redacted, so a request id stays one.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

MAX_TEXT = 120

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Digits joined by one or two phone separators; nine or more digits make a phone number, which leaves
# dates (eight digits) and short ids alone. Digits glued to a letter or `_` belong to an id
# (`sim_0123456789`, `req123456789`), never to a phone number.
_PHONE = re.compile(r"(?<![\w])\+?\(?\d(?:[ ().\-/]{0,2}\d)+(?![\w])")
_URL = re.compile(r"https?://\S+")
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


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis, never inside a link: a link the cut
    would split goes whole (a log URL is worth its length) or, if it starts past the limit, not
    at all."""
    if len(text) <= limit:
        return text
    cut = limit - 1
    for link in _URL.finditer(text):
        if link.start() < cut < link.end():
            if link.end() == len(text):
                return text
            cut = link.end()
            break
    return text[:cut].rstrip() + "…"


def escape_md(value: Any, *, limit: int = MAX_TEXT, redact: bool = False) -> str:
    """Render an ATS value as inert markdown text on one line, safe inside a table cell.
    `redact=True` for candidate fields, the only ones that may carry contact data."""
    if value is None:
        return "-"
    text = redact_contacts(str(value)) if redact else _SURROGATE.sub("\ufffd", str(value))
    text = _CONTROL.sub("", text.replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    text = clip(text.replace("\t", " ").strip(), limit)
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


def short_id(value: Any, *, keep: int = 4) -> str:
    """`greenhouse:DBTuKq…` for `greenhouse:DBTuKqV8…` (tool and the first `keep` characters):
    enough to tell integrations and records apart at a glance where a full id does not fit."""
    text = "" if value is None else str(value)
    tool, sep, rest = text.rpartition(":")
    if len(rest) <= keep + 1:
        return text
    return f"{tool}{sep}{rest[:keep]}…"


def slug(integration_id: str) -> str:
    """`greenhouse:AbCdEf` -> `greenhouse-abcd-1a2b3c`: the tool, the id's first letters and a hash
    of the exact id (which keeps ids differing only by case apart), in segments short enough for
    the UI's artifact cards to wrap between them."""
    tool, _, rest = integration_id.lower().rpartition(":")
    parts = [re.sub(r"[^a-z0-9]+", "", tool)[:16], re.sub(r"[^a-z0-9]+", "", rest)[:4]]
    digest = hashlib.sha256(integration_id.encode()).hexdigest()[:6]
    return "-".join([*(part for part in parts if part), digest])


def artifact_key(integration_id: str) -> str:
    return f"stage-changes-{slug(integration_id)}"


def events_table_key(integration_id: str) -> str:
    return f"stage-rows-{slug(integration_id)}"
