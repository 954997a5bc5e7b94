"""The candidate behind each application row: generated from the seed, or given by a client.

A million candidates cannot afford a million stored names, so a generated candidate is a hash of
`(seed, integration, row)` plus a rename count; only created or renamed-by-hand ones are stored.
"""

from __future__ import annotations

from array import array

from stagewatch.simulator import catalog
from stagewatch.simulator.records import CANDIDATE_REMOTE_BASE

# (first name, last name, e-mail, phone)
Given = tuple[str, str, str, str | None]


class Candidates:
    """Candidates of one integration, by application row."""

    def __init__(self, seed: int, integration_number: int, count: int) -> None:
        self._salt = (seed * 0x2545F491 + integration_number) * 0x9E3779B1
        self.renames = array("B", bytes(count))  # generated candidates: last-name changes so far
        self.given: dict[int, Given] = {}  # created through the API, or renamed by name
        self.changed: dict[int, int] = {}  # row -> the candidate's changed_at, once renamed

    def _hash(self, row: int) -> int:
        return ((row + self._salt) * 0xBF58476D1CE4E5B9) >> 13 & 0xFFFFFFFFFFFF

    def name(self, row: int) -> tuple[str, str]:
        given = self.given.get(row)
        if given is not None:
            return given[0], given[1]
        h = self._hash(row)
        first = catalog.FIRST_NAMES[h % len(catalog.FIRST_NAMES)]
        last = catalog.LAST_NAMES[((h >> 16) + 7 * self.renames[row]) % len(catalog.LAST_NAMES)]
        return first, last

    def contact(self, row: int) -> tuple[str, str | None]:
        """(e-mail, phone): present so the product can prove it drops contact data."""
        given = self.given.get(row)
        if given is not None:
            return given[2], given[3]
        h = self._hash(row)
        first = catalog.FIRST_NAMES[h % len(catalog.FIRST_NAMES)]
        last = catalog.LAST_NAMES[(h >> 16) % len(catalog.LAST_NAMES)]
        local = f"{first}.{last}".translate(catalog.ASCII_FOLD).lower()
        email = f"{local}.{CANDIDATE_REMOTE_BASE + row}@example.com"
        phone = f"+49 30 {(h >> 32) % 10_000_000:07d}"
        return email, phone

    def add(self, row: int, given: Given) -> None:
        """The candidate of a new row (the next one)."""
        self.renames.append(0)
        self.given[row] = given

    def rename(self, row: int, t: int, first: str | None, last: str | None) -> None:
        """A new name; without one, a generated candidate's last name moves on and a given
        candidate marries (a double-barrelled last name)."""
        if first is None and last is None and row not in self.given:
            self.renames[row] = min(self.renames[row] + 1, 255)
        else:
            current_first, current_last = self.name(row)
            if first is None and last is None:
                last = f"{current_last}-{catalog.LAST_NAMES[t % len(catalog.LAST_NAMES)]}"
            email, phone = self.contact(row)
            self.given[row] = (first or current_first, last or current_last, email, phone)
        self.changed[row] = t
