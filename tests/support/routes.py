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
    # contacts
    ("POST", "/v1/contacts"): RouteCase("create", body={"email": "x@example.com"}),
    ("GET", "/v1/contacts"): RouteCase("collection"),
    ("GET", "/v1/contacts/lookup"): RouteCase(
        "create", reason="lookup by key: B's key finds only B's contacts (tested in test_contacts)"
    ),
    ("POST", "/v1/contacts/bulk"): RouteCase(
        "create", body={"contacts": [{"email": "x@example.com"}]}
    ),
    ("POST", "/v1/contacts/bulk-delete"): RouteCase(
        "create", reason="ids of other workspaces are reported not_found (tested in test_contacts)"
    ),
    ("GET", "/v1/contacts/{contact_id}"): RouteCase("by_id"),
    ("PATCH", "/v1/contacts/{contact_id}"): RouteCase("by_id", body={"first_name": "B"}),
    ("DELETE", "/v1/contacts/{contact_id}"): RouteCase("by_id"),
    ("POST", "/v1/contacts/{contact_id}/erase"): RouteCase("by_id"),
    ("GET", "/v1/contacts/{contact_id}/events"): RouteCase("by_id"),
    # lists
    ("POST", "/v1/lists"): RouteCase("create", body={"name": "b-list"}),
    ("GET", "/v1/lists"): RouteCase("collection"),
    ("GET", "/v1/lists/{list_id}"): RouteCase("by_id"),
    ("PATCH", "/v1/lists/{list_id}"): RouteCase("by_id", body={"name": "renamed"}),
    ("DELETE", "/v1/lists/{list_id}"): RouteCase("by_id"),
    ("GET", "/v1/lists/{list_id}/subscriptions"): RouteCase("by_id"),
    ("POST", "/v1/lists/{list_id}/subscribe"): RouteCase(
        "by_id", body={"emails": ["x@example.com"]}
    ),
    ("POST", "/v1/lists/{list_id}/unsubscribe"): RouteCase(
        "by_id", body={"emails": ["x@example.com"]}
    ),
    # segments and audiences
    ("POST", "/v1/segments"): RouteCase(
        "create",
        body={
            "name": "s",
            "filter": {
                "groups": [{"filters": [{"field": "email", "operator": "contains", "value": "@"}]}]
            },
        },
    ),
    ("GET", "/v1/segments"): RouteCase("collection"),
    ("GET", "/v1/segments/{segment_id}"): RouteCase("by_id"),
    ("PATCH", "/v1/segments/{segment_id}"): RouteCase("by_id", body={"name": "renamed"}),
    ("DELETE", "/v1/segments/{segment_id}"): RouteCase("by_id"),
    ("GET", "/v1/segments/{segment_id}/preview"): RouteCase("by_id"),
    ("POST", "/v1/audiences/preview"): RouteCase(
        "create",
        reason="lists and segments of other workspaces are 422 not_found (tested in test_segments_api)",
    ),
    # imports
    ("POST", "/v1/imports"): RouteCase(
        "create",
        reason="uploads a file into the caller's workspace; a foreign list_id is a 422 (tested in test_imports)",
    ),
    ("GET", "/v1/imports"): RouteCase("collection"),
    ("GET", "/v1/imports/{import_id}"): RouteCase("by_id"),
    # exports
    ("POST", "/v1/exports"): RouteCase("create", body={"format": "csv"}),
    ("GET", "/v1/exports"): RouteCase("collection"),
    ("GET", "/v1/exports/{export_id}"): RouteCase("by_id"),
    ("GET", "/v1/exports/{export_id}/download"): RouteCase("by_id"),
    # public links in mail (tracking, unsubscribe, preferences, view)
    ("GET", "/t/o/{token}"): RouteCase("public", reason="open pixel; signed token"),
    ("GET", "/t/c/{token}"): RouteCase("public", reason="click redirect; signed token"),
    ("GET", "/u/{token}"): RouteCase("public", reason="unsubscribe page; signed token"),
    ("POST", "/u/{token}"): RouteCase(
        "public", reason="RFC 8058 one-click unsubscribe; signed token"
    ),
    ("GET", "/p/{token}"): RouteCase("public", reason="preferences page; signed token"),
    ("POST", "/p/{token}"): RouteCase("public", reason="preferences change; signed token"),
    ("GET", "/v/{token}"): RouteCase("public", reason="view in browser; signed token"),
    # suppressions
    ("POST", "/v1/suppressions"): RouteCase("create", body={"email": "x@example.com"}),
    ("GET", "/v1/suppressions"): RouteCase("collection"),
    ("GET", "/v1/suppressions/{email}"): RouteCase("by_id"),
    ("DELETE", "/v1/suppressions/{email}"): RouteCase("by_id"),
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


