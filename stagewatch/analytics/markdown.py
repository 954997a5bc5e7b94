"""The pipeline report as markdown for a Prefect artifact, with charts the Prefect UI shows.

Prefect's UI renders `![..](data:image/svg+xml;base64,..)` images and unicode text but strips inline
`<svg>` (checked in Chromium, docs/screenshots/pipeline-report.png): each job gets an SVG bar chart
as a data URI, and its table a unicode bar, which also reads in the raw markdown.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

from stagewatch.analytics.report import PipelineReport
from stagewatch.report.text import escape_md, redact_contacts
from stagewatch.timeutil import format_ts, parse_ts

MAX_JOBS = 20
MAX_ROWS = 50
BAR_CELLS = 20
_EIGHTHS = " ▏▎▍▌▋▊▉"
CHART_WIDTH, LABEL_WIDTH, ROW_HEIGHT = 640, 180, 24
REACHED_COLOUR, CURRENT_COLOUR = "#93c5fd", "#1d4ed8"


def unicode_bar(value: int, top: int, cells: int = BAR_CELLS) -> str:
    """`value` of `top` as full blocks and one eighth-block, at most `cells` wide."""
    if top <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / top * cells * 8))
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def _when(ts: str | None) -> str:
    return ts[:16].replace("T", " ") if ts else "-"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def svg_chart(rows: list[Mapping[str, Any]]) -> str:
    """Horizontal bars per stage: reached (light), in it now (dark), with the counts."""
    top = max((r["reached"] for r in rows), default=0) or 1
    span = CHART_WIDTH - LABEL_WIDTH - 60
    parts = []
    for i, row in enumerate(rows):
        y = 8 + i * ROW_HEIGHT
        name = redact_contacts(str(row["stage_name"] or row["stage_id"] or "(none)"))[:28]
        reached = round(row["reached"] / top * span)
        current = round(row["currently_in"] / top * span)
        now = f" ({row['currently_in']} now)" if row["currently_in"] else ""
        parts.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 15}" text-anchor="end">{html.escape(name)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{reached}" height="16" '
            f'fill="{REACHED_COLOUR}"/><rect x="{LABEL_WIDTH}" y="{y + 3}" width="{current}" '
            f'height="16" fill="{CURRENT_COLOUR}"/>'
            f'<text x="{LABEL_WIDTH + reached + 6}" y="{y + 15}">{row["reached"]}{now}</text>'
        )
    height = 16 + len(rows) * ROW_HEIGHT
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="12" fill="#111827">'
        f'<rect width="100%" height="100%" fill="#ffffff"/>{"".join(parts)}</svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _job_section(rows: list[dict[str, Any]]) -> list[str]:
    first = rows[0]
    title = escape_md(first["job_name"] or first["job_id"])
    top = max(r["reached"] for r in rows)
    out = [
        f"### {title} ({escape_md(first['job_id'], redact=False)})",
        "",
        f"![Funnel of {title}: applications that reached each stage, and in it now]"
        f"({svg_chart(rows)})",
        "",
        "Light bars: applications that reached the stage; dark: in it now.",
        "",
        "| # | stage | reached | | in now | moved on | conversion | median d | p90 d | back | note |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        conversion = "-" if r["conversion"] is None else f"{r['conversion']:.0%}"
        out.append(
            f"| {r['stage_order']} | {escape_md(r['stage_name'] or r['stage_id'])} | {r['reached']} "
            f"| {unicode_bar(r['reached'], top) or '-'} | {r['currently_in']} | "
            f"{r['reached_later']} | {conversion} | {_num(r['median_days'])} | "
            f"{_num(r['p90_days'])} | {r['backward_out']} | {escape_md(r['order_note'])} |"
        )
    out += [
        "",
        f"Hired {first['job_hired']} · declined {first['job_declined']} · median days to hire "
        f"{_num(first['job_median_days_to_hire'])}",
        "",
    ]
    return out


def _funnel_section(report: PipelineReport) -> list[str]:
    jobs: dict[str, list[dict[str, Any]]] = {}
    for row in report.funnel:
        jobs.setdefault(row["job_id"], []).append(row)
    busy = sorted(
        jobs.values(), key=lambda rows: (-sum(r["reached"] for r in rows), rows[0]["job_id"])
    )
    busy = [rows for rows in busy if any(r["reached"] for r in rows)]
    out = ["## Funnel per job", ""]
    if not busy:
        return [*out, "No application has entered a stage yet.", ""]
    for rows in busy[:MAX_JOBS]:
        out += _job_section(rows)
    if len(busy) > MAX_JOBS:
        out += [f"…and {len(busy) - MAX_JOBS} more jobs (`stagewatch funnel`).", ""]
    return out


def _moves_section(report: PipelineReport, job_names: Mapping[str, str]) -> list[str]:
    out = ["## Movements this week", ""]
    if not report.moves:
        return [*out, "No stage moves this week.", ""]
    out += ["| job | from | to | direction | moves |", "| --- | --- | --- | --- | ---: |"]
    for m in report.moves[:MAX_ROWS]:
        flag = "**backward**" if m["direction"] == "backward" else m["direction"]
        out.append(
            f"| {escape_md(job_names.get(m['job_id']) or m['job_id'])} | "
            f"{escape_md(m['from_stage_name'] or m['from_stage_id'])} | "
            f"{escape_md(m['to_stage_name'] or m['to_stage_id'])} | {flag} | {m['moves']} |"
        )
    if len(report.moves) > MAX_ROWS:
        out.append(f"\n…and {len(report.moves) - MAX_ROWS} more kinds of move.")
    return [*out, ""]


def _who(app_id: str, names: Mapping[str, str] | None) -> str:
    shown = escape_md(app_id, redact=False)
    if names and names.get(app_id):
        return f"{escape_md(names[app_id])} ({shown})"
    return shown


def _stuck_section(report, job_names, names) -> list[str]:
    out = [f"## Stuck: in their current stage over {_num(report.stuck_days, 0)} days", ""]
    if not report.stuck:
        return [*out, "No application is stuck.", ""]
    out += [
        "| application | job | stage | entered | days | ± h |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    for s in report.stuck[:MAX_ROWS]:
        out.append(
            f"| {_who(s['application_id'], names)} | "
            f"{escape_md(job_names.get(s['job_id']) or s['job_id'])} | "
            f"{escape_md(s['stage_name'] or s['stage_id'])} | {_when(s['entered_at'])} | "
            f"{_num(s['days_in_stage'])} | {_num(s['uncertainty_hours'], 0)} |"
        )
    if len(report.stuck) > MAX_ROWS:
        out.append(f"\n…and {len(report.stuck) - MAX_ROWS} more (`stagewatch stuck`).")
    return [*out, ""]


def _hires_section(report, job_names, names) -> list[str]:
    out = ["## Hires this week", ""]
    if not report.hires:
        return [*out, "No hires this week.", ""]
    out += [
        "| application | job | stage | hired (seen) | days to hire |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for h in report.hires[:MAX_ROWS]:
        days = (parse_ts(h["hired_at"]) - parse_ts(h["first_entered_at"])).total_seconds() / 86400
        out.append(
            f"| {_who(h['application_id'], names)} | "
            f"{escape_md(job_names.get(h['job_id']) or h['job_id'])} | "
            f"{escape_md(h['stage_name'] or h['stage_id'])} | {_when(h['hired_at'])} | "
            f"{_num(days)} |"
        )
    return [*out, ""]


def pipeline_markdown(
    report: PipelineReport,
    *,
    job_names: Mapping[str, str] | None = None,
    candidate_names: Mapping[str, str] | None = None,
) -> str:
    """The artifact's text. Candidate names appear only when passed (off by default)."""
    job_names = job_names or {}
    head = [
        "# Pipeline",
        "",
        f"Integration {escape_md(report.integration_id, redact=False)}. As of {_when(format_ts(report.as_of))} UTC; the week since {_when(format_ts(report.since))}. "
        "Times are observations: a move happened between the run that saw it and the run before, "
        "so days carry ± hours (README, Stage analytics).",
        "",
    ]
    body = (
        _funnel_section(report)
        + _moves_section(report, job_names)
        + _stuck_section(report, job_names, candidate_names)
        + _hires_section(report, job_names, candidate_names)
    )
    return "\n".join(head + body).rstrip() + "\n"
