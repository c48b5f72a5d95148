"""Every route is classified, and no workspace key can reach another workspace's rows.

Workspace-scoped routes are called with workspace B's key on workspace A's ids (with a
schema-valid body) and must answer 404; collections read with B's key must show none of
A's ids; admin routes refuse workspace keys; public routes carry a reason.
"""

from __future__ import annotations

import re

import httpx

from postroom.context import AppContext
from tests.conftest import MakeWorkspace
from tests.support.routes import PATH_FACTORIES, ROUTES, Tenant

PARAM = re.compile(r"{([a-z_]+)}")
METHODS = {"get", "post", "put", "patch", "delete"}


async def _spec_routes(client: httpx.AsyncClient) -> set[tuple[str, str]]:
    spec = (await client.get("/openapi.json")).json()
    return {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in METHODS
    }


async def test_every_route_is_classified(client: httpx.AsyncClient) -> None:
    routes = await _spec_routes(client)
    unclassified = sorted(routes - set(ROUTES))
    assert not unclassified, f"classify these routes in tests/support/routes.py: {unclassified}"
    stale = sorted(set(ROUTES) - routes)
    assert not stale, f"tests/support/routes.py lists routes that no longer exist: {stale}"
    for key, case in ROUTES.items():
        if case.kind == "public":
            assert case.reason, f"{key} is public without a reason"
        if case.kind == "public":
            continue  # public routes take signed tokens, not workspace ids
        for param in PARAM.findall(key[1]):
            assert param in PATH_FACTORIES, f"no factory for path parameter {param} ({key})"


async def test_foreign_ids_are_404_and_collections_do_not_leak(
    client: httpx.AsyncClient, ctx: AppContext, make_workspace: MakeWorkspace
) -> None:
    handle_a = await make_workspace("tenant-a")
    handle_b = await make_workspace("tenant-b")
    a = Tenant(handle_a.id, handle_a.headers)
    b = Tenant(handle_b.id, handle_b.headers)
    routes = await _spec_routes(client)
    a_ids: dict[str, str] = {}
    for param, factory in PATH_FACTORIES.items():
        if param != "workspace_id":
            a_ids[param] = await factory(client, ctx, a)

    checked = 0
    for (method, path), case in sorted(ROUTES.items()):
        if (method, path) not in routes:
            continue
        if case.kind == "by_id":
            url = PARAM.sub(lambda m: a_ids[m.group(1)], path)
            response = await client.request(
                method, url, headers=b.headers, json=case.body, params=case.params
            )
            assert response.status_code == 404, (
                f"{method} {path} with B's key on A's ids: {response.status_code} {response.text}"
            )
            assert response.headers["content-type"].startswith("application/problem+json")
            checked += 1
        elif case.kind == "collection":
            response = await client.request(method, path, headers=b.headers, params=case.params)
            assert response.status_code == 200, f"{method} {path}: {response.text}"
            leaked = [v for v in a_ids.values() if v in response.text] + (
                [str(a.id)] if str(a.id) in response.text else []
            )
            assert not leaked, f"{method} {path} shows workspace A's rows to B: {leaked}"
            checked += 1
        elif case.kind == "admin":
            url = PARAM.sub(lambda m: str(a.id), path)
            response = await client.request(method, url, headers=a.headers, json=case.body)
            assert response.status_code == 403, f"{method} {path} let a workspace key in"
            checked += 1
    assert checked >= 8
