"""VERP envelope senders: compact, signed, and parsed back case-insensitively."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.delivery.verp import (
    InvalidDeliveryId,
    parse_verp,
    verp_address,
    verp_local_part,
)

KEY = b"current-verp-key-32-bytes-long!!"
OLD_KEY = b"previous-verp-key"
DELIVERY = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def test_local_part_shape() -> None:
    local = verp_local_part(DELIVERY, KEY)
    assert re.fullmatch(r"b-[a-z2-7]{26}-[a-z2-7]{10}", local)
    assert len(local) <= 64
    assert verp_local_part(DELIVERY, KEY) == local  # deterministic
    assert verp_local_part(DELIVERY, OLD_KEY) != local


def test_round_trip_returns_the_canonical_uuid() -> None:
    local = verp_local_part(DELIVERY.upper().replace("-", ""), KEY)
    assert local == verp_local_part(DELIVERY, KEY)
    assert parse_verp(local, [KEY]) == DELIVERY


def test_address_forms_parse() -> None:
    address = verp_address(DELIVERY, KEY, "bounces.example.com")
    assert address.endswith("@bounces.example.com")
    assert parse_verp(address, [KEY]) == DELIVERY
    assert parse_verp(f"<{address}>", [KEY]) == DELIVERY
    # Some MTAs upper- or lower-case the local part on the way back.
    assert parse_verp(address.upper(), [KEY]) == DELIVERY


def test_old_keys_still_verify_after_rotation() -> None:
    local = verp_local_part(DELIVERY, OLD_KEY)
    assert parse_verp(local, [KEY]) is None
    assert parse_verp(local, [KEY, OLD_KEY]) == DELIVERY


def test_forgeries_and_noise_are_rejected() -> None:
    local = verp_local_part(DELIVERY, KEY)
    other = verp_local_part(str(uuid.UUID(int=1)), KEY)
    # Someone else's id with our MAC, or a changed MAC character.
    assert parse_verp(other[:28] + local[28:], [KEY]) is None
    flipped = local[:-1] + ("a" if local[-1] != "a" else "b")
    assert parse_verp(flipped, [KEY]) is None
    for noise in ("", "postmaster", "b--", "b-" + "a" * 26, local + "x", "c" + local[1:]):
        assert parse_verp(noise, [KEY]) is None
    assert parse_verp(local, []) is None


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidDeliveryId):
        verp_local_part("not-a-uuid", KEY)
    with pytest.raises(ValueError, match="key"):
        verp_local_part(DELIVERY, b"")
    with pytest.raises(ValueError, match="domain"):
        verp_address(DELIVERY, KEY, "bad domain")


@settings(max_examples=50, deadline=None)
@given(st.uuids(), st.binary(min_size=1, max_size=64))
def test_any_uuid_round_trips(delivery: uuid.UUID, key: bytes) -> None:
    local = verp_local_part(str(delivery), key)
    assert len(local) <= 64
    assert parse_verp(local.upper(), [key]) == str(delivery)
