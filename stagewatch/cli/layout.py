"""Tables that keep each row on one line at the terminal's width (80 columns when piped).

A command offers its columns as layouts, richest first: full ids and every column, then shorter
ids and timestamps, then without secondary columns. The first layout whose rows fit is printed;
if none does, the last one, whose flexible column (free text) gives way: its long cells end in an
ellipsis rather than wrap, and the other columns keep their width.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from stagewatch.report import short_id


@dataclass(frozen=True)
class Col:
    header: str
    cell: Callable[[Mapping[str, Any]], str]
    justify: str = "left"
    flexible: bool = False


Layout = Sequence[Col]

# Rich's default table: one space of padding either side of a cell, a border between cells.
_PER_COLUMN = 3


def natural_widths(layout: Layout, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    return [max([len(col.header), *(len(col.cell(row)) for row in rows)]) for col in layout]


def width_of(layout: Layout, rows: Sequence[Mapping[str, Any]]) -> int:
    """The characters a row of `layout` needs, borders included."""
    return _table_width(layout, natural_widths(layout, rows))


def _table_width(layout: Layout, widths: Sequence[int]) -> int:
    return sum(widths) + _PER_COLUMN * len(layout) + 1


def choose(layouts: Sequence[Layout], rows: Sequence[Mapping[str, Any]], width: int) -> Layout:
    for layout in layouts:
        if width_of(layout, rows) <= width:
            return layout
    return layouts[-1]


def print_table(
    console: Console,
    layouts: Sequence[Layout],
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str | None = None,
    caption: str | None = None,
) -> None:
    layout = choose(layouts, rows, console.width)
    table = Table(title=title, caption=caption)
    # Rich shrinks no column that may not wrap: the flexible ones are given their share of what
    # is left (never less than their header), else the table runs past the terminal's edge.
    widths = natural_widths(layout, rows)
    excess = _table_width(layout, widths) - console.width
    flexible = sum(col.flexible for col in layout)
    for col, natural in zip(layout, widths, strict=True):
        fit = natural
        if col.flexible and excess > 0:
            fit = max(len(col.header), natural - -(-excess // flexible))
        table.add_column(
            col.header,
            justify=col.justify,
            no_wrap=True,
            overflow="ellipsis",
            min_width=None if col.flexible else natural,
            max_width=fit,
        )
    for row in rows:
        table.add_row(*(col.cell(row) for col in layout))
    console.print(table)


def ts(timestamp: str | None) -> str:
    """`2026-01-05T09:00:00.000Z` as `2026-01-05 09:00:00`: tables say UTC in their headers."""
    return timestamp[:19].replace("T", " ") if timestamp else ""


def ts_minutes(timestamp: str | None) -> str:
    return ts(timestamp)[:16]


def short(value: Any, keep: int = 4) -> str:
    """An id cut to its tool and first characters (`greenhouse:HWUT…`, `1NU4dnYr…`)."""
    if value is None:
        return ""
    text = str(value)
    if ":" in text:
        return short_id(text, keep=keep)
    return text if len(text) <= keep + 1 else text[:keep] + "…"
