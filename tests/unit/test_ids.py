"""UUIDv7 ids: version, variant, time order, strict order within a process."""

from __future__ import annotations

import time
import uuid

from postroom.ids import parse_id, uuid7


def test_layout() -> None:
    value = uuid7()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    ms = value.int >> 80
    assert abs(ms - time.time() * 1000) < 5000


def test_strictly_increasing_within_a_process() -> None:
    ids = [uuid7() for _ in range(20_000)]  # many share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_explicit_time_and_parse() -> None:
    assert uuid7(now_ms=1_700_000_000_000).int >> 80 == 1_700_000_000_000
    assert parse_id("not an id") is None
    assert parse_id(str(uuid7())) is not None
