"""Helpers shared by the campaign tests: a sending domain, contacts, campaigns."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import func, select, update

from postroom.context import AppContext
from postroom.ids import uuid7
from postroom.models.campaigns import Campaign
from postroom.models.contacts import Contact, Subscription
from postroom.models.delivery import Delivery
from tests.conftest import WorkspaceHandle

DOMAIN = "brand.example"
SENDER = {"email": f"news@{DOMAIN}", "name": "Brand"}
INLINE = {"subject": "Hello {{ contact.first_name | default('you') }}", "html": "<p>Hi</p>"}


async def add_domain(client: httpx.AsyncClient, ws: WorkspaceHandle, domain: str = DOMAIN) -> str:
    response = await client.post(
        "/v1/domains", headers=ws.headers, json={"domain": domain, "bits": 1024}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def campaign_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Spring news", "content": dict(INLINE), "from": SENDER}
    body.update(overrides)
    return body


async def create_campaign(
    client: httpx.AsyncClient, ws: WorkspaceHandle, **overrides: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/campaigns", headers=ws.headers, json=campaign_body(**overrides)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def add_contacts(
    ctx: AppContext,
    workspace_id: Any,
    emails: Sequence[str],
    *,
    list_id: uuid.UUID | None = None,
    subscription: str = "subscribed",
    **fields: Any,
) -> list[uuid.UUID]:
    now = ctx.clock.now()
    ids = []
    async with ctx.db.transaction() as session:
        for address in emails:
            contact = Contact(
                id=uuid7(),
                workspace_id=workspace_id,
                email=address,
                email_key=address.lower(),
                created_at=now,
                updated_at=now,
                **fields,
            )
            session.add(contact)
            ids.append(contact.id)
        await session.flush()
        if list_id is not None:
            for contact_id in ids:
                session.add(
                    Subscription(
                        list_id=list_id,
                        contact_id=contact_id,
                        workspace_id=workspace_id,
                        status=subscription,
                        created_at=now,
                        updated_at=now,
                    )
                )
    return ids


async def force_status(ctx: AppContext, campaign_id: str, status: str, **values: Any) -> None:
    async with ctx.db.transaction() as session:
        await session.execute(
            update(Campaign)
            .where(Campaign.id == uuid.UUID(campaign_id))
            .values(status=status, **values)
        )


async def campaign_row(ctx: AppContext, campaign_id: str) -> Campaign:
    async with ctx.db.transaction() as session:
        row = await session.get(Campaign, uuid.UUID(campaign_id))
        assert row is not None
        return row


async def delivery_statuses(ctx: AppContext, send_id: Any) -> dict[str, int]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.send_id == uuid.UUID(str(send_id)))
            .group_by(Delivery.status)
        )
        return {str(k): int(v) for k, v in rows.all()}


async def run_jobs(ctx: AppContext) -> int:
    from postroom.jobs.runner import JobRunner

    runner = JobRunner(ctx, ctx.jobs, owner="test-runner")
    ran = 0
    while n := await runner.run_once(limit=10):
        ran += n
    return ran
