"""Routes: /v1/campaigns (broadcast campaigns: edit, test, schedule, send, pause, resume,
cancel, progress). Analytics adds ``…/stats`` and ``…/links`` in its own module."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from postroom.campaigns.previews import audience_view, send_tests
from postroom.campaigns.schemas import (
    AudienceOut,
    CampaignAccepted,
    CampaignCreate,
    CampaignOut,
    CampaignUpdate,
    ContentOut,
    DeliveryOut,
    Progress,
    ScheduleIn,
    SendCalendar,
    TestSendIn,
    TestSendOut,
)
from postroom.campaigns.service import CampaignService
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_id
from postroom.http.routing import ApiRoute
from postroom.messages.schemas import Mailbox
from postroom.models.campaigns import CAMPAIGN_STATUSES, Campaign
from postroom.models.delivery import DELIVERY_STATUSES

router = APIRouter(route_class=ApiRoute, tags=["campaigns"])
register_path_id("campaign_id", Campaign, "campaign")

Paging = Annotated[PageParams, Depends(page_params)]
CampaignStatus = Literal[
    "draft", "scheduled", "sending", "waiting", "paused", "sent", "cancelled", "failed"
]
DeliveryStatus = Literal[
    "queued",
    "sending",
    "sent",
    "deferred",
    "uncertain",
    "failed",
    "bounced",
    "cancelled",
    "skipped",
]
assert set(CampaignStatus.__args__) == set(CAMPAIGN_STATUSES)  # type: ignore[attr-defined]
assert set(DeliveryStatus.__args__) == set(DELIVERY_STATUSES)  # type: ignore[attr-defined]


class Requeued(BaseModel):
    requeued: int


def _service(session: Session, workspace_id: WorkspaceId, ctx: Ctx) -> CampaignService:
    return CampaignService(session, workspace_id, ctx.clock.now())


Service = Annotated[CampaignService, Depends(_service)]


def _content(content: dict[str, object]) -> ContentOut:
    inline = content.get("inline")
    if isinstance(inline, dict):
        return ContentOut(**{k: inline.get(k) for k in ("subject", "html", "text", "preheader")})
    return ContentOut(
        template_id=content.get("template_id"),
        version_id=content.get("version_id"),
    )


async def campaign_out(
    service: CampaignService, row: Campaign, *, progress: bool = True
) -> CampaignOut:
    view = await service.progress(row) if progress else None
    return CampaignOut(
        id=row.id,
        name=row.name,
        status=row.status,
        content=_content(row.content),
        subject=row.subject,
        from_=Mailbox(email=row.from_email, name=row.from_name or None),
        reply_to=row.reply_to,
        audience=row.audience,
        track_opens=row.track_opens,
        track_clicks=row.track_clicks,
        timezone=row.timezone,
        tags=list(row.tags),
        send_calendar=SendCalendar.model_validate(row.calendar) if row.calendar else None,
        scheduled_at=row.scheduled_at,
        send_id=row.send_id,
        fanout_job_id=row.fanout_job_id,
        recipients=row.recipients,
        failure_reason=row.failure_reason,
        started_at=row.started_at,
        finished_at=row.finished_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        progress=Progress(
            **{k: v for k, v in view.counts.items() if k in Progress.model_fields},
            total=view.total,
            rate_per_second=round(view.rate, 3),
            eta_seconds=round(view.eta_seconds, 1) if view.eta_seconds is not None else None,
        )
        if view is not None
        else None,
    )


@router.post("/v1/campaigns", status_code=201, **requires("campaigns:write"))
async def create_campaign(body: CampaignCreate, service: Service) -> CampaignOut:
    """A new draft. `from.email` must be on a sending domain of the workspace (422
    otherwise); `content` is a template, a pinned published version or inline content."""
    return await campaign_out(service, await service.create(body))


@router.get("/v1/campaigns", **requires("campaigns:read"))
async def list_campaigns(
    service: Service,
    paging: Paging,
    status: Annotated[CampaignStatus | None, Query()] = None,
) -> Page[CampaignOut]:
    rows, cursor = page_of(await service.page(paging.after_id, paging.limit, status), paging.limit)
    return Page(
        data=[await campaign_out(service, row, progress=False) for row in rows],
        next_cursor=cursor,
    )


@router.get("/v1/campaigns/{campaign_id}", **requires("campaigns:read"))
async def get_campaign(campaign_id: uuid.UUID, service: Service) -> CampaignOut:
    """The campaign with, once sending started, its progress: deliveries per status (one
    GROUP BY on the ledger), the send rate of the last minute and an ETA."""
    return await campaign_out(service, await service.get(campaign_id))


@router.patch("/v1/campaigns/{campaign_id}", **requires("campaigns:write"))
async def update_campaign(
    campaign_id: uuid.UUID, body: CampaignUpdate, service: Service
) -> CampaignOut:
    """Edit a `draft` or `scheduled` campaign (409 otherwise)."""
    return await campaign_out(service, await service.update(campaign_id, body))


@router.delete("/v1/campaigns/{campaign_id}", status_code=204, **requires("campaigns:write"))
async def delete_campaign(campaign_id: uuid.UUID, service: Service) -> Response:
    """Delete a `draft`, `cancelled`, `sent` or `failed` campaign (409 otherwise). Its
    deliveries stay in the ledger (contact history)."""
    await service.delete(campaign_id)
    return Response(status_code=204)


@router.post(
    "/v1/campaigns/{campaign_id}/duplicate", status_code=201, **requires("campaigns:write")
)
async def duplicate_campaign(campaign_id: uuid.UUID, service: Service) -> CampaignOut:
    """A new draft with the same content, sender, audience and settings."""
    return await campaign_out(service, await service.duplicate(campaign_id))


@router.get("/v1/campaigns/{campaign_id}/audience", **requires("campaigns:read"))
async def campaign_audience(campaign_id: uuid.UUID, service: Service) -> AudienceOut:
    """Audience size now and locale coverage: contacts per locale and the template
    locale each will receive (`uncovered`: contacts falling back to the default)."""
    view = await audience_view(service, campaign_id)
    return AudienceOut(
        size=view.size, locales=view.locales, coverage=view.coverage, uncovered=view.uncovered
    )


@router.post("/v1/campaigns/{campaign_id}/test", status_code=202, **requires("campaigns:write"))
async def test_campaign(campaign_id: uuid.UUID, body: TestSendIn, service: Service) -> TestSendOut:
    """Send to 1–5 addresses, subject prefixed `[Test] `, rendered for `contact_id` or with
    `data`; sends of kind `test`, never counted in the campaign's stats."""
    send_ids = await send_tests(service, campaign_id, body)
    return TestSendOut(send_ids=send_ids, emails=body.emails)


