"""Rows ordered by their latest change, the order Kombo lists and paginates in.

Every change appends `(seq, row, time)`; the row's older entries go stale and are skipped, and
compacted away once they outnumber the live ones. Sequence numbers only grow, so a cursor that holds
the last sequence number served stays valid across changes and compactions: a row that changes
between two pages moves behind the cursor and is served again later, never lost.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence

NOT_LISTED = -1
_COMPACT_MIN_STALE = 4096


class ChangeLog:
    """Append-only change order over rows `0..n-1`, with times in epoch milliseconds."""

    def __init__(self, times_by_row: Sequence[int]) -> None:
        """Start with every row listed once, ordered by its last change (ties by row)."""
        n = len(times_by_row)
        if all(times_by_row[k] <= times_by_row[k + 1] for k in range(n - 1)):
            self.rows = array("q", range(n))
            self.times = array("q", times_by_row)
            self.pos = array("q", range(n))  # row -> its live sequence number, or NOT_LISTED
        else:
            order = sorted(range(n), key=times_by_row.__getitem__)
            self.rows = array("q", order)
            self.times = array("q", (times_by_row[row] for row in order))
            self.pos = array("q", bytes(8 * n))
            for seq, row in enumerate(order):
                self.pos[row] = seq
        self.seqs = array("q", range(n))
        self.next_seq = n
        self.live = n

    def touch(self, row: int, time_ms: int) -> None:
        """Record a change of `row` (a new row when `row == len(pos)`) at `time_ms`."""
        if self.times and time_ms < self.times[-1]:
            raise ValueError("changes must be recorded in time order")
        if row == len(self.pos):
            self.pos.append(NOT_LISTED)
        if self.pos[row] == NOT_LISTED:
            self.live += 1
        seq = self.next_seq
        self.next_seq += 1
        self.seqs.append(seq)
        self.rows.append(row)
        self.times.append(time_ms)
        self.pos[row] = seq
        stale = len(self.seqs) - self.live
        if stale > _COMPACT_MIN_STALE and stale > self.live:
            self._compact()

    def reserve(self, row: int) -> None:
        """Make room for a new row (`row == len(pos)`) that is not listed until touched."""
        if row != len(self.pos):
            raise ValueError(f"reserve the next row ({len(self.pos)}), not {row}")
        self.pos.append(NOT_LISTED)

    def remove(self, row: int) -> None:
        """Take a row out of every listing (a purged record)."""
        if self.pos[row] != NOT_LISTED:
            self.pos[row] = NOT_LISTED
            self.live -= 1

    def listed(self, row: int) -> bool:
        return 0 <= row < len(self.pos) and self.pos[row] != NOT_LISTED

    def seq_of(self, row: int) -> int:
        return self.pos[row]

    def time_of(self, row: int) -> int:
        """When the row last changed (its own fields or nested records)."""
        return self.times[bisect_left(self.seqs, self.pos[row])]

    def scan(self, after_seq: int, after_ms: int | None) -> Iterator[tuple[int, int]]:
        """Live `(seq, row)` in change order, past `after_seq` and changed after `after_ms`."""
        start = bisect_right(self.seqs, after_seq)
        if after_ms is not None:
            start = max(start, bisect_right(self.times, after_ms))
        seqs, rows, pos = self.seqs, self.rows, self.pos
        for k in range(start, len(seqs)):
            row = rows[k]
            if pos[row] == seqs[k]:
                yield seqs[k], row

    def _compact(self) -> None:
        keep = [k for k in range(len(self.seqs)) if self.pos[self.rows[k]] == self.seqs[k]]
        self.seqs = array("q", (self.seqs[k] for k in keep))
        self.rows = array("q", (self.rows[k] for k in keep))
        self.times = array("q", (self.times[k] for k in keep))
