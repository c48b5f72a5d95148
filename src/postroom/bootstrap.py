"""First start: a ``default`` workspace, an admin key and a full-scope key, printed once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from postroom.context import AppContext
from postroom.models.workspaces import Workspace
from postroom.workspaces.service import DEFAULT_WORKSPACE, WorkspaceService


@dataclass(frozen=True, slots=True)
class FirstStartKeys:
    admin_key: str
    workspace_key: str


async def bootstrap_if_empty(ctx: AppContext) -> FirstStartKeys | None:
    async with ctx.db.transaction() as session:
        count = (await session.execute(select(func.count()).select_from(Workspace))).scalar_one()
        if count:
            return None
        service = WorkspaceService(session)
        now = ctx.clock.now()
        _workspace, workspace_key = await service.create(DEFAULT_WORKSPACE, now)
        admin = await service.issue_key(
            None, kind="admin", name="first start", scopes=None, now=now
        )
        return FirstStartKeys(admin_key=admin.plaintext, workspace_key=workspace_key.plaintext)
