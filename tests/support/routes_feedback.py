"""Route classification cases of this domain: update ``ROUTES`` and ``PATH_FACTORIES``."""

from __future__ import annotations

import httpx

from postroom.context import AppContext
from tests.support.routes import PATH_FACTORIES, ROUTES, RouteCase, Tenant

__all__ = ["PATH_FACTORIES", "ROUTES"]


# --- provider webhooks (SES via SNS, SendGrid, Mailgun, Postmark) ---------------------------

_PROVIDER = "/v1/feedback-providers/{provider}"
_MAILGUN_BODY = {"signing_key": "key-" + "b" * 32}

ROUTES.update(
    {
        ("GET", "/v1/feedback-providers"): RouteCase("collection"),
        ("GET", _PROVIDER): RouteCase("by_id"),
        ("PUT", _PROVIDER): RouteCase(
            "create",
            body=_MAILGUN_BODY,
            reason="keyed by provider name inside the caller's workspace: B's PUT creates "
            "B's own credentials and never touches A's (tested in test_provider_webhooks)",
        ),
        ("DELETE", _PROVIDER): RouteCase("by_id"),
        ("POST", "/webhooks/{provider}/{workspace_id}"): RouteCase(
            "public",
            reason="provider event webhook; each call is checked against that workspace's "
            "credentials (SNS signature and topic, SendGrid ECDSA, Mailgun HMAC, Postmark "
            "Basic) before anything is read from it",
        ),
    }
)


async def _provider(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    response = await client.put(
        "/v1/feedback-providers/mailgun", headers=a.headers, json={"signing_key": "k" * 32}
    )
    assert response.status_code in (200, 201), response.text
    return "mailgun"


PATH_FACTORIES.update({"provider": _provider})


# --- inbound mail kept for inspection (/v1/inbound) ------------------------------------------

ROUTES.update(
    {
        ("GET", "/v1/inbound"): RouteCase("collection"),
        ("GET", "/v1/inbound/{inbound_id}"): RouteCase("by_id"),
        ("DELETE", "/v1/inbound/{inbound_id}"): RouteCase("by_id"),
    }
)


async def _inbound(client: httpx.AsyncClient, ctx: AppContext, a: Tenant) -> str:
    import uuid

    from postroom.feedback import repository as inbound_repository

    async with ctx.db.transaction() as session:
        kept = await inbound_repository.keep(
            session,
            kind="unclassified",
            reason="route classification probe",
            mail_from="someone@example.org",
            rcpt_tos=["info@bounces.postroom.test"],
            data=b"Subject: probe\r\n\r\nhello\r\n",
            keep_bytes=1024,
            received_at=ctx.clock.now(),
            workspace_id=uuid.UUID(str(a.id)),
        )
    return str(kept)


PATH_FACTORIES.update({"inbound_id": _inbound})
