"""Writing events. ``record`` only adds to the caller's session: the event commits or
rolls back with the change, so nothing downstream hears of a rolled-back change."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.ids import uuid7, uuid7_batch
from postroom.models.platform import Event

RESERVED_PREFIXES = (
    "email.",
    "contact.",
    "campaign.",
    "sequence.",
    "import.",
    "export.",
    "webhook.",
)

_EMAIL = (
    "queued sent delivered deferred uncertain skipped cancelled failed bounced complained "
    "opened clicked replied auto_replied unsubscribed"
)
_CAMPAIGN = "scheduled sending waiting paused resumed sent cancelled failed"
_CONTACT = "created updated deleted subscribed unsubscribed"

KNOWN_TYPES = frozenset(
    {
        *(f"contact.{v}" for v in _CONTACT.split()),
        *(f"email.{v}" for v in _EMAIL.split()),
        *(f"campaign.{v}" for v in _CAMPAIGN.split()),
        "sequence.enrolled",
        "sequence.completed",
        "sequence.stopped",
        "import.completed",
        "export.completed",
        # An endpoint Postroom disabled (HTTP 410, or failing for five days).
        "webhook.endpoint_disabled",
    }
)


def is_reserved(name: str) -> bool:
    return name.startswith(RESERVED_PREFIXES)


async def record(
    session: AsyncSession,
    *,
    workspace_id: uuid.UUID,
    type: str,
    occurred_at: datetime,
    contact_id: uuid.UUID | None = None,
    resource_type: str | None = None,
    resource_id: uuid.UUID | None = None,
    data: Mapping[str, Any] | None = None,
) -> uuid.UUID:
    event_id = uuid7()
    await session.execute(
        insert(Event).values(
            id=event_id,
            workspace_id=workspace_id,
            type=type,
            contact_id=contact_id,
            resource_type=resource_type,
            resource_id=resource_id,
            data=dict(data or {}),
            occurred_at=occurred_at,
        )
    )
    return event_id


async def record_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Set-based: one INSERT for many events (each dict holds Event columns)."""
    if not rows:
        return
    # One lock and one urandom call for the batch's ids, not one per event.
    for row, new_id in zip(rows, uuid7_batch(len(rows)), strict=True):
        row.setdefault("id", new_id)
        row.setdefault("data", {})
    await session.execute(insert(Event), rows)
