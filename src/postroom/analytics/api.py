"""Routes: campaign stats and links, a contact's engagement, a workspace summary.

``campaign_id`` and ``contact_id`` are registered path ids (campaigns, contacts), so an id
of another workspace is a 404 before anything runs.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from postroom.analytics.schemas import (
    CampaignStats,
    ContactEngagement,
    LinkClicker,
    LinkStats,
    WorkspaceSummary,
)
from postroom.analytics.service import AnalyticsService
from postroom.errors import ValidationFailed
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, decode_cursor, decode_int_cursor, page_params
from postroom.http.routing import ApiRoute

router = APIRouter(route_class=ApiRoute, tags=["analytics"])

Paging = Annotated[PageParams, Depends(page_params)]


@router.get("/v1/campaigns/{campaign_id}/stats", **requires("analytics:read"))
async def campaign_stats(
    campaign_id: uuid.UUID, session: Session, workspace_id: WorkspaceId
) -> CampaignStats:
    """Totals, unique opens and clicks, rates over delivered (sent minus later bounced),
    people vs machines, UTC hourly series and recipient domains, over the campaign's
    sends (test sends excluded). Counters trail the events by a few seconds."""
    return await AnalyticsService(session, workspace_id).campaign_stats(campaign_id)


@router.get("/v1/campaigns/{campaign_id}/links", **requires("analytics:read"))
async def campaign_links(
    campaign_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    paging: Paging,
    url: Annotated[str | None, Query(max_length=4096)] = None,
) -> Page[LinkStats] | Page[LinkClicker]:
    """Clicks per link; with ``?url=`` the recipients who clicked that link (paginated)."""
    service = AnalyticsService(session, workspace_id)
    if url is None:
        links = await service.campaign_links(campaign_id)
        return Page[LinkStats](data=links, next_cursor=None)
    after = None
    if paging.cursor is not None:
        try:
            after = uuid.UUID(decode_cursor(paging.cursor))
        except ValueError:
            raise ValidationFailed.single("cursor", "is not a cursor this API returned") from None
    clickers, next_cursor = await service.link_clickers(campaign_id, url, after, paging.limit)
    return Page[LinkClicker](data=clickers, next_cursor=next_cursor)


@router.get("/v1/contacts/{contact_id}/engagement", **requires("analytics:read"))
async def contact_engagement(
    contact_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, paging: Paging
) -> ContactEngagement:
    """The contact's ``email.*`` history (newest first, paginated) and a summary."""
    before = decode_int_cursor(paging.cursor)
    return await AnalyticsService(session, workspace_id).contact_engagement(
        contact_id, before, paging.limit
    )


@router.get("/v1/analytics/summary", **requires("analytics:read"))
async def workspace_summary(
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> WorkspaceSummary:
    """Totals per UTC day over ``from``..``to`` (inclusive; default the last 30 days)."""
    today = ctx.clock.now().date()
    return await AnalyticsService(session, workspace_id).workspace_summary(start, end, today)
