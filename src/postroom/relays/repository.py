"""Relay queries, scoped to one workspace."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.models.relays import Relay


class RelayRepository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    def _scoped(self) -> Select[Relay]:
        return select(Relay).where(Relay.workspace_id == self.workspace_id)

    async def get(self, relay_id: uuid.UUID) -> Relay | None:
        query = self._scoped().where(Relay.id == relay_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_name(self, name: str) -> Relay | None:
        query = self._scoped().where(Relay.name == name)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def page(self, after: uuid.UUID | None, limit: int) -> list[Relay]:
        query = self._scoped().order_by(Relay.id).limit(limit + 1)
        if after is not None:
            query = query.where(Relay.id > after)
        return list((await self.session.execute(query)).scalars())

    async def add(self, row: Relay) -> None:
        self.session.add(row)
        await self.session.flush()

    async def delete(self, row: Relay) -> None:
        await self.session.delete(row)
        await self.session.flush()
