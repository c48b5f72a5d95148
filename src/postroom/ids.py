"""Time-ordered identifiers (UUIDv7, RFC 9562).

Python 3.11 has no ``uuid.uuid7``; the layout is small enough to write here: 48 bits of
Unix milliseconds, the version and variant bits, and 74 random bits. Ids created in the
same millisecond are not strictly ordered among themselves, which nothing relies on.
"""

from __future__ import annotations

import os
import time
import uuid


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7; ``now_ms`` overrides the timestamp (tests, backfills)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b
    return uuid.UUID(int=value)


def parse_id(value: str) -> uuid.UUID | None:
    """Parse an id from a URL or body; ``None`` when it is not a UUID at all."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
