"""Time-ordered identifiers (UUIDv7, RFC 9562).

Python 3.11 has no ``uuid.uuid7``; the layout is small enough to write here: 48 bits of
Unix milliseconds, the version and variant bits, a 12-bit sequence and 62 random bits.
Within one process ids are strictly increasing (RFC 9562 §6.2, method 1: the 12-bit field
counts up inside a millisecond, and a full counter borrows the next millisecond), so
ordering by id is ordering by creation; across processes they are ordered to the
millisecond.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_sequence = 0


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7; ``now_ms`` overrides the timestamp (tests, backfills)."""
    global _last_ms, _sequence
    rand = int.from_bytes(os.urandom(8), "big")
    if now_ms is None:
        with _lock:
            ms = int(time.time() * 1000)
            if ms <= _last_ms:
                ms = _last_ms
                _sequence += 1
                if _sequence > 0xFFF:
                    ms += 1
                    _sequence = 0
            else:
                _sequence = rand >> 52  # a random start leaves room to count up
                _sequence &= 0x7FF
            _last_ms = ms
            sequence = _sequence
    else:
        ms, sequence = now_ms, rand >> 52
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= (sequence & 0xFFF) << 64
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    return uuid.UUID(int=value)


def _reserve(count: int) -> list[tuple[int, int]]:
    """``count`` consecutive (millisecond, sequence) pairs under one lock, continuing the
    same counter ``uuid7`` uses, so mixed calls stay strictly increasing."""
    global _last_ms, _sequence
    with _lock:
        ms = int(time.time() * 1000)
        if ms > _last_ms:
            _last_ms = ms
            _sequence = (int.from_bytes(os.urandom(2), "big") >> 5) - 1  # 11 random bits
        ms, sequence = _last_ms, _sequence
        slots: list[tuple[int, int]] = []
        while len(slots) < count:
            # The rest of this millisecond's counter, then borrow the next millisecond.
            take = min(count - len(slots), 0xFFF - sequence)
            if take <= 0:
                ms, sequence = ms + 1, -1
                continue
            slots.extend((ms, s) for s in range(sequence + 1, sequence + 1 + take))
            sequence += take
        _last_ms, _sequence = ms, sequence
    return slots


def uuid7_ints(count: int) -> list[int]:
    """``count`` new UUIDv7 values as 128-bit ints, strictly increasing and after any id
    made before in this process: one ``urandom`` call and one lock for the whole batch
    (``uuid7`` costs ~15 µs an id, mostly the lock, ``urandom`` and ``uuid.UUID``)."""
    if count <= 0:
        return []
    random_bits = os.urandom(8 * count)
    from_bytes = int.from_bytes
    fixed = (0x7 << 76) | (0b10 << 62)
    return [
        ((ms & 0xFFFF_FFFF_FFFF) << 80)
        | fixed
        | (sequence << 64)
        | (from_bytes(random_bits[8 * i : 8 * i + 8], "big") & 0x3FFF_FFFF_FFFF_FFFF)
        for i, (ms, sequence) in enumerate(_reserve(count))
    ]


def uuid7_hex_batch(count: int) -> list[str]:
    """``count`` new ids as 32 lower-case hex digits (SQLAlchemy's ``Uuid`` storage form on
    SQLite; PostgreSQL's ``uuid`` input accepts it too)."""
    return [f"{value:032x}" for value in uuid7_ints(count)]


def uuid7_batch(count: int) -> list[uuid.UUID]:
    """``count`` new ``uuid.UUID`` ids, as ``uuid7_hex_batch``."""
    return [uuid.UUID(int=value) for value in uuid7_ints(count)]


def parse_id(value: str) -> uuid.UUID | None:
    """Parse an id from a URL or body; ``None`` when it is not a UUID at all."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
