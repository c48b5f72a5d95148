"""All SQL of the inbound side: kept messages, counters, GDPR erase."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.lists_repository import dialect_insert
from postroom.models.contacts import email_hash
from postroom.models.feedback import InboundCounter, InboundMessage, SoftBounce

_ADDRESS_LIMIT = 320
_MAX_RECIPIENTS = 50


async def keep(
    session: AsyncSession,
    *,
    kind: str,
    reason: str,
    mail_from: str,
    rcpt_tos: Sequence[str],
    data: bytes,
    keep_bytes: int,
    received_at: datetime,
    workspace_id: uuid.UUID | None = None,
    delivery_id: uuid.UUID | None = None,
    contact_id: uuid.UUID | None = None,
    sender: str | None = None,
    subject: str | None = None,
) -> uuid.UUID:
    """Store a message for inspection: envelope, reason and the first ``keep_bytes``."""
    row = InboundMessage(
        workspace_id=workspace_id,
        kind=kind,
        reason=reason[:2000],
        mail_from=mail_from[:_ADDRESS_LIMIT],
        rcpt_to=[r[:_ADDRESS_LIMIT] for r in rcpt_tos[:_MAX_RECIPIENTS]],
        subject=(subject or None) and subject[:255],
        delivery_id=delivery_id,
        contact_id=contact_id,
        sender_hash=email_hash(sender) if sender else None,
        size=len(data),
        truncated=len(data) > keep_bytes,
        raw=data[:keep_bytes],
        received_at=received_at,
    )
    session.add(row)
    await session.flush()
    return row.id


async def bump(session: AsyncSession, name: str, now: datetime, by: int = 1) -> None:
    """``inbound_counters[name] += by`` (one upsert)."""
    insert = dialect_insert(session)(InboundCounter).values(name=name, count=by, updated_at=now)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[InboundCounter.name],
            set_={"count": InboundCounter.count + by, "updated_at": now},
        )
    )


async def counters(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(InboundCounter.name, InboundCounter.count))
    return {name: int(count) for name, count in rows.all()}


class InboundRepository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    async def page(
        self, after: uuid.UUID | None, limit: int, kind: str | None = None
    ) -> list[InboundMessage]:
        query = (
            select(InboundMessage)
            .where(InboundMessage.workspace_id == self.workspace_id)
            .order_by(InboundMessage.id)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(InboundMessage.id > after)
        if kind:
            query = query.where(InboundMessage.kind == kind)
        return list((await self.session.execute(query)).scalars())

    async def get(self, inbound_id: uuid.UUID) -> InboundMessage | None:
        query = select(InboundMessage).where(
            InboundMessage.id == inbound_id, InboundMessage.workspace_id == self.workspace_id
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def delete(self, inbound_id: uuid.UUID) -> bool:
        result = await self.session.execute(
            delete(InboundMessage).where(
                InboundMessage.id == inbound_id, InboundMessage.workspace_id == self.workspace_id
            )
        )
        return bool(getattr(result, "rowcount", 0))


async def erase_contact(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, email_key: str
) -> None:
    """GDPR erase hook: the person's kept inbound mail (by contact, or by the sender's
    address hash) and their soft-bounce history go. Rows without a workspace (nothing in
    them named one of our deliveries) are matched by the address hash too."""
    hashed = email_hash(email_key)
    await session.execute(
        delete(InboundMessage)
        .where(
            or_(InboundMessage.workspace_id == workspace_id, InboundMessage.workspace_id.is_(None)),
            or_(InboundMessage.contact_id == contact_id, InboundMessage.sender_hash == hashed),
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(SoftBounce)
        .where(SoftBounce.workspace_id == workspace_id, SoftBounce.email_hash == hashed)
        .execution_options(synchronize_session=False)
    )


def summary(row: InboundMessage) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "reason": row.reason,
        "mail_from": row.mail_from,
        "rcpt_to": list(row.rcpt_to),
        "subject": row.subject,
        "delivery_id": row.delivery_id,
        "contact_id": row.contact_id,
        "size": row.size,
        "truncated": row.truncated,
        "received_at": row.received_at,
    }
