"""Globally unique, time-ordered ids (ULID layout: 48-bit milliseconds + 80 random bits, base32)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id(prefix: str = "") -> str:
    """Unique across stores and processes without coordination; sorts by creation time."""
    n = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[n & 31])
        n >>= 5
    body = "".join(reversed(chars))
    return f"{prefix}-{body}" if prefix else body
