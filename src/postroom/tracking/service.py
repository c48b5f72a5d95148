"""Unsubscribe and preference changes from signed links. Each change and its event are
written in one transaction (never buffered)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.lists_repository import (
    ListRepository,
    SubscriptionRepository,
    SuppressionRepository,
)
from postroom.contacts.repository import ContactRepository
from postroom.contacts.service import ContactService
from postroom.events.service import record
from postroom.models.contacts import Contact, ContactList
from postroom.models.delivery import Delivery, Send
from postroom.tracking.tokens import DeliveryRef


@dataclass(slots=True)
class Target:
    delivery: Delivery
    send: Send
    contact: Contact
    lists: list[ContactList]  # the send's lists that still exist


class LinkService:
    def __init__(self, session: AsyncSession, ref: DeliveryRef, now: datetime) -> None:
        self.session = session
        self.ref = ref
        self.now = now
        self.workspace_id = ref.workspace_id

    async def target(self) -> Target | None:
        """What the link is about, or ``None`` when the person or message is gone."""
        row = (
            await self.session.execute(
                select(Delivery, Send)
                .join(Send, Send.id == Delivery.send_id)
                .where(
                    Delivery.id == self.ref.delivery_id, Delivery.workspace_id == self.workspace_id
                )
            )
        ).first()
        if row is None or row[0].contact_id is None:
            return None
        delivery, send = row
        contact = await ContactRepository(self.session, self.workspace_id).get(delivery.contact_id)  # type: ignore[arg-type]
        if contact is None:
            return None
        lists: list[ContactList] = []
        repo = ListRepository(self.session, self.workspace_id)
        for list_id in send.list_ids:
            found = await repo.get(uuid.UUID(list_id))
            if found is not None:
                lists.append(found)
        return Target(delivery, send, contact, lists)

    async def unsubscribe(self, target: Target, *, method: str) -> None:
        """From the send's lists; from all marketing mail when the send had none.
        Idempotent: a second call changes nothing and records nothing."""
        if target.send.list_ids:
            subscriptions = SubscriptionRepository(self.session, self.workspace_id)
            changed: list[str] = []
            for item in target.lists:
                if await subscriptions.unsubscribe(item.id, [target.contact.id], self.now):
                    changed.append(str(item.id))
                    await self._event(
                        "contact.unsubscribed",
                        target,
                        {"scope": "list", "list_id": str(item.id), "method": method},
                    )
            if changed:
                await self._event(
                    "email.unsubscribed",
                    target,
                    {"scope": "lists", "list_ids": changed, "method": method},
                )
            return
        if target.contact.status != "subscribed":
            return
        before = {
            s.list_id
            for s in await SubscriptionRepository(self.session, self.workspace_id).of_contact(
                target.contact.id
            )
            if s.status == "subscribed"
        }
        await ContactService(self.session, self.workspace_id, self.now).unsubscribe_everything(
            target.contact, source=f"link:{method}"
        )
        await self._event(
            "email.unsubscribed",
            target,
            {"scope": "all", "list_ids": sorted(str(i) for i in before), "method": method},
        )

    async def resubscribe(self, target: Target) -> None:
        """Undo the unsubscribe this link made."""
        subscriptions = SubscriptionRepository(self.session, self.workspace_id)
        if target.send.list_ids:
            for item in target.lists:
                await subscriptions.subscribe(
                    item.id, [target.contact.id], status="subscribed", now=self.now, source="undo"
                )
            return
        await SuppressionRepository(self.session, self.workspace_id).remove(
            target.contact.email_hash, "unsubscribe"
        )
        if target.contact.status == "unsubscribed":
            await ContactRepository(self.session, self.workspace_id).update_fields(
                target.contact.id, {"status": "subscribed", "updated_at": self.now}
            )
        last = await self._last_unsubscribe(target)
        previous = (last or {}).get("list_ids")
        for list_id in previous if isinstance(previous, list) else []:
            await subscriptions.subscribe(
                uuid.UUID(list_id),
                [target.contact.id],
                status="subscribed",
                now=self.now,
                source="undo",
            )
        await self._event("contact.subscribed", target, {"scope": "all", "source": "undo"})

    async def preferences(self, target: Target) -> list[tuple[ContactList, bool]]:
        rows = await SubscriptionRepository(self.session, self.workspace_id).of_contact(
            target.contact.id
        )
        status = {s.list_id: s.status for s in rows}
        repo = ListRepository(self.session, self.workspace_id)
        lists = [await repo.get(list_id) for list_id in status]
        return sorted(
            ((item, status[item.id] == "subscribed") for item in lists if item is not None),
            key=lambda p: p[0].name,
        )

    async def save_preferences(self, target: Target, wanted: set[uuid.UUID]) -> None:
        subscriptions = SubscriptionRepository(self.session, self.workspace_id)
        for item, subscribed in await self.preferences(target):
            if item.id in wanted and not subscribed:
                await subscriptions.subscribe(
                    item.id,
                    [target.contact.id],
                    status="subscribed",
                    now=self.now,
                    source="preferences",
                )
                await self._event(
                    "contact.subscribed",
                    target,
                    {"scope": "list", "list_id": str(item.id), "source": "preferences"},
                )
            elif item.id not in wanted and subscribed:
                await subscriptions.unsubscribe(item.id, [target.contact.id], self.now)
                await self._event(
                    "contact.unsubscribed",
                    target,
                    {"scope": "list", "list_id": str(item.id), "method": "preferences"},
                )

    async def _event(self, kind: str, target: Target, data: dict[str, object]) -> None:
        await record(
            self.session,
            workspace_id=self.workspace_id,
            type=kind,
            occurred_at=self.now,
            contact_id=target.contact.id,
            resource_type="delivery",
            resource_id=target.delivery.id,
            data={"send_id": str(target.send.id), **data},
        )

    async def _last_unsubscribe(self, target: Target) -> dict[str, object] | None:
        from postroom.models.platform import Event

        row = (
            await self.session.execute(
                select(Event.data)
                .where(
                    Event.workspace_id == self.workspace_id,
                    Event.type == "email.unsubscribed",
                    Event.resource_id == target.delivery.id,
                )
                .order_by(Event.seq.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        return row
