"""Route classification cases of this domain: update ``ROUTES`` and ``PATH_FACTORIES``."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from postroom.context import AppContext
from postroom.events.service import record
from postroom.models.webhooks import WebhookDelivery
from postroom.webhooks.outbox import fan_out
from tests.support.routes import PATH_FACTORIES, ROUTES, RouteCase, Tenant

_ONE = "/v1/webhooks/{webhook_id}"
_DELIVERY = _ONE + "/deliveries/{webhook_delivery_id}"
# A public address: accepted at create without any connection being made.
_PUBLIC_URL = "https://93.184.215.14/hook"

ROUTES.update(
    {
        ("POST", "/v1/events"): RouteCase(
            "events",
            reason="records into the key's own workspace; contacts are found by email there",
        ),
        ("POST", "/v1/events/batch"): RouteCase(
            "events",
            reason="records into the key's own workspace; contacts are found by email there",
        ),
        ("POST", "/v1/webhooks"): RouteCase(
            "create", body={"url": _PUBLIC_URL, "event_types": ["*"]}
        ),
        ("GET", "/v1/webhooks"): RouteCase("collection"),
        ("GET", _ONE): RouteCase("by_id"),
        ("PATCH", _ONE): RouteCase("by_id", body={"description": "b"}),
        ("DELETE", _ONE): RouteCase("by_id"),
        ("POST", _ONE + "/rotate-secret"): RouteCase("by_id"),
        ("POST", _ONE + "/test"): RouteCase("by_id"),
        ("GET", _ONE + "/deliveries"): RouteCase("by_id"),
        ("GET", _DELIVERY): RouteCase("by_id"),
        ("POST", _DELIVERY + "/replay"): RouteCase("by_id"),
    }
)


async def _webhook(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    listing = await client.get("/v1/webhooks", headers=a.headers)
    for row in listing.json()["data"]:
        if row["description"] == "a-webhook":
            return str(row["id"])
    response = await client.post(
        "/v1/webhooks",
        headers=a.headers,
        json={"url": _PUBLIC_URL, "event_types": ["signup"], "description": "a-webhook"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _webhook_delivery(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    webhook_id = await _webhook(client, ctx, a)
    async with ctx.db.transaction() as session:
        await record(session, workspace_id=a.id, type="signup", occurred_at=ctx.clock.now())
    async with ctx.db.transaction() as session:
        await fan_out(session, ctx)
    async with ctx.db.read_sessions() as session:
        delivery_id = await session.scalar(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.endpoint_id == uuid.UUID(webhook_id))
            .limit(1)
        )
    assert delivery_id is not None
    return str(delivery_id)


PATH_FACTORIES.update({"webhook_id": _webhook, "webhook_delivery_id": _webhook_delivery})

__all__ = ["PATH_FACTORIES", "ROUTES"]
