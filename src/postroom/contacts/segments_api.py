"""Routes: /v1/segments and /v1/audiences/preview."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from postroom.contacts.audience import Audience
from postroom.contacts.audience_service import AudienceService, Preview
from postroom.contacts.schemas import ContactOut
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_id
from postroom.http.routing import ApiRoute
from postroom.models.contacts import Segment

router = APIRouter(route_class=ApiRoute, tags=["segments"])
register_path_id("segment_id", Segment, "segment")
Paging = Annotated[PageParams, Depends(page_params)]


class SegmentWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    filter: dict[str, Any] = Field(description="A FilterCondition (Mailglyph/Plunk shape)")


class SegmentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    filter: dict[str, Any] | None = None


class SegmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    description: str | None
    filter: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class PreviewOut(BaseModel):
    count: int
    sample: list[ContactOut]
    locales: dict[str, int] = Field(description="Audience size per contact locale")


class AudiencePreview(BaseModel):
    model_config = ConfigDict(extra="forbid")
    audience: Audience
    purpose: Literal["marketing", "transactional"] = "marketing"


def _preview(result: Preview) -> PreviewOut:
    return PreviewOut(
        count=result.count,
        sample=[ContactOut.model_validate(c) for c in result.sample],
        locales=result.locales,
    )


@router.post("/v1/segments", status_code=201, **requires("segments:write"))
async def create_segment(
    body: SegmentWrite, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> SegmentOut:
    service = AudienceService(session, workspace_id, ctx.clock.now())
    return SegmentOut.model_validate(
        await service.create_segment(body.name, body.description, body.filter)
    )


@router.get("/v1/segments", **requires("segments:read"))
async def list_segments(
    session: Session, workspace_id: WorkspaceId, paging: Paging, ctx: Ctx
) -> Page[SegmentOut]:
    service = AudienceService(session, workspace_id, ctx.clock.now())
    rows, cursor = page_of(await service.page_segments(paging.after_id, paging.limit), paging.limit)
    return Page(data=[SegmentOut.model_validate(r) for r in rows], next_cursor=cursor)


@router.get("/v1/segments/{segment_id}", **requires("segments:read"))
async def get_segment(
    segment_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> SegmentOut:
    service = AudienceService(session, workspace_id, ctx.clock.now())
    return SegmentOut.model_validate(await service.get_segment(segment_id))


@router.patch("/v1/segments/{segment_id}", **requires("segments:write"))
async def update_segment(
    segment_id: uuid.UUID, body: SegmentPatch, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> SegmentOut:
    service = AudienceService(session, workspace_id, ctx.clock.now())
    changes = body.model_dump(exclude_unset=True)
    return SegmentOut.model_validate(await service.update_segment(segment_id, changes))


@router.delete("/v1/segments/{segment_id}", status_code=204, **requires("segments:write"))
async def delete_segment(
    segment_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    await AudienceService(session, workspace_id, ctx.clock.now()).delete_segment(segment_id)
    return Response(status_code=204)


@router.get("/v1/segments/{segment_id}/preview", **requires("segments:read"))
async def preview_segment(
    segment_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> PreviewOut:
    """How many mailable contacts the segment holds now, and a sample of them."""
    service = AudienceService(session, workspace_id, ctx.clock.now())
    return _preview(await service.preview(Audience(segment_id=segment_id)))


@router.post("/v1/audiences/preview", **requires("segments:read"))
async def preview_audience(
    body: AudiencePreview, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> PreviewOut:
    """Size, sample and locale coverage of an audience (lists, segment, filter,
    exclusions), never counting suppressed, unsubscribed, bounced or complained contacts."""
    service = AudienceService(session, workspace_id, ctx.clock.now())
    return _preview(await service.preview(body.audience, body.purpose))
