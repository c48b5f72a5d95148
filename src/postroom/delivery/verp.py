"""VERP return paths: each delivery gets its own signed envelope sender.

A bounce then names the delivery it is about without parsing the bounce text:
``b-<delivery id>-<mac>@bounces.example.com``. The id is the UUID's 16 bytes in
lower-case base32 and the MAC is an HMAC-SHA256 truncated to 10 base32 characters
(50 bits), so nobody can forge a bounce for someone else's delivery. Base32 has one
case only, which matters because some MTAs lower-case local parts on the way back.
Verification accepts old keys, so bounces for mail sent before a key rotation still
count.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Sequence

from postroom.errors import PostroomError

_PREFIX = "b-"
_MAC_CHARS = 10
_MAC_CONTEXT = b"postroom-verp:"
_LOCAL_PART = re.compile(r"b-([a-z2-7]{26})-([a-z2-7]{10})\Z")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")


class InvalidDeliveryId(PostroomError, ValueError):
    code = "invalid_delivery_id"


def _uuid_bytes(delivery_id: str) -> bytes:
    try:
        return uuid.UUID(delivery_id).bytes
    except (ValueError, AttributeError, TypeError) as exc:
        raise InvalidDeliveryId(f"a delivery id is a UUID, not {delivery_id!r}") from exc


def _mac(key: bytes, raw_id: bytes) -> str:
    digest = hmac.digest(key, _MAC_CONTEXT + raw_id, hashlib.sha256)
    return base64.b32encode(digest[:7]).decode("ascii")[:_MAC_CHARS].lower()


def verp_local_part(delivery_id: str, key: bytes) -> str:
    """``b-<26 base32 chars of the UUID>-<10 base32 chars of MAC>``: 39 characters."""
    if not key:
        raise ValueError("a VERP key must not be empty")
    raw_id = _uuid_bytes(delivery_id)
    encoded_id = base64.b32encode(raw_id).decode("ascii").rstrip("=").lower()
    return f"{_PREFIX}{encoded_id}-{_mac(key, raw_id)}"


def verp_address(delivery_id: str, key: bytes, bounce_domain: str) -> str:
    """The envelope sender (SMTP MAIL FROM) for one delivery."""
    if not _DOMAIN.match(bounce_domain):
        raise ValueError(f"not a usable bounce domain: {bounce_domain!r}")
    return f"{verp_local_part(delivery_id, key)}@{bounce_domain}"


def parse_verp(local_part_or_address: str, keys: Sequence[bytes]) -> str | None:
    """The delivery id (canonical lower-case UUID) a VERP local part or address stands
    for, or ``None`` when it is not one of ours or its MAC fails under every key."""
    local = local_part_or_address.strip().strip("<>").rpartition("@")
    match = _LOCAL_PART.match((local[0] if local[1] else local[2]).lower())
    if match is None:
        return None
    raw_id = base64.b32decode(match.group(1).upper() + "======")
    mac = match.group(2)
    for key in keys:
        if key and hmac.compare_digest(_mac(key, raw_id), mac):
            return str(uuid.UUID(bytes=raw_id))
    return None
