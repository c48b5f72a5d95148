"""Workspace and API key queries."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.models.workspaces import ApiKey, Workspace


class WorkspaceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_id(self, workspace_id: uuid.UUID) -> Workspace | None:
        return await self.session.get(Workspace, workspace_id)

    async def by_name(self, name: str) -> Workspace | None:
        query = select(Workspace).where(Workspace.name == name)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def page(self, after: uuid.UUID | None, limit: int) -> list[Workspace]:
        query = select(Workspace).order_by(Workspace.id).limit(limit + 1)
        if after is not None:
            query = query.where(Workspace.id > after)
        return list((await self.session.execute(query)).scalars())

    async def add(self, workspace: Workspace) -> None:
        self.session.add(workspace)
        await self.session.flush()

    async def delete(self, workspace: Workspace) -> None:
        await self.session.delete(workspace)
        await self.session.flush()


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, key: ApiKey) -> None:
        self.session.add(key)
        await self.session.flush()

    async def in_workspace(self, workspace_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
        query = select(ApiKey).where(ApiKey.id == key_id, ApiKey.workspace_id == workspace_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_id(self, key_id: uuid.UUID) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id)

    async def page(
        self,
        workspace_id: uuid.UUID | None,
        after: uuid.UUID | None,
        limit: int,
        *,
        admin: bool = False,
    ) -> list[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.id).limit(limit + 1)
        if admin:
            query = query.where(ApiKey.kind == "admin")
        elif workspace_id is not None:
            query = query.where(ApiKey.workspace_id == workspace_id)
        if after is not None:
            query = query.where(ApiKey.id > after)
        return list((await self.session.execute(query)).scalars())

    async def revoke(self, key: ApiKey, now: datetime) -> None:
        if key.revoked_at is None:
            key.revoked_at = now
        await self.session.flush()
