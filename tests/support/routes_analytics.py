"""Route classification cases of this domain: update ``ROUTES`` and ``PATH_FACTORIES``."""

from __future__ import annotations

import httpx

from postroom.context import AppContext
from postroom.ids import uuid7
from postroom.models.campaigns import Campaign
from tests.support.routes import PATH_FACTORIES, ROUTES, RouteCase, Tenant

ROUTES.update(
    {
        ("GET", "/v1/campaigns/{campaign_id}/stats"): RouteCase("by_id"),
        ("GET", "/v1/campaigns/{campaign_id}/links"): RouteCase("by_id"),
        ("GET", "/v1/contacts/{contact_id}/engagement"): RouteCase("by_id"),
        ("GET", "/v1/analytics/summary"): RouteCase(
            "collection",
            reason="daily rollups of the caller's workspace only (tested in test_analytics)",
        ),
    }
)


async def _campaign(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    """A draft campaign row of workspace A (the campaigns module registers its own
    factory, which replaces this one when present)."""
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        campaign = Campaign(
            id=uuid7(),
            workspace_id=a.id,
            name="a-campaign",
            status="draft",
            content={"inline": {"subject": "s", "html": "<p>x</p>", "text": None}},
            from_email="news@a.example",
            audience={},
            tags=[],
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
    return str(campaign.id)


PATH_FACTORIES.setdefault("campaign_id", _campaign)

__all__ = ["PATH_FACTORIES", "ROUTES"]
