"""Webhook endpoint and delivery-log queries, scoped to one workspace."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.models.webhooks import WebhookDelivery, WebhookEndpoint, WebhookEventType


def patterns_of(event_types: Sequence[str]) -> list[tuple[str, bool]]:
    """Stored match rows: ``email.*`` → (``email.``, prefix), ``*`` → ("", prefix)."""
    rows: list[tuple[str, bool]] = []
    for name in event_types:
        row = (name[:-1], True) if name.endswith("*") else (name, False)
        if row not in rows:
            rows.append(row)
    return rows


class WebhookRepository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    def _scoped(self) -> Select[WebhookEndpoint]:
        return select(WebhookEndpoint).where(WebhookEndpoint.workspace_id == self.workspace_id)

    async def get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        query = self._scoped().where(WebhookEndpoint.id == endpoint_id)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def page(self, after: uuid.UUID | None, limit: int) -> list[WebhookEndpoint]:
        query = self._scoped().order_by(WebhookEndpoint.id).limit(limit + 1)
        if after is not None:
            query = query.where(WebhookEndpoint.id > after)
        return list((await self.session.execute(query)).scalars())

    async def add(self, endpoint: WebhookEndpoint) -> None:
        self.session.add(endpoint)
        await self.session.flush()
        await self.set_patterns(endpoint.id, endpoint.event_types)

    async def set_patterns(self, endpoint_id: uuid.UUID, event_types: Sequence[str]) -> None:
        await self.session.execute(
            delete(WebhookEventType).where(WebhookEventType.endpoint_id == endpoint_id)
        )
        rows = [
            {"endpoint_id": endpoint_id, "event_type": pattern, "is_prefix": is_prefix}
            for pattern, is_prefix in patterns_of(event_types)
        ]
        if rows:
            await self.session.execute(insert(WebhookEventType), rows)

    async def delete(self, endpoint: WebhookEndpoint) -> None:
        await self.session.delete(endpoint)
        await self.session.flush()

    # --- the delivery log ---

    async def delivery(
        self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> WebhookDelivery | None:
        query = select(WebhookDelivery).where(
            WebhookDelivery.workspace_id == self.workspace_id,
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.id == delivery_id,
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def deliveries(
        self,
        endpoint_id: uuid.UUID,
        after: uuid.UUID | None,
        limit: int,
        status: str | None,
    ) -> list[WebhookDelivery]:
        """Newest first (ids are time-ordered); ``after`` is the last id of the page before."""
        query = (
            select(WebhookDelivery)
            .where(
                WebhookDelivery.workspace_id == self.workspace_id,
                WebhookDelivery.endpoint_id == endpoint_id,
            )
            .order_by(WebhookDelivery.id.desc())
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(WebhookDelivery.id < after)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        return list((await self.session.execute(query)).scalars())

    async def add_delivery(self, values: dict[str, Any]) -> WebhookDelivery:
        row = WebhookDelivery(workspace_id=self.workspace_id, **values)
        self.session.add(row)
        await self.session.flush()
        return row


async def erase_contact(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, _email_key: str
) -> None:
    """GDPR erase: webhook deliveries about the contact go (sent or not)."""
    await session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.workspace_id == workspace_id,
            WebhookDelivery.contact_id == contact_id,
        )
    )


def now_values(now: datetime) -> dict[str, Any]:
    return {"created_at": now, "updated_at": now}
