"""Public links in mail: open pixel, click redirect, RFC 8058 one-click unsubscribe, the
unsubscribe and preferences pages, view in browser. The message is built by the
production composer and builder and parsed back, so the links tested are the links sent."""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select

from postroom.context import AppContext
from postroom.delivery.compose import Composer, compiled_for
from postroom.delivery.message import build_message
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.models.platform import Event
from postroom.tracking.tokens import TrackingLinks
from tests.conftest import WorkspaceHandle

HTML = """<html><body><h1>Hi {{ contact.first_name | default("there") }}</h1>
<p><a href="https://example.com/sale?x=1&amp;y=2">Sale</a> <a href="mailto:help@example.com">Help</a>
<a href="#top">Top</a> <a href="{{ unsubscribe_url }}">Unsubscribe</a> <a href="{{ manage_url }}">Preferences</a></p>
</body></html>"""


@dataclass
class Mail:
    delivery_id: uuid.UUID
    contact_id: str
    html: str
    headers: dict[str, str]

    def link(self, pattern: str) -> str:
        found = re.findall(r'(?:href|src)="([^"]+)"', self.html)
        return next(u for u in found if re.search(pattern, u))

    def path(self, pattern: str) -> str:
        parts = urlsplit(self.link(pattern))
        return parts.path


async def _mail(
    client: httpx.AsyncClient, ctx: AppContext, ws: WorkspaceHandle, *, with_lists: bool = True
) -> tuple[Mail, dict[str, str]]:
    lists = {}
    for name in ("Weekly", "Product"):
        lists[name] = (
            await client.post("/v1/lists", headers=ws.headers, json={"name": name})
        ).json()["id"]
    contact = (
        await client.post(
            "/v1/contacts",
            headers=ws.headers,
            json={"email": "reader@example.com", "first_name": "Rae"},
        )
    ).json()
    for list_id in lists.values():
        await client.post(
            f"/v1/lists/{list_id}/subscribe",
            headers=ws.headers,
            json={"contact_ids": [contact["id"]]},
        )
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        send = await create_send(
            session,
            ws.id,  # type: ignore[arg-type]
            SendSpec(
                kind="campaign",
                content={
                    "inline": {
                        "subject": "Hello {{ contact.first_name }}",
                        "html": HTML,
                        "text": None,
                    }
                },
                from_email="news@brand.example",
                from_name="Brand",
                list_ids=[lists["Weekly"]] if with_lists else [],
            ),
            now,
        )
        [delivery_id] = await enqueue(
            session, send, [Recipient("reader@example.com", uuid.UUID(contact["id"]))], now
        )
    composer = Composer(ctx)
    composed = composer.envelope(
        send,
        compiled_for(send, None),
        delivery_id=delivery_id,
        email="reader@example.com",
        contact={"email": "reader@example.com", "first_name": "Rae"},
        contact_id=uuid.UUID(contact["id"]),
        variables=None,
        now=now,
    )
    parsed = email.message_from_bytes(build_message(composed.message), policy=email.policy.default)
    html_part = parsed.get_body(preferencelist=("html",))
    assert html_part is not None
    headers = {k: str(v) for k, v in parsed.items()}
    return Mail(delivery_id, contact["id"], html_part.get_content(), headers), lists


async def _events(ctx: AppContext, kind: str) -> list[Event]:
    async with ctx.db.transaction() as session:
        return list(
            (
                await session.execute(select(Event).where(Event.type == kind).order_by(Event.seq))
            ).scalars()
        )


async def _subscription_status(
    client: httpx.AsyncClient, ws: WorkspaceHandle, list_id: str
) -> dict[str, str]:
    rows = (await client.get(f"/v1/lists/{list_id}/subscriptions", headers=ws.headers)).json()[
        "data"
    ]
    return {r["email"]: r["status"] for r in rows}


