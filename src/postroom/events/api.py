"""Routes: POST /v1/events (custom events, Mailglyph/Plunk ``/v1/track`` semantics).

A public key (``pk_…``, safe in a browser) or a secret key with ``events:write``. The
contact is found by email or created (subscribed unless ``subscribed: false``); an
existing contact's subscription is never changed here, since a public key must not be
able to resubscribe someone. The event is recorded in the same transaction, so segments,
analytics and webhooks see it once the request commits.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.service import ContactService
from postroom.errors import NotFound
from postroom.events.schemas import (
    ContactRef,
    TrackBatch,
    TrackedBatch,
    TrackedEvent,
    TrackEvent,
)
from postroom.events.service import record
from postroom.http.access import events_key
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.routing import ApiRoute

router = APIRouter(route_class=ApiRoute, tags=["events"])


async def track(
    session: AsyncSession, workspace_id: uuid.UUID, body: TrackEvent, ctx: Ctx, prefix: str = ""
) -> TrackedEvent:
    now = ctx.clock.now()
    contacts = ContactService(session, workspace_id, now)
    created = False
    try:
        contact = await contacts.lookup(email=body.email, external_id=None)
    except NotFound:
        subscribed = True if body.subscribed is None else body.subscribed
        result = await contacts.upsert({"email": body.email, "subscribed": subscribed})
        contact, created = result.contact, result.created
    event_id = await record(
        session,
        workspace_id=workspace_id,
        type=body.event,
        occurred_at=now,
        contact_id=contact.id,
        resource_type="contact",
        resource_id=contact.id,
        data=body.data,
    )
    return TrackedEvent(
        id=event_id,
        event=body.event,
        contact=ContactRef(id=contact.id, email=contact.email, created=created),
        data=body.data,
        occurred_at=now,
    )


@router.post("/v1/events", status_code=201, **events_key())
async def track_event(
    body: TrackEvent, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> TrackedEvent:
    """Record a named event for an email address, creating the contact if needed.
    Names starting with `email.`, `contact.`, `campaign.`, `sequence.`, `import.`,
    `export.` or `webhook.` are reserved (422 on `event`)."""
    return await track(session, workspace_id, body, ctx)


@router.post("/v1/events/batch", status_code=201, **events_key())
async def track_events(
    body: TrackBatch, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> TrackedBatch:
    """Up to 100 events in one transaction: all are recorded or none."""
    return TrackedBatch(
        data=[await track(session, workspace_id, item, ctx) for item in body.events]
    )
