"""Creating sends and queueing their deliveries (set-based)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.ids import uuid7
from postroom.models.delivery import PRIORITY_CAMPAIGN, Delivery, Send


@dataclass(slots=True)
class SendSpec:
    kind: str
    content: dict[str, Any]
    from_email: str
    from_name: str = ""
    reply_to: str | None = None
    purpose: str = "marketing"
    priority: int = PRIORITY_CAMPAIGN
    track_opens: bool = True
    track_clicks: bool = True
    list_ids: list[str] = field(default_factory=list)
    campaign_id: uuid.UUID | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Recipient:
    email: str
    contact_id: uuid.UUID | None = None
    variables: dict[str, Any] | None = None


async def create_send(
    session: AsyncSession, workspace_id: uuid.UUID, spec: SendSpec, now: datetime
) -> Send:
    send = Send(
        id=uuid7(),
        workspace_id=workspace_id,
        kind=spec.kind,
        state="active",
        priority=spec.priority,
        purpose=spec.purpose,
        content=spec.content,
        from_email=spec.from_email,
        from_name=spec.from_name,
        reply_to=spec.reply_to,
        track_opens=spec.track_opens,
        track_clicks=spec.track_clicks,
        list_ids=spec.list_ids,
        campaign_id=spec.campaign_id,
        tags=spec.tags,
        metadata_=spec.metadata,
        created_at=now,
    )
    session.add(send)
    await session.flush()
    return send


async def enqueue(
    session: AsyncSession, send: Send, recipients: Sequence[Recipient], now: datetime
) -> list[uuid.UUID]:
    """One multi-row INSERT of queued deliveries; returns their ids in order."""
    ids = [uuid7() for _ in recipients]
    rows: list[dict[str, Any]] = [
        {
            "id": delivery_id,
            "workspace_id": send.workspace_id,
            "send_id": send.id,
            "contact_id": r.contact_id,
            "email": r.email,
            "status": "queued",
            "priority": send.priority,
            "attempts": 0,
            "next_attempt_at": now,
            "variables": r.variables,
            "created_at": now,
            "updated_at": now,
        }
        for delivery_id, r in zip(ids, recipients, strict=True)
    ]
    if rows:
        await session.execute(insert(Delivery), rows)
    return ids