@router.post("/v1/campaigns/{campaign_id}/schedule", **requires("campaigns:write"))
async def schedule_campaign(
    campaign_id: uuid.UUID, body: ScheduleIn, service: Service
) -> CampaignOut:
    """Schedule a `draft` (or reschedule a `scheduled`) campaign at a future instant."""
    return await campaign_out(service, await service.schedule(campaign_id, body))


@router.post("/v1/campaigns/{campaign_id}/unschedule", **requires("campaigns:write"))
async def unschedule_campaign(campaign_id: uuid.UUID, service: Service) -> CampaignOut:
    return await campaign_out(service, await service.unschedule(campaign_id))


@router.post("/v1/campaigns/{campaign_id}/send", status_code=202, **requires("campaigns:write"))
async def send_campaign(campaign_id: uuid.UUID, service: Service) -> CampaignAccepted:
    """Start sending now: freezes content, lists and tracking into the campaign's send
    and queues the fan-out job (`fanout_job_id`, pollable at `/v1/jobs/{id}`)."""
    row = await service.send_now(campaign_id)
    out = await campaign_out(service, row)
    return CampaignAccepted.model_validate(out.model_dump())


@router.post("/v1/campaigns/{campaign_id}/pause", **requires("campaigns:write"))
async def pause_campaign(campaign_id: uuid.UUID, service: Service) -> CampaignOut:
    return await campaign_out(service, await service.pause(campaign_id))


@router.post("/v1/campaigns/{campaign_id}/resume", **requires("campaigns:write"))
async def resume_campaign(campaign_id: uuid.UUID, service: Service) -> CampaignOut:
    """Back to `sending`, or `waiting` when outside the send calendar."""
    return await campaign_out(service, await service.resume(campaign_id))


@router.post("/v1/campaigns/{campaign_id}/cancel", **requires("campaigns:write"))
async def cancel_campaign(campaign_id: uuid.UUID, service: Service) -> CampaignOut:
    """Queued and deferred deliveries become `cancelled`; workers stop within a second."""
    return await campaign_out(service, await service.cancel(campaign_id))


@router.post("/v1/campaigns/{campaign_id}/retry-failed", **requires("campaigns:write"))
async def retry_failed(campaign_id: uuid.UUID, service: Service) -> Requeued:
    """Requeue the campaign's failed and deferred deliveries, due now."""
    return Requeued(requeued=await service.retry_failed(campaign_id))


@router.get("/v1/campaigns/{campaign_id}/deliveries", **requires("campaigns:read"))
async def campaign_deliveries(
    campaign_id: uuid.UUID,
    service: Service,
    paging: Paging,
    status: Annotated[DeliveryStatus | None, Query()] = None,
) -> Page[DeliveryOut]:
    rows, cursor = page_of(
        await service.deliveries(campaign_id, status, paging.after_id, paging.limit),
        paging.limit,
    )
    return Page(
        data=[
            DeliveryOut(
                id=d.id,
                contact_id=d.contact_id,
                email=d.email,
                status=d.status,
                attempts=d.attempts,
                next_attempt_at=d.next_attempt_at
                if d.status in ("queued", "deferred", "uncertain")
                else None,
                message_id=d.message_id,
                smtp_response=d.smtp_response,
                sent_at=d.sent_at,
                created_at=d.created_at,
                updated_at=d.updated_at,
            )
            for d in rows
        ],
        next_cursor=cursor,
    )
