"""Sending domain and DKIM key queries, scoped to one workspace."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.models.domains import DkimKey, SendingDomain


class DomainRepository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    def _scoped(self) -> Select[SendingDomain]:
        return select(SendingDomain).where(SendingDomain.workspace_id == self.workspace_id)

    async def get(self, domain_id: uuid.UUID) -> SendingDomain | None:
        query = self._scoped().where(SendingDomain.id == domain_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_name(self, domain: str) -> SendingDomain | None:
        query = self._scoped().where(SendingDomain.domain == domain)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def page(self, after: uuid.UUID | None, limit: int) -> list[SendingDomain]:
        query = self._scoped().order_by(SendingDomain.id).limit(limit + 1)
        if after is not None:
            query = query.where(SendingDomain.id > after)
        return list((await self.session.execute(query)).scalars())

    async def keys_of(self, domain_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[DkimKey]]:
        """Each domain's keys, oldest first (domain ids are already in this workspace)."""
        keys: dict[uuid.UUID, list[DkimKey]] = {domain_id: [] for domain_id in domain_ids}
        if not domain_ids:
            return keys
        query = select(DkimKey).where(DkimKey.domain_id.in_(list(domain_ids))).order_by(DkimKey.id)
        for key in (await self.session.execute(query)).scalars():
            keys[key.domain_id].append(key)
        return keys

    async def add(self, *rows: SendingDomain | DkimKey) -> None:
        # A domain before its keys: the keys reference it.
        for row in rows:
            self.session.add(row)
            await self.session.flush()

    async def delete(self, row: SendingDomain) -> None:
        await self.session.delete(row)
        await self.session.flush()
