"""Kombo's webhook signature: HMAC-SHA256 of the raw body, keyed with the webhook secret, in
base64url without padding (`X-Kombo-Signature`)."""

from __future__ import annotations

import base64
import hashlib
import hmac

SIGNATURE_HEADER = "X-Kombo-Signature"


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, body: bytes) -> str:
    """The header value Kombo sends for `body`: 43 characters, no `=`."""
    digest = hmac.new(_key(secret), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` signs `body`, compared in constant time.

    The padded form (one trailing `=`) is accepted too: it encodes the same 256 bits, so it lets
    no other digest through. Anything else (standard base64 alphabet, hex, spaces, `==`) is not
    what Kombo sends and is refused rather than normalised.
    """
    if not header:
        return False
    presented = header.encode("utf-8", "surrogateescape")
    if presented.endswith(b"="):
        presented = presented[:-1]
    return hmac.compare_digest(presented, sign(secret, body).encode("ascii"))
