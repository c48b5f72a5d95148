"""Factories for the feedback tests: a contact on lists, a send and a delivery that went
out (status ``sent``, Message-ID stored), and small readers of the resulting state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from postroom.contacts.lists_repository import SubscriptionRepository
from postroom.contacts.lists_service import ListService
from postroom.contacts.service import ContactService
from postroom.context import AppContext
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.models.contacts import Contact, Subscription, Suppression, email_hash
from postroom.models.delivery import Delivery
from postroom.models.platform import Event


@dataclass
class Sent:
    workspace_id: uuid.UUID
    send_id: uuid.UUID
    delivery_id: uuid.UUID
    contact_id: uuid.UUID | None
    email: str
    message_id: str
    list_ids: list[uuid.UUID]


async def sent_delivery(
    ctx: AppContext,
    workspace_id: Any,
    *,
    email: str = "reader@example.com",
    lists: tuple[str, ...] = ("Weekly", "Product"),
    send_lists: int = 1,
    kind: str = "campaign",
    purpose: str = "marketing",
    reply_to: str | None = "owner@brand.example",
    with_contact: bool = True,
    status: str = "sent",
) -> Sent:
    """A contact subscribed to ``lists``, a send to the first ``send_lists`` of them, and
    its delivery, already sent."""
    ws = uuid.UUID(str(workspace_id))
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        contact_id: uuid.UUID | None = None
        list_ids: list[uuid.UUID] = []
        if with_contact:
            contacts = ContactService(session, ws, now)
            existing = await contacts.contacts.by_email_key(email.lower())
            contact = existing or (await contacts.upsert({"email": email})).contact
            contact_id = contact.id
            service = ListService(session, ws, now)
            for name in lists:
                found = await service.lists.by_name(name)
                item = found or await service.create(name, None, False)
                list_ids.append(item.id)
                await SubscriptionRepository(session, ws).subscribe(
                    item.id, [contact_id], status="subscribed", now=now, source="test"
                )
        send = await create_send(
            session,
            ws,
            SendSpec(
                kind=kind,
                purpose=purpose,
                content={"inline": {"subject": "Hello", "html": "<p>Hi</p>", "text": None}},
                from_email="news@brand.example",
                reply_to=reply_to,
                list_ids=[str(i) for i in list_ids[:send_lists]],
            ),
            now,
        )
        [delivery_id] = await enqueue(session, send, [Recipient(email, contact_id)], now)
        message_id = f"<{delivery_id}@brand.example>"
        await session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(status=status, message_id=message_id, sent_at=now, smtp_response="250 OK")
        )
    return Sent(ws, send.id, delivery_id, contact_id, email, message_id, list_ids)


async def delivery_row(ctx: AppContext, delivery_id: uuid.UUID) -> Delivery:
    async with ctx.db.transaction() as session:
        return (
            await session.execute(select(Delivery).where(Delivery.id == delivery_id))
        ).scalar_one()


async def contact_row(ctx: AppContext, contact_id: uuid.UUID) -> Contact:
    async with ctx.db.transaction() as session:
        return (await session.execute(select(Contact).where(Contact.id == contact_id))).scalar_one()


async def suppression_reasons(ctx: AppContext, workspace_id: uuid.UUID, email: str) -> set[str]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(
            select(Suppression.reason).where(
                Suppression.workspace_id == workspace_id,
                Suppression.email_hash == email_hash(email),
            )
        )
        return set(rows.scalars())


async def subscription_statuses(ctx: AppContext, contact_id: uuid.UUID) -> dict[uuid.UUID, str]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(
            select(Subscription.list_id, Subscription.status).where(
                Subscription.contact_id == contact_id
            )
        )
        return {list_id: status for list_id, status in rows.all()}  # noqa: C416


async def events(ctx: AppContext, kind: str, resource_id: uuid.UUID | None = None) -> list[Event]:
    async with ctx.db.transaction() as session:
        query = select(Event).where(Event.type == kind).order_by(Event.seq)
        if resource_id is not None:
            query = query.where(Event.resource_id == resource_id)
        return list((await session.execute(query)).scalars())