async def test_message_links(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    mail, _lists = await _mail(client, ctx, workspace)
    hrefs = re.findall(r'href="([^"]+)"', mail.html)
    assert "mailto:help@example.com" in hrefs
    assert "#top" in hrefs
    assert sum("/t/c/" in h for h in hrefs) == 1  # only the sale link is tracked
    assert any("/u/" in h for h in hrefs)  # our own links are left alone
    assert any("/p/" in h for h in hrefs)
    assert "/t/o/" in mail.link("/t/o/")
    assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/u/" in mail.headers["List-Unsubscribe"]
    assert mail.headers["X-Postroom-Delivery"] == str(mail.delivery_id)
    assert "Hi Rae" in mail.html


async def test_open_pixel_records_an_event(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    mail, _ = await _mail(client, ctx, workspace)
    response = await client.get(mail.path("/t/o/"), headers={"User-Agent": "Mozilla/5.0"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"]
    assert await _events(ctx, "email.opened") == []  # buffered …
    assert await ctx.engagement.flush() == 1  # … and written in a batch
    [opened] = await _events(ctx, "email.opened")
    assert opened.resource_id == mail.delivery_id
    assert str(opened.contact_id) == mail.contact_id
    assert opened.data["user_agent"] == "Mozilla/5.0"
    forged = await client.get("/t/o/AAAA.BBBB")
    assert forged.status_code == 200  # still an image, but nothing recorded
    assert await ctx.engagement.flush() == 0


async def test_click_redirects_only_to_the_signed_url(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    mail, _ = await _mail(client, ctx, workspace)
    path = mail.path("/t/c/")
    response = await client.get(path)
    assert response.status_code == 302
    assert response.headers["location"] == "https://example.com/sale?x=1&y=2"
    await ctx.engagement.flush()
    [clicked] = await _events(ctx, "email.clicked")
    assert clicked.data["url"] == "https://example.com/sale?x=1&y=2"
    assert len(clicked.data["link_id"]) >= 8
    token = path.rsplit("/", 1)[1]
    body, mac = token.rsplit(".", 1)
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    forged = await client.get(f"/t/c/{tampered}")
    assert forged.status_code == 404
    assert "location" not in forged.headers
    assert (await client.get("/t/c/garbage")).status_code == 404


async def test_one_click_unsubscribe_as_a_mailbox_provider_sends_it(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    mail, lists = await _mail(client, ctx, workspace)
    url = mail.headers["List-Unsubscribe"].split(",")[0].strip().strip("<>")
    path = urlsplit(url).path
    # GET shows a page and changes nothing
    page = await client.get(path)
    assert page.status_code == 200
    assert "Unsubscribe reader@example.com?" in page.text
    assert (await _subscription_status(client, workspace, lists["Weekly"]))[
        "reader@example.com"
    ] == "subscribed"
    # exactly the request of RFC 8058: form-encoded body, no cookies, no redirect following
    response = await client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert "location" not in response.headers
    assert (await _subscription_status(client, workspace, lists["Weekly"]))[
        "reader@example.com"
    ] == "unsubscribed"
    assert (await _subscription_status(client, workspace, lists["Product"]))[
        "reader@example.com"
    ] == "subscribed"
    contact = (
        await client.get(f"/v1/contacts/{mail.contact_id}", headers=workspace.headers)
    ).json()
    assert contact["status"] == "subscribed"  # only the send's list
    assert len(await _events(ctx, "email.unsubscribed")) == 1
    again = await client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert again.status_code == 200
    assert len(await _events(ctx, "email.unsubscribed")) == 1  # idempotent


async def test_unsubscribe_page_and_undo(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    mail, lists = await _mail(client, ctx, workspace)
    path = mail.path("/u/")
    done = await client.post(path, data={"action": "unsubscribe"})
    assert "You are unsubscribed" in done.text
    assert (await _subscription_status(client, workspace, lists["Weekly"]))[
        "reader@example.com"
    ] == "unsubscribed"
    undone = await client.post(path, data={"action": "resubscribe"})
    assert "subscribed again" in undone.text
    assert (await _subscription_status(client, workspace, lists["Weekly"]))[
        "reader@example.com"
    ] == "subscribed"


async def test_send_without_lists_unsubscribes_from_all_marketing(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    mail, lists = await _mail(client, ctx, workspace, with_lists=False)
    path = mail.path("/u/")
    await client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    contact = (
        await client.get(f"/v1/contacts/{mail.contact_id}", headers=workspace.headers)
    ).json()
    assert contact["status"] == "unsubscribed"
    suppressions = (
        await client.get("/v1/suppressions/reader@example.com", headers=workspace.headers)
    ).json()
    assert [s["reason"] for s in suppressions] == ["unsubscribe"]
    for list_id in lists.values():
        assert (await _subscription_status(client, workspace, list_id))[
            "reader@example.com"
        ] == "unsubscribed"
    # undo restores status, suppression and lists
    await client.post(path, data={"action": "resubscribe"})
    contact = (
        await client.get(f"/v1/contacts/{mail.contact_id}", headers=workspace.headers)
    ).json()
    assert contact["status"] == "subscribed"
    assert (
        await client.get("/v1/suppressions/reader@example.com", headers=workspace.headers)
    ).status_code == 404
    for list_id in lists.values():
        assert (await _subscription_status(client, workspace, list_id))[
            "reader@example.com"
        ] == "subscribed"


async def test_preferences_page(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    mail, lists = await _mail(client, ctx, workspace)
    path = mail.path("/p/")
    page = await client.get(path)
    assert "Weekly" in page.text
    assert "Product" in page.text
    saved = await client.post(path, data={"action": "save", "list": [lists["Product"]]})
    assert "saved" in saved.text
    assert (await _subscription_status(client, workspace, lists["Weekly"]))[
        "reader@example.com"
    ] == "unsubscribed"
    assert (await _subscription_status(client, workspace, lists["Product"]))[
        "reader@example.com"
    ] == "subscribed"
    await client.post(path, data={"action": "unsubscribe_all"})
    contact = (
        await client.get(f"/v1/contacts/{mail.contact_id}", headers=workspace.headers)
    ).json()
    assert contact["status"] == "unsubscribed"
    assert (await client.get(path.replace("/p/", "/p/x"))).status_code == 404


async def test_view_in_browser(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    mail, _ = await _mail(client, ctx, workspace)
    links = TrackingLinks(ctx)
    ref = links.read("unsubscribe", mail.path("/u/").rsplit("/", 1)[1])
    assert ref is not None
    assert ref.delivery_id == mail.delivery_id
    response = await client.get(urlsplit(links.view_url(ref)).path)
    assert response.status_code == 200
    assert "Hi Rae" in response.text
    assert "/t/o/" not in response.text  # no open pixel on the web view
    assert (await client.get("/v/forged.token")).status_code == 404
