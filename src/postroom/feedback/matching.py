"""Finding the delivery a piece of feedback is about.

Three handles, in order of trust:

1. the **VERP** return path (``b-<id>-<mac>@bounce domain``, ``postroom.delivery.verp``):
   signed, so a match is proof; a well-formed address whose MAC fails is *forged*
   (``VerpResult.forged``) and must be ignored;
2. the ``X-Postroom-Delivery`` header (the delivery id, which providers pass back even
   when they rewrite the Message-ID): not signed, but a UUIDv7 has 74 random bits, and
   callers reach it only from a signed webhook or a report about a message we sent;
3. the **Message-ID** (``deliveries.message_id``, indexed; stored with angle brackets).

``workspace_id`` narrows a lookup to one workspace when the caller knows it (a provider
webhook configured per workspace); ``None`` searches the whole instance (the inbound SMTP
receiver, which learns the workspace from the delivery).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.config import Settings
from postroom.delivery.verp import parse_verp
from postroom.models.delivery import Delivery
from postroom.security.tokens import derive_key

_MESSAGE_ID_LIMIT = 255
# The shape verp_local_part writes; an address of this shape that no key signs is forged.
_VERP_SHAPE = re.compile(r"b-[a-z2-7]{26}-[a-z2-7]{10}\Z")


def verp_keys(settings: Settings) -> list[bytes]:
    """The keys VERP addresses were signed with: the current one first, then old ones."""
    return [derive_key(key, "verp") for key in settings.signing_keys]


@dataclass(frozen=True, slots=True)
class VerpResult:
    """``delivery_id`` when the address is ours and its MAC holds; ``forged`` when it has
    our VERP shape (``b-…-…``) but no key signs it; neither when it is not VERP at all."""

    delivery_id: uuid.UUID | None
    forged: bool


def read_verp(address: str, keys: Sequence[bytes]) -> VerpResult:
    """Decode and check one address (``b-…@domain``, a bare local part, or ``<…>``)."""
    text = address.strip().strip("<>")
    local = text.rpartition("@")[0] or text
    found = parse_verp(local, keys)
    if found is not None:
        return VerpResult(uuid.UUID(found), False)
    return VerpResult(None, _VERP_SHAPE.match(local.lower()) is not None)


async def by_id(
    session: AsyncSession, delivery_id: uuid.UUID, workspace_id: uuid.UUID | None = None
) -> Delivery | None:
    query = select(Delivery).where(Delivery.id == delivery_id)
    if workspace_id is not None:
        query = query.where(Delivery.workspace_id == workspace_id)
    return (await session.execute(query)).scalar_one_or_none()


async def by_verp(
    session: AsyncSession,
    address: str,
    keys: Sequence[bytes],
    workspace_id: uuid.UUID | None = None,
) -> Delivery | None:
    """The delivery a VERP address stands for; ``None`` for anything else, forged included
    (use ``read_verp`` to tell forged apart)."""
    result = read_verp(address, keys)
    if result.delivery_id is None:
        return None
    return await by_id(session, result.delivery_id, workspace_id)


async def by_delivery_header(
    session: AsyncSession, value: str, workspace_id: uuid.UUID | None = None
) -> Delivery | None:
    """The delivery named by an ``X-Postroom-Delivery`` header value (a UUID)."""
    try:
        delivery_id = uuid.UUID(value.strip().strip("<>"))
    except (ValueError, AttributeError, TypeError):
        return None
    return await by_id(session, delivery_id, workspace_id)


def normalize_message_id(value: str) -> str | None:
    """``<left@right>`` from a Message-ID as providers echo it (with or without angle
    brackets, surrounding spaces or a trailing comment); ``None`` when it is not one."""
    text = value.strip()
    if not text:
        return None
    if text.startswith("<"):
        end = text.find(">")
        if end < 0:
            return None
        text = text[1:end]
    else:
        text = text.split()[0]
    text = text.strip()
    if "@" not in text or len(text) + 2 > _MESSAGE_ID_LIMIT or any(c in text for c in "<> "):
        return None
    return f"<{text}>"


async def by_message_id(
    session: AsyncSession, value: str, workspace_id: uuid.UUID | None = None
) -> Delivery | None:
    """The delivery whose Message-ID this is (the index on ``deliveries.message_id``). A
    Message-ID that several deliveries share (a caller-supplied one reused) matches none:
    guessing would put the effect on the wrong person."""
    message_id = normalize_message_id(value)
    if message_id is None:
        return None
    query = select(Delivery).where(Delivery.message_id == message_id).limit(2)
    if workspace_id is not None:
        query = query.where(Delivery.workspace_id == workspace_id)
    rows = list((await session.execute(query)).scalars())
    return rows[0] if len(rows) == 1 else None


async def find_delivery(
    session: AsyncSession,
    *,
    keys: Sequence[bytes] = (),
    verp: str | None = None,
    header: str | None = None,
    message_id: str | None = None,
    workspace_id: uuid.UUID | None = None,
) -> Delivery | None:
    """The first handle that matches, in order of trust: VERP, header, Message-ID."""
    if verp:
        found = await by_verp(session, verp, keys, workspace_id)
        if found is not None:
            return found
    if header:
        found = await by_delivery_header(session, header, workspace_id)
        if found is not None:
            return found
    if message_id:
        return await by_message_id(session, message_id, workspace_id)
    return None
