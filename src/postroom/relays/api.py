"""Routes: /v1/relays (a workspace's own SMTP relays). Passwords are write-only."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_id
from postroom.http.routing import ApiRoute
from postroom.models.relays import Relay
from postroom.relays.schemas import RelayCreate, RelayOut, RelayPatch
from postroom.relays.service import RelayDefaults, RelayService, stored_config

router = APIRouter(route_class=ApiRoute, tags=["relays"])
register_path_id("relay_id", Relay, "relay")

Paging = Annotated[PageParams, Depends(page_params)]


def relay_service(session: AsyncSession, workspace_id: uuid.UUID, ctx: AppContext) -> RelayService:
    defaults = RelayDefaults(
        max_connections=ctx.settings.smtp_max_connections,
        max_messages_per_connection=ctx.settings.smtp_messages_per_connection,
    )
    return RelayService(session, workspace_id, ctx.clock.now(), ctx.secret_box, defaults)


def relay_out(row: Relay) -> RelayOut:
    config = stored_config(row)
    return RelayOut(
        id=row.id,
        name=row.name,
        url=row.url,
        host=config.host,
        port=config.port,
        tls=config.tls,
        username=config.username,
        has_password=row.password is not None,
        weight=row.weight,
        max_connections=row.max_connections,
        max_messages_per_connection=row.max_messages_per_connection,
        enabled=row.enabled,
        per_second=row.per_second,
        per_hour=row.per_hour,
        per_day=row.per_day,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.post("/v1/relays", status_code=201, **requires("relays:write"))
async def create_relay(
    body: RelayCreate, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> RelayOut:
    """Add an SMTP relay. The workspace's mail then goes through its enabled relays
    (weighted) instead of the instance's default relay. 409 when the name is taken."""
    service = relay_service(session, workspace_id, ctx)
    return relay_out(await service.create(body.model_dump()))


@router.get("/v1/relays", **requires("relays:read"))
async def list_relays(
    session: Session, workspace_id: WorkspaceId, paging: Paging, ctx: Ctx
) -> Page[RelayOut]:
    service = relay_service(session, workspace_id, ctx)
    rows, cursor = page_of(await service.relays.page(paging.after_id, paging.limit), paging.limit)
    return Page(data=[relay_out(row) for row in rows], next_cursor=cursor)


@router.get("/v1/relays/{relay_id}", **requires("relays:read"))
async def get_relay(
    relay_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> RelayOut:
    return relay_out(await relay_service(session, workspace_id, ctx).get(relay_id))


@router.patch("/v1/relays/{relay_id}", **requires("relays:write"))
async def update_relay(
    relay_id: uuid.UUID, body: RelayPatch, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> RelayOut:
    """Change the fields given. Workers pick changes up within a few seconds; a changed
    URL, password or connection limit opens a new connection pool."""
    changes = body.model_dump(include=body.model_fields_set)
    return relay_out(await relay_service(session, workspace_id, ctx).update(relay_id, changes))


@router.delete("/v1/relays/{relay_id}", status_code=204, **requires("relays:write"))
async def delete_relay(
    relay_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    """Remove a relay; mail queued for the workspace goes through its other relays (or
    the instance's default relay when none is left)."""
    await relay_service(session, workspace_id, ctx).delete(relay_id)
    return Response(status_code=204)
