"""Kombo-looking ids (24 base58 characters) that encode a row number reversibly.

A million applications cannot afford a million id strings plus a reverse dict, so an id is derived
from `(key, row)` when rendered and decoded back to the row when a request names it. The first 11
characters are an invertible scramble of the row, the last 13 a keyed check value, so ids look
random, differ per integration and model, and a made-up id decodes to nothing.
"""

from __future__ import annotations

import random

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
ID_LENGTH = 24
_HEAD = 11  # 58**11 > 2**64: the scrambled row fits
_TAIL = ID_LENGTH - _HEAD
_TAIL_RANGE = 58**_TAIL
_MASK = (1 << 64) - 1
_MUL = 0x9E3779B97F4A7C15  # odd, so multiplication mod 2**64 is invertible
_MUL_INVERSE = pow(_MUL, -1, 1 << 64)
_MUL_TAIL = 0xD6E8FEB86659FD93
_DIGIT = {c: i for i, c in enumerate(ALPHABET)}


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # two digits per divmod: ids are a hot path


def _encode(value: int, width: int) -> str:
    """`width` base58 digits of `value`, most significant first (zero-padded with '1')."""
    pairs = []
    for _ in range(width // 2):
        value, pair = divmod(value, 3364)
        pairs.append(_PAIRS[pair])
    text = "".join(reversed(pairs))
    return ALPHABET[value % 58] + text if width % 2 else text


def _decode(text: str) -> int | None:
    value = 0
    for c in text:
        digit = _DIGIT.get(c)
        if digit is None:
            return None
        value = value * 58 + digit
    return value


def random_id(rng: random.Random) -> str:
    """A free-form id for the few objects that are not rows (integrations, environments)."""
    return "".join(rng.choice(ALPHABET) for _ in range(ID_LENGTH))


class IdCodec:
    """Ids of one model in one integration: `encode(row)` and its inverse `decode(id)`."""

    __slots__ = ("_key", "_tail_key")

    def __init__(self, rng: random.Random) -> None:
        self._key = rng.getrandbits(64)
        self._tail_key = rng.getrandbits(64)

    def encode(self, row: int) -> str:
        head = ((row ^ self._key) * _MUL) & _MASK
        mixed = ((head ^ self._tail_key) * _MUL_TAIL) & _MASK
        mixed ^= mixed >> 29
        tail = (mixed * _MUL) & _MASK
        return _encode(head, _HEAD) + _encode(((mixed << 64) | tail) % _TAIL_RANGE, _TAIL)

    def decode(self, text: str) -> int | None:
        """The row an id stands for, or None when the id is not one this codec issued."""
        if len(text) != ID_LENGTH:
            return None
        head = _decode(text[:_HEAD])
        if head is None or head > _MASK:
            return None
        row = ((head * _MUL_INVERSE) & _MASK) ^ self._key
        return row if self.encode(row) == text else None
