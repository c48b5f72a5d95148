"""Routes: /v1/workspaces (admin keys) and /v1/api-keys (the caller's workspace)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from postroom.http.access import admin_only, requires
from postroom.http.deps import Ctx, CurrentPrincipal, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_id
from postroom.http.routing import ApiRoute
from postroom.models.workspaces import ApiKey, Workspace
from postroom.workspaces.repository import ApiKeyRepository
from postroom.workspaces.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    WorkspaceCreate,
    WorkspaceCreated,
    WorkspaceOut,
    WorkspaceUpdate,
)
from postroom.workspaces.service import IssuedKey, WorkspaceService

router = APIRouter(route_class=ApiRoute, tags=["workspaces"])
register_path_id("workspace_id", Workspace)
register_path_id("key_id", ApiKey, "api key")

Paging = Annotated[PageParams, Depends(page_params)]


def _created(issued: IssuedKey) -> ApiKeyCreated:
    out = ApiKeyOut.model_validate(issued.record)
    return ApiKeyCreated(**out.model_dump(), key=issued.plaintext)


@router.post("/v1/workspaces", status_code=201, **admin_only())
async def create_workspace(body: WorkspaceCreate, session: Session, ctx: Ctx) -> WorkspaceCreated:
    """Create a workspace; the response holds its first full-scope key (shown once)."""
    workspace, issued = await WorkspaceService(session).create(body.name, ctx.clock.now())
    out = WorkspaceOut.model_validate(workspace)
    return WorkspaceCreated(**out.model_dump(), api_key=_created(issued))


@router.get("/v1/workspaces", **admin_only())
async def list_workspaces(session: Session, paging: Paging) -> Page[WorkspaceOut]:
    service = WorkspaceService(session)
    rows = await service.workspaces.page(paging.after_id, paging.limit)
    page, cursor = page_of(rows, paging.limit)
    return Page(data=[WorkspaceOut.model_validate(r) for r in page], next_cursor=cursor)


@router.get("/v1/workspaces/{workspace_id}", **admin_only())
async def get_workspace(workspace_id: uuid.UUID, session: Session) -> WorkspaceOut:
    return WorkspaceOut.model_validate(await WorkspaceService(session).get(workspace_id))


@router.patch("/v1/workspaces/{workspace_id}", **admin_only())
async def update_workspace(
    workspace_id: uuid.UUID, body: WorkspaceUpdate, session: Session, ctx: Ctx
) -> WorkspaceOut:
    workspace = await WorkspaceService(session).rename(workspace_id, body.name, ctx.clock.now())
    return WorkspaceOut.model_validate(workspace)


@router.delete("/v1/workspaces/{workspace_id}", status_code=204, **admin_only())
async def delete_workspace(workspace_id: uuid.UUID, session: Session) -> Response:
    """Delete a workspace and everything in it."""
    await WorkspaceService(session).delete(workspace_id)
    return Response(status_code=204)


@router.get("/v1/api-keys", **requires("api_keys:read"))
async def list_api_keys(
    session: Session, workspace_id: WorkspaceId, paging: Paging
) -> Page[ApiKeyOut]:
    rows = await ApiKeyRepository(session).page(workspace_id, paging.after_id, paging.limit)
    page, cursor = page_of(rows, paging.limit)
    return Page(data=[ApiKeyOut.model_validate(r) for r in page], next_cursor=cursor)


@router.post("/v1/api-keys", status_code=201, **requires("api_keys:write"))
async def create_api_key(
    body: ApiKeyCreate, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ApiKeyCreated:
    issued = await WorkspaceService(session).issue_key(
        workspace_id, kind=body.kind, name=body.name, scopes=body.scopes, now=ctx.clock.now()
    )
    return _created(issued)


@router.get("/v1/api-keys/{key_id}", **requires("api_keys:read"))
async def get_api_key(key_id: uuid.UUID, session: Session, workspace_id: WorkspaceId) -> ApiKeyOut:
    key = await ApiKeyRepository(session).in_workspace(workspace_id, key_id)
    assert key is not None  # the path id was resolved in this workspace
    return ApiKeyOut.model_validate(key)


@router.delete("/v1/api-keys/{key_id}", **requires("api_keys:write"))
async def revoke_api_key(
    key_id: uuid.UUID, session: Session, principal: CurrentPrincipal, ctx: Ctx
) -> ApiKeyOut:
    """Revoke a key: it stops working at once. The record stays for the audit trail."""
    key = await WorkspaceService(session).revoke_key(
        key_id, ctx.clock.now(), workspace_id=principal.require_workspace()
    )
    return ApiKeyOut.model_validate(key)
