"""Route classification cases of the relays work: /v1/relays and the sending limits and
warm-up routes of /v1/domains."""

from __future__ import annotations

import httpx

from postroom.context import AppContext
from tests.support.routes import PATH_FACTORIES, ROUTES, RouteCase, Tenant

_RELAY = "/v1/relays/{relay_id}"
_WARMUP = "/v1/domains/{domain_id}/warmup"

ROUTES.update(
    {
        ("POST", "/v1/relays"): RouteCase("create", body={"url": "smtp://b.example.com:2525"}),
        ("GET", "/v1/relays"): RouteCase("collection"),
        ("GET", _RELAY): RouteCase("by_id"),
        ("PATCH", _RELAY): RouteCase("by_id", body={"weight": 2}),
        ("DELETE", _RELAY): RouteCase("by_id"),
        ("PATCH", "/v1/domains/{domain_id}"): RouteCase("by_id", body={"per_second": 5}),
        ("GET", _WARMUP): RouteCase("by_id"),
        ("PUT", _WARMUP): RouteCase(
            "by_id", body={"initial_per_day": 10, "growth_factor": 1.5, "max_per_day": 100}
        ),
        ("DELETE", _WARMUP): RouteCase("by_id"),
    }
)


async def _relay(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post(
        "/v1/relays",
        headers=a.headers,
        json={"url": "smtp://user:secret@a.example.com:2525", "name": "a-relay"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


PATH_FACTORIES.update({"relay_id": _relay})

__all__ = ["PATH_FACTORIES", "ROUTES"]
