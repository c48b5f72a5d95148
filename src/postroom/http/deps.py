"""FastAPI dependencies that read what ``ApiRoute`` prepared. They are ``async def`` on
purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a hop per request."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.clock import Clock
from postroom.context import AppContext
from postroom.errors import Unauthenticated
from postroom.http.principal import Principal


async def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def get_session(request: Request) -> AsyncSession:
    session: AsyncSession = request.state.session
    return session


async def get_principal(request: Request) -> Principal:
    principal: Principal | None = request.state.principal
    if principal is None:
        raise Unauthenticated("this route needs an API key")
    return principal


async def get_workspace_id(request: Request) -> uuid.UUID:
    return (await get_principal(request)).require_workspace()


async def get_clock(request: Request) -> Clock:
    return (await get_ctx(request)).clock


Ctx = Annotated[AppContext, Depends(get_ctx)]
Session = Annotated[AsyncSession, Depends(get_session)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
WorkspaceId = Annotated[uuid.UUID, Depends(get_workspace_id)]
