"""FastAPI dependencies that read what ``ApiRoute`` prepared."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.clock import Clock
from postroom.context import AppContext
from postroom.errors import Unauthenticated
from postroom.http.principal import Principal


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def get_session(request: Request) -> AsyncSession:
    session: AsyncSession = request.state.session
    return session


def get_principal(request: Request) -> Principal:
    principal: Principal | None = request.state.principal
    if principal is None:
        raise Unauthenticated("this route needs an API key")
    return principal


def get_workspace_id(request: Request) -> uuid.UUID:
    return get_principal(request).require_workspace()


def get_clock(request: Request) -> Clock:
    return get_ctx(request).clock


Ctx = Annotated[AppContext, Depends(get_ctx)]
Session = Annotated[AsyncSession, Depends(get_session)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
WorkspaceId = Annotated[uuid.UUID, Depends(get_workspace_id)]
