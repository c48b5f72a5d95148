"""How each route is classified for the workspace-isolation test.

Every route in the OpenAPI document must appear in ``ROUTES``. A route added without an
entry fails ``test_route_classification``; each later feature adds its routes here, and a
factory in ``PATH_FACTORIES`` for every new path parameter (it creates that resource in
workspace A and returns its id).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from postroom.context import AppContext
from postroom.jobs import repository as jobs

Kind = Literal["by_id", "collection", "create", "admin", "public", "events"]


@dataclass(frozen=True)
class RouteCase:
    kind: Kind
    body: dict[str, Any] | None = None
    reason: str = ""
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Tenant:
    id: Any
    headers: dict[str, str]


Factory = Callable[[httpx.AsyncClient, AppContext, Tenant], Awaitable[str]]

ROUTES: dict[tuple[str, str], RouteCase] = {
    ("GET", "/healthz"): RouteCase("public", reason="liveness probe"),
    ("GET", "/readyz"): RouteCase("public", reason="readiness probe"),
    ("POST", "/v1/workspaces"): RouteCase("admin", body={"name": "x"}),
    ("GET", "/v1/workspaces"): RouteCase("admin"),
    ("GET", "/v1/workspaces/{workspace_id}"): RouteCase("admin"),
    ("PATCH", "/v1/workspaces/{workspace_id}"): RouteCase("admin", body={"name": "y"}),
    ("DELETE", "/v1/workspaces/{workspace_id}"): RouteCase("admin"),
    ("GET", "/v1/api-keys"): RouteCase("collection"),
    ("POST", "/v1/api-keys"): RouteCase("create", body={"name": "k"}),
    ("GET", "/v1/api-keys/{key_id}"): RouteCase("by_id"),
    ("DELETE", "/v1/api-keys/{key_id}"): RouteCase("by_id"),
    ("GET", "/v1/jobs/{job_id}"): RouteCase("by_id"),
}


async def _key(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post("/v1/api-keys", headers=a.headers, json={"name": "a-key"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _job(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    async with ctx.db.transaction() as session:
        job = await jobs.enqueue(
            session, kind="probe", payload={}, now=ctx.clock.now(), workspace_id=a.id
        )
    return str(job.id)


async def _workspace(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    return str(a.id)


PATH_FACTORIES: dict[str, Factory] = {
    "key_id": _key,
    "job_id": _job,
    "workspace_id": _workspace,
}
