"""Routes: /v1/messages (transactional mail)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.path_ids import register_path_resolver
from postroom.http.principal import Principal
from postroom.http.routing import ApiRoute
from postroom.messages.schemas import (
    MessageAccepted,
    MessageCreate,
    MessageDelivery,
    MessageEvent,
    MessageOut,
    RecipientResult,
)
from postroom.messages.service import MESSAGE, MessageService, MessageView, is_message, mailbox_of

router = APIRouter(route_class=ApiRoute, tags=["messages"])


async def _is_message(session: AsyncSession, principal: Principal, raw: str) -> bool:
    return await is_message(session, principal.require_workspace(), raw)


register_path_resolver("message_id", MESSAGE, _is_message)


@router.post("/v1/messages", status_code=202, **requires("messages:write"))
async def send_message(
    body: MessageCreate, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> MessageAccepted:
    """Queue a transactional message for one recipient (`to`) or up to 100 (`batch`).
    Each recipient is `queued` (with its `delivery_id`) or `rejected` with a `reason`
    (`invalid_email`, `duplicate`, `suppressed`); rejections do not fail the request."""
    accepted = await MessageService(session, workspace_id, ctx.clock.now()).send(body)
    results = [
        RecipientResult(
            email=r.email,
            status="queued" if r.status == "queued" else "rejected",
            reason=r.reason,
            detail=r.detail,
            delivery_id=r.delivery_id,
        )
        for r in accepted.recipients
    ]
    queued = sum(1 for r in results if r.status == "queued")
    return MessageAccepted(
        id=accepted.send.id,
        created_at=accepted.send.created_at,
        queued=queued,
        rejected=len(results) - queued,
        recipients=results,
    )


@router.get("/v1/messages/{message_id}", **requires("messages:read"))
async def get_message(
    message_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> MessageOut:
    """The message with every delivery's history: status, attempts, the relay's last
    answer, timestamps and `email.*` events."""
    view = await MessageService(session, workspace_id, ctx.clock.now()).get(message_id)
    return _out(view)


def _out(view: MessageView) -> MessageOut:
    send = view.send
    content = send.content
    inline = content.get("inline") or {}
    template_id = content.get("template_id")
    return MessageOut(
        id=send.id,
        state=send.state,
        from_=mailbox_of(send),
        reply_to=send.reply_to,
        subject=inline.get("subject"),
        template_id=uuid.UUID(template_id) if template_id else None,
        template_version_ids={
            locale: uuid.UUID(str(version_id))
            for locale, version_id in (content.get("versions") or {}).items()
        },
        tags=list(send.tags or []),
        metadata=dict(send.metadata_ or {}),
        track_opens=send.track_opens,
        track_clicks=send.track_clicks,
        created_at=send.created_at,
        counts=view.counts,
        deliveries=[
            MessageDelivery(
                id=d.id,
                email=d.email,
                contact_id=d.contact_id,
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
                events=[
                    MessageEvent(type=e.type, occurred_at=e.occurred_at, data=e.data)
                    for e in view.events.get(d.id, [])
                ],
            )
            for d in view.deliveries
        ],
    )