async def _contact(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post(
        "/v1/contacts", headers=a.headers, json={"email": "only-a@example.com"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _list(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post("/v1/lists", headers=a.headers, json={"name": "a-list"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _suppressed_email(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post(
        "/v1/suppressions", headers=a.headers, json={"email": "blocked-in-a@example.com"}
    )
    assert response.status_code == 201, response.text
    return "blocked-in-a@example.com"


async def _segment(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    body = {
        "name": "a-seg",
        "filter": {
            "groups": [{"filters": [{"field": "email", "operator": "contains", "value": "@"}]}]
        },
    }
    response = await client.post("/v1/segments", headers=a.headers, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _import(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post(
        "/v1/imports",
        headers={**a.headers, "content-type": "text/csv"},
        content=b"email\nimported-a@example.com\n",
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def _export(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post("/v1/exports", headers=a.headers, json={"format": "csv"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


PATH_FACTORIES: dict[str, Factory] = {
    "export_id": _export,
    "import_id": _import,
    "segment_id": _segment,
    "contact_id": _contact,
    "list_id": _list,
    "email": _suppressed_email,
    "key_id": _key,
    "job_id": _job,
    "workspace_id": _workspace,
}


# --- templates and sending domains ----------------------------------------------------------

_NO_SUCH_ID = "00000000-0000-7000-8000-000000000000"
_TEMPLATES = "/v1/templates/{template_id}"
_VERSION = _TEMPLATES + "/versions/{version_id}"

ROUTES.update(
    {
        ("POST", "/v1/templates"): RouteCase("create", body={"name": "b-template"}),
        ("GET", "/v1/templates"): RouteCase("collection"),
        ("GET", _TEMPLATES): RouteCase("by_id"),
        ("PATCH", _TEMPLATES): RouteCase("by_id", body={"name": "renamed"}),
        ("DELETE", _TEMPLATES): RouteCase("by_id"),
        ("POST", _TEMPLATES + "/versions"): RouteCase(
            "by_id", body={"subject": "s", "html": "<p>b</p>"}
        ),
        ("GET", _TEMPLATES + "/versions"): RouteCase("by_id"),
        ("POST", _TEMPLATES + "/rollback"): RouteCase("by_id", body={"version_id": _NO_SUCH_ID}),
        ("GET", _VERSION): RouteCase("by_id"),
        ("PATCH", _VERSION): RouteCase("by_id", body={"subject": "changed"}),
        ("POST", _VERSION + "/publish"): RouteCase("by_id"),
        ("POST", _VERSION + "/unpublish"): RouteCase("by_id"),
        ("POST", _VERSION + "/preview"): RouteCase("by_id", body={"data": {}}),
        ("GET", _VERSION + "/diff"): RouteCase("by_id", params={"against": _NO_SUCH_ID}),
        ("POST", "/v1/domains"): RouteCase("create", body={"domain": "b.example.com"}),
        ("GET", "/v1/domains"): RouteCase("collection"),
        ("GET", "/v1/domains/{domain_id}"): RouteCase("by_id"),
        ("DELETE", "/v1/domains/{domain_id}"): RouteCase("by_id"),
        ("POST", "/v1/domains/{domain_id}/check"): RouteCase("by_id"),
        ("POST", "/v1/domains/{domain_id}/dkim-keys"): RouteCase("by_id", body={"bits": 1024}),
    }
)


async def _template(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    listing = await client.get("/v1/templates", headers=a.headers)
    for row in listing.json()["data"]:
        if row["name"] == "a-template":
            return str(row["id"])
    response = await client.post("/v1/templates", headers=a.headers, json={"name": "a-template"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _template_version(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    template_id = await _template(client, ctx, a)
    response = await client.post(
        f"/v1/templates/{template_id}/versions",
        headers=a.headers,
        json={"subject": "Hello", "html": "<p>only in A</p>"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _domain(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post(
        "/v1/domains", headers=a.headers, json={"domain": "a.example.com", "bits": 1024}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


PATH_FACTORIES.update(
    {"template_id": _template, "version_id": _template_version, "domain_id": _domain}
)


# --- transactional messages ------------------------------------------------------------------

_MESSAGE_BODY = {
    "to": "someone@example.com",
    "from": {"email": "app@example.com"},
    "subject": "Hi",
    "text": "Hello",
}

ROUTES.update(
    {
        ("POST", "/v1/messages"): RouteCase(
            "create",
            body=_MESSAGE_BODY,
            reason="template ids of other workspaces are 422 not_found (tested in test_messages)",
        ),
        ("GET", "/v1/messages/{message_id}"): RouteCase("by_id"),
    }
)


async def _message(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.post("/v1/messages", headers=a.headers, json=_MESSAGE_BODY)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


PATH_FACTORIES.update({"message_id": _message})


# Later domains keep their cases in their own modules, which update ROUTES and
# PATH_FACTORIES when imported (the import is at the end: they need both names above).
from tests.support import (  # noqa: E402
    routes_analytics,
    routes_campaigns,
    routes_double_opt_in,
    routes_feedback,
    routes_relays,
    routes_webhooks,
)

__all__ = [
    "PATH_FACTORIES",
    "ROUTES",
    "routes_analytics",
    "routes_campaigns",
    "routes_double_opt_in",
    "routes_feedback",
    "routes_relays",
    "routes_webhooks",
]
