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


def test_batches_are_valid_strictly_increasing_and_interleave_with_uuid7() -> None:
    from postroom.ids import uuid7_batch, uuid7_hex_batch

    before = uuid7()
    batch = uuid7_batch(10_000)  # more than one millisecond's 4,096 counter values
    middle = uuid7()
    hex_batch = [uuid.UUID(h) for h in uuid7_hex_batch(3)]
    after = uuid7()
    ids = [before, *batch, middle, *hex_batch, after]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for value in ids:
        assert value.version == 7 and value.variant == uuid.RFC_4122
    assert abs((batch[0].int >> 80) - time.time() * 1000) < 5000
    assert all(len(h) == 32 and h == h.lower() for h in uuid7_hex_batch(5))


def test_batch_random_bits_differ() -> None:
    from postroom.ids import uuid7_batch

    low = {value.int & 0x3FFF_FFFF_FFFF_FFFF for value in uuid7_batch(1000)}
    assert len(low) == 1000
    assert uuid7_batch(0) == []
