"""Contact queries. Every query is scoped to one workspace."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.segments.json_sql import like_escape
from postroom.models.contacts import Contact, Subscription
from postroom.models.platform import Event


class ContactRepository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    def _scoped(self) -> Select[Contact]:
        return select(Contact).where(Contact.workspace_id == self.workspace_id)

    async def get(self, contact_id: uuid.UUID) -> Contact | None:
        query = self._scoped().where(Contact.id == contact_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_email_key(self, email_key: str) -> Contact | None:
        query = self._scoped().where(Contact.email_key == email_key)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_external_id(self, external_id: str) -> Contact | None:
        query = self._scoped().where(Contact.external_id == external_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def ids_by_email_keys(self, keys: Sequence[str]) -> dict[str, uuid.UUID]:
        if not keys:
            return {}
        query = select(Contact.email_key, Contact.id).where(
            Contact.workspace_id == self.workspace_id, Contact.email_key.in_(list(keys))
        )
        return {row[0]: row[1] for row in (await self.session.execute(query)).all()}

    async def existing_ids(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not ids:
            return set()
        query = select(Contact.id).where(
            Contact.workspace_id == self.workspace_id, Contact.id.in_(list(ids))
        )
        return set((await self.session.execute(query)).scalars())

    async def page(
        self,
        *,
        after: uuid.UUID | None,
        limit: int,
        status: str | None = None,
        list_id: uuid.UUID | None = None,
        locale: str | None = None,
        updated_since: datetime | None = None,
        search: str | None = None,
    ) -> list[Contact]:
        query = self._scoped().order_by(Contact.id).limit(limit + 1)
        if after is not None:
            query = query.where(Contact.id > after)
        if status:
            query = query.where(Contact.status == status)
        if locale:
            query = query.where(Contact.locale == locale)
        if updated_since:
            query = query.where(Contact.updated_at >= updated_since)
        if list_id:
            query = query.where(
                exists().where(
                    Subscription.contact_id == Contact.id,
                    Subscription.list_id == list_id,
                    Subscription.status == "subscribed",
                )
            )
        if search:
            pattern = like_escape(search.lower()) + "%"
            query = query.where(
                or_(
                    Contact.email_key.like(pattern, escape="\\"),
                    func.lower(Contact.first_name).like(pattern, escape="\\"),
                    func.lower(Contact.last_name).like(pattern, escape="\\"),
                )
            )
        return list((await self.session.execute(query)).scalars())

    async def update_fields(self, contact_id: uuid.UUID, values: dict[str, Any]) -> None:
        await self.session.execute(
            update(Contact)
            .where(Contact.id == contact_id, Contact.workspace_id == self.workspace_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def delete_ids(self, ids: Sequence[uuid.UUID]) -> int:
        if not ids:
            return 0
        result = await self.session.execute(
            delete(Contact)
            .where(Contact.workspace_id == self.workspace_id, Contact.id.in_(list(ids)))
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_events_of(self, contact_id: uuid.UUID) -> int:
        result = await self.session.execute(
            delete(Event).where(
                Event.workspace_id == self.workspace_id, Event.contact_id == contact_id
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def events_of(
        self, contact_id: uuid.UUID, after_seq: int | None, limit: int
    ) -> list[Event]:
        query = (
            select(Event)
            .where(Event.workspace_id == self.workspace_id, Event.contact_id == contact_id)
            .order_by(Event.seq.desc())
            .limit(limit + 1)
        )
        if after_seq is not None:
            query = query.where(Event.seq < after_seq)
        return list((await self.session.execute(query)).scalars())
