"""Tokenized Reply-To addresses: ``r-<delivery id>-<mac>@reply domain``.

The same shape as the VERP return path (``postroom.delivery.verp``: 16 id bytes in
base32, a 50-bit HMAC), under a key derived for this purpose only, so a VERP address is
never accepted as a reply address nor the other way round. A reply then names the delivery
it answers without trusting anything the replier wrote.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from postroom.config import Settings
from postroom.delivery.verp import parse_verp, verp_local_part
from postroom.security.tokens import derive_key

_REPLY_SHAPE = re.compile(r"r-[a-z2-7]{26}-[a-z2-7]{10}\Z")


def reply_keys(settings: Settings) -> list[bytes]:
    """Current key first (signing), then old ones (still accepted)."""
    return [derive_key(key, "reply") for key in settings.signing_keys]


def reply_address(delivery_id: str, key: bytes, reply_domain: str) -> str:
    return f"r-{verp_local_part(delivery_id, key)[2:]}@{reply_domain}"


def read_reply_address(address: str, keys: Sequence[bytes]) -> tuple[uuid.UUID | None, bool]:
    """``(delivery id, forged)``: the id when a key signs it; ``forged`` when the address
    has the reply shape but no key signs it."""
    text = address.strip().strip("<>")
    local = (text.rpartition("@")[0] or text).lower()
    if not _REPLY_SHAPE.match(local):
        return None, False
    found = parse_verp("b-" + local[2:], keys)
    if found is None:
        return None, True
    return uuid.UUID(found), False


def reply_tokens_enabled(settings: Settings) -> bool:
    """Tokenized Reply-To only when this instance receives the replies: an inbound port
    or an explicitly configured reply domain (otherwise replies would go nowhere)."""
    return settings.inbound_port is not None or bool(settings.reply_domain)
