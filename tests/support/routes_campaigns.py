"""Route classification cases of this domain: update ``ROUTES`` and ``PATH_FACTORIES``."""

from __future__ import annotations

import httpx

from postroom.context import AppContext
from tests.support.routes import PATH_FACTORIES, ROUTES, RouteCase, Tenant

_CAMPAIGN = "/v1/campaigns/{campaign_id}"

ROUTES.update(
    {
        ("POST", "/v1/campaigns"): RouteCase(
            "create",
            reason="needs a sending domain of the caller's workspace (422 otherwise, tested "
            "in test_campaigns)",
        ),
        ("GET", "/v1/campaigns"): RouteCase("collection"),
        ("GET", _CAMPAIGN): RouteCase("by_id"),
        ("PATCH", _CAMPAIGN): RouteCase("by_id", body={"name": "renamed"}),
        ("DELETE", _CAMPAIGN): RouteCase("by_id"),
        ("POST", _CAMPAIGN + "/duplicate"): RouteCase("by_id"),
        ("GET", _CAMPAIGN + "/audience"): RouteCase("by_id"),
        ("POST", _CAMPAIGN + "/test"): RouteCase("by_id", body={"emails": ["t@example.com"]}),
        ("POST", _CAMPAIGN + "/schedule"): RouteCase(
            "by_id", body={"scheduled_at": "2030-01-01T09:00:00Z"}
        ),
        ("POST", _CAMPAIGN + "/unschedule"): RouteCase("by_id"),
        ("POST", _CAMPAIGN + "/send"): RouteCase("by_id"),
        ("POST", _CAMPAIGN + "/pause"): RouteCase("by_id"),
        ("POST", _CAMPAIGN + "/resume"): RouteCase("by_id"),
        ("POST", _CAMPAIGN + "/cancel"): RouteCase("by_id"),
        ("POST", _CAMPAIGN + "/retry-failed"): RouteCase("by_id"),
        ("GET", _CAMPAIGN + "/deliveries"): RouteCase("by_id", params={"status": "sent"}),
    }
)


async def _campaign(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post(
        "/v1/domains", headers=a.headers, json={"domain": "camp-a.example.com", "bits": 1024}
    )
    assert response.status_code in (201, 409), response.text
    response = await client.post(
        "/v1/campaigns",
        headers=a.headers,
        json={
            "name": "only in A",
            "content": {"subject": "Hi", "html": "<p>Hello</p>"},
            "from": {"email": "news@camp-a.example.com"},
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


PATH_FACTORIES.update({"campaign_id": _campaign})

__all__ = ["PATH_FACTORIES", "ROUTES"]
