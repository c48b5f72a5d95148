"""Routes: /v1/inbound (inbound mail that could not be used, kept for inspection)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from postroom.errors import NotFound
from postroom.feedback import repository as repo
from postroom.feedback.repository import InboundRepository
from postroom.feedback.schemas import InboundDetail, InboundOut
from postroom.http.access import requires
from postroom.http.deps import Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_id
from postroom.http.routing import ApiRoute
from postroom.models.feedback import InboundMessage

router = APIRouter(route_class=ApiRoute, tags=["inbound"])
register_path_id("inbound_id", InboundMessage, "inbound message")

Paging = Annotated[PageParams, Depends(page_params)]


@router.get("/v1/inbound", **requires("inbound:read"))
async def list_inbound(
    session: Session,
    workspace_id: WorkspaceId,
    paging: Paging,
    kind: Annotated[Literal["unclassified", "error"] | None, Query()] = None,
) -> Page[InboundOut]:
    """Inbound mail about this workspace's deliveries that could not be classified or
    handled, oldest first. Mail that names no delivery of ours belongs to no workspace and
    is listed only by `postroom inbound-list`."""
    rows = await InboundRepository(session, workspace_id).page(paging.after_id, paging.limit, kind)
    items, cursor = page_of(rows, paging.limit)
    return Page(data=[InboundOut(**repo.summary(row)) for row in items], next_cursor=cursor)


@router.get("/v1/inbound/{inbound_id}", **requires("inbound:read"))
async def get_inbound(
    inbound_id: uuid.UUID, session: Session, workspace_id: WorkspaceId
) -> InboundDetail:
    row = await InboundRepository(session, workspace_id).get(inbound_id)
    if row is None:
        raise NotFound("inbound message", inbound_id)
    return InboundDetail(**repo.summary(row), raw=row.raw.decode("utf-8", errors="replace"))


@router.delete("/v1/inbound/{inbound_id}", status_code=204, **requires("inbound:write"))
async def delete_inbound(
    inbound_id: uuid.UUID, session: Session, workspace_id: WorkspaceId
) -> Response:
    if not await InboundRepository(session, workspace_id).delete(inbound_id):
        raise NotFound("inbound message", inbound_id)
    return Response(status_code=204)
