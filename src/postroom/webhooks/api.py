"""Routes: /v1/webhooks (outbound endpoints, their delivery log, test and replay)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_id
from postroom.http.routing import ApiRoute
from postroom.models.webhooks import WebhookDelivery, WebhookEndpoint
from postroom.webhooks.schemas import (
    DeliveryStatus,
    WebhookCreate,
    WebhookDeliveryOut,
    WebhookOut,
    WebhookUpdate,
    WebhookWithSecret,
)
from postroom.webhooks.sender import send_now
from postroom.webhooks.service import WebhookService

router = APIRouter(route_class=ApiRoute, tags=["webhooks"])
register_path_id("webhook_id", WebhookEndpoint, "webhook")
register_path_id("webhook_delivery_id", WebhookDelivery, "webhook delivery")

Paging = Annotated[PageParams, Depends(page_params)]
_ONE = "/v1/webhooks/{webhook_id}"
_DELIVERY = _ONE + "/deliveries/{webhook_delivery_id}"


def webhook_service(
    session: AsyncSession, workspace_id: uuid.UUID, ctx: AppContext
) -> WebhookService:
    return WebhookService(
        session,
        workspace_id,
        ctx.clock.now(),
        ctx.secret_box,
        allow_private=ctx.settings.webhooks_allow_private,
    )


def webhook_out(row: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=row.id,
        url=row.url,
        description=row.description,
        event_types=list(row.event_types),
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        failing_since=row.failing_since,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def with_secret(row: WebhookEndpoint, secret: str) -> WebhookWithSecret:
    return WebhookWithSecret(**webhook_out(row).model_dump(), secret=secret)


def delivery_out(row: WebhookDelivery) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        id=row.id,
        webhook_id=row.endpoint_id,
        kind=row.kind,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status,
        attempts=row.attempts,
        response_status=row.response_status,
        latency_ms=row.latency_ms,
        error=row.error,
        next_attempt_at=row.next_attempt_at if row.status in ("pending", "retrying") else None,
        last_attempt_at=row.last_attempt_at,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
    )


@router.post("/v1/webhooks", status_code=201, **requires("webhooks:write"))
async def create_webhook(
    body: WebhookCreate, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> WebhookWithSecret:
    """Add an endpoint. The answer holds its signing secret (`whsec_…`), shown only now.
    A URL whose host resolves to a private, loopback or link-local address is a 422."""
    row, secret = await webhook_service(session, workspace_id, ctx).create(
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        enabled=body.enabled,
    )
    return with_secret(row, secret)


@router.get("/v1/webhooks", **requires("webhooks:read"))
async def list_webhooks(
    session: Session, workspace_id: WorkspaceId, paging: Paging, ctx: Ctx
) -> Page[WebhookOut]:
    service = webhook_service(session, workspace_id, ctx)
    rows, cursor = page_of(
        await service.endpoints.page(paging.after_id, paging.limit), paging.limit
    )
    return Page(data=[webhook_out(row) for row in rows], next_cursor=cursor)


@router.get(_ONE, **requires("webhooks:read"))
async def get_webhook(
    webhook_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> WebhookOut:
    return webhook_out(await webhook_service(session, workspace_id, ctx).get(webhook_id))


@router.patch(_ONE, **requires("webhooks:write"))
async def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookUpdate,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> WebhookOut:
    service = webhook_service(session, workspace_id, ctx)
    changes = body.model_dump(exclude_unset=True)
    return webhook_out(await service.update(webhook_id, changes))


@router.delete(_ONE, status_code=204, **requires("webhooks:write"))
async def delete_webhook(
    webhook_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    await webhook_service(session, workspace_id, ctx).delete(webhook_id)
    return Response(status_code=204)


@router.post(_ONE + "/rotate-secret", **requires("webhooks:write"))
async def rotate_webhook_secret(
    webhook_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> WebhookWithSecret:
    """A new secret, shown only now. For 24 hours deliveries carry two signatures (new and
    old secret) so receivers can switch without dropping one."""
    row, secret = await webhook_service(session, workspace_id, ctx).rotate_secret(webhook_id)
    return with_secret(row, secret)


@router.post(_ONE + "/test", **requires("webhooks:write"))
async def test_webhook(
    webhook_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> WebhookDeliveryOut:
    """POST a signed `webhook.test` event to the endpoint now (enabled or not) and answer
    the outcome; it is logged among the deliveries and not retried."""
    # The request is made before the write transaction starts: no lock is held while
    # waiting for the receiver.
    async with ctx.db.read_sessions() as reader:
        reading = webhook_service(reader, workspace_id, ctx)
        endpoint = await reading.get(webhook_id)
        row = reading.test_delivery(endpoint)
        target = reading.target(endpoint)
    outcome = await send_now(ctx, row, target)
    recorded = await webhook_service(session, workspace_id, ctx).record_test(row, outcome)
    return delivery_out(recorded)


@router.get(_ONE + "/deliveries", **requires("webhooks:read"))
async def list_webhook_deliveries(
    webhook_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    paging: Paging,
    ctx: Ctx,
    status: Annotated[DeliveryStatus | None, Query()] = None,
) -> Page[WebhookDeliveryOut]:
    """The endpoint's delivery log, newest first: status, attempts, last response code,
    latency and error."""
    service = webhook_service(session, workspace_id, ctx)
    rows = await service.endpoints.deliveries(webhook_id, paging.after_id, paging.limit, status)
    page, cursor = page_of(rows, paging.limit)
    return Page(data=[delivery_out(row) for row in page], next_cursor=cursor)


@router.get(_DELIVERY, **requires("webhooks:read"))
async def get_webhook_delivery(
    webhook_id: uuid.UUID,
    webhook_delivery_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> WebhookDeliveryOut:
    service = webhook_service(session, workspace_id, ctx)
    return delivery_out(await service.delivery(webhook_id, webhook_delivery_id))


@router.post(_DELIVERY + "/replay", status_code=202, **requires("webhooks:write"))
async def replay_webhook_delivery(
    webhook_id: uuid.UUID,
    webhook_delivery_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> WebhookDeliveryOut:
    """Send the same payload again as a new delivery (a new `webhook-id`), due now."""
    service = webhook_service(session, workspace_id, ctx)
    return delivery_out(await service.replay(webhook_id, webhook_delivery_id))
