"""Workspace and key rules. Keys are generated here, returned once, stored hashed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from postroom.errors import Conflict, NotFound, ValidationFailed
from postroom.ids import uuid7
from postroom.models.workspaces import ApiKey, Workspace
from postroom.security.api_keys import (
    ALL_SCOPES,
    PUBLIC_KEY_SCOPES,
    display_prefix,
    hash_key,
    invalid_scopes,
    new_key,
)
from postroom.workspaces.repository import ApiKeyRepository, WorkspaceRepository

DEFAULT_WORKSPACE = "default"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: ApiKey
    plaintext: str


class WorkspaceService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.workspaces = WorkspaceRepository(session)
        self.keys = ApiKeyRepository(session)

    async def create(self, name: str, now: datetime) -> tuple[Workspace, IssuedKey]:
        if await self.workspaces.by_name(name) is not None:
            raise Conflict(f"a workspace named '{name}' already exists")
        workspace = Workspace(id=uuid7(), name=name, created_at=now, updated_at=now)
        await self.workspaces.add(workspace)
        from postroom.contacts.lists_service import ListService

        await ListService(self.session, workspace.id, now).ensure_default()
        key = await self.issue_key(
            workspace.id, kind="secret", name="initial", scopes=None, now=now
        )
        return workspace, key

    async def rename(self, workspace_id: uuid.UUID, name: str, now: datetime) -> Workspace:
        workspace = await self.get(workspace_id)
        other = await self.workspaces.by_name(name)
        if other is not None and other.id != workspace.id:
            raise Conflict(f"a workspace named '{name}' already exists")
        workspace.name = name
        workspace.updated_at = now
        await self.session.flush()
        return workspace

    async def get(self, workspace_id: uuid.UUID) -> Workspace:
        workspace = await self.workspaces.by_id(workspace_id)
        if workspace is None:
            raise NotFound("workspace", workspace_id)
        return workspace

    async def by_name(self, name: str) -> Workspace:
        workspace = await self.workspaces.by_name(name)
        if workspace is None:
            raise NotFound("workspace", name)
        return workspace

    async def delete(self, workspace_id: uuid.UUID) -> None:
        await self.workspaces.delete(await self.get(workspace_id))

    async def issue_key(
        self,
        workspace_id: uuid.UUID | None,
        *,
        kind: str,
        name: str,
        scopes: list[str] | None,
        now: datetime,
    ) -> IssuedKey:
        if kind == "admin":
            granted: list[str] = []
        elif kind == "public":
            if scopes and set(scopes) - set(PUBLIC_KEY_SCOPES):
                raise ValidationFailed.single("scopes", "public keys can only hold events:write")
            granted = list(PUBLIC_KEY_SCOPES)
        else:
            bad = invalid_scopes(scopes or [])
            if bad:
                raise ValidationFailed.single("scopes", f"unknown scopes: {', '.join(bad)}")
            granted = sorted(set(scopes)) if scopes is not None else list(ALL_SCOPES)
        plaintext = new_key(kind)
        record = ApiKey(
            id=uuid7(),
            workspace_id=workspace_id,
            kind=kind,
            name=name,
            prefix=display_prefix(plaintext),
            key_hash=hash_key(plaintext),
            scopes=granted,
            created_at=now,
        )
        await self.keys.add(record)
        return IssuedKey(record=record, plaintext=plaintext)

    async def revoke_key(
        self, key_id: uuid.UUID, now: datetime, *, workspace_id: uuid.UUID | None
    ) -> ApiKey:
        key = (
            await self.keys.in_workspace(workspace_id, key_id)
            if workspace_id is not None
            else await self.keys.by_id(key_id)
        )
        if key is None:
            raise NotFound("api key", key_id)
        await self.keys.revoke(key, now)
        return key
