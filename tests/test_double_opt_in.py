"""Double opt-in on both databases, with the real delivery engine mailing the SMTP
fixture: every subscribe path queues a confirmation in its own transaction, the link in
the received message shows a page on GET and confirms on POST, forged links are 404,
resend, expiry with the clock moved, and audiences leave unconfirmed subscribers out."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from postroom.clock import FrozenClock
from postroom.contacts.double_opt_in import PURPOSE, ConfirmRef, read_token
from postroom.contacts.lists_service import ListService
from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.relay_url import parse_relay_url
from postroom.delivery.smtp_pool import SmtpRelayPool
from postroom.delivery.transports import SingleTransport
from postroom.jobs.runner import JobRunner
from postroom.models.contacts import ContactList, Subscription
from postroom.models.delivery import PRIORITY_TRANSACTIONAL, Delivery, Send
from postroom.models.platform import Event
from postroom.wiring import build_scheduler
from tests.conftest import WorkspaceHandle
from tests.support.smtp_server import ReceivedMessage, TestSmtpServer

Deliver = Callable[[], Any]


@pytest.fixture
async def deliver(ctx: AppContext, smtp_server: TestSmtpServer) -> AsyncIterator[Deliver]:
    """Runs the production delivery engine against the SMTP fixture until the queue is
    empty; returns the outcome counts."""
    engine = DeliveryEngine(
        ctx,
        SingleTransport(
            SmtpRelayPool(
                parse_relay_url(smtp_server.url + "?timeout=5"),
                max_connections=2,
                max_messages_per_connection=100,
            )
        ),
        owner="doi-test",
        batch_size=50,
        concurrency=1,
    )

    async def run() -> Any:
        return await engine.run_until_idle()

    yield run
    await engine.close()


async def _list(client: httpx.AsyncClient, ws: WorkspaceHandle, name: str = "Weekly") -> str:
    response = await client.post(
        "/v1/lists", headers=ws.headers, json={"name": name, "double_opt_in": True}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _contact(client: httpx.AsyncClient, ws: WorkspaceHandle, email: str) -> str:
    response = await client.post(
        "/v1/contacts", headers=ws.headers, json={"email": email, "first_name": "Dee"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _status(ctx: AppContext, list_id: str, contact_id: str) -> str | None:
    async with ctx.db.transaction() as session:
        row = await session.get(Subscription, (uuid.UUID(list_id), uuid.UUID(contact_id)))
        return None if row is None else row.status


async def _confirmations(ctx: AppContext, contact_id: str) -> list[tuple[Delivery, Send]]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(
            select(Delivery, Send)
            .join(Send, Send.id == Delivery.send_id)
            .where(Delivery.contact_id == uuid.UUID(contact_id))
            .order_by(Delivery.id)
        )
        return [(row[0], row[1]) for row in rows.all()]


async def _events(ctx: AppContext, kind: str, contact_id: str) -> list[Event]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(
            select(Event)
            .where(Event.type == kind, Event.contact_id == uuid.UUID(contact_id))
            .order_by(Event.seq)
        )
        return list(rows.scalars())


def _link(message: ReceivedMessage) -> str:
    """The confirmation path from the received mail, read from both parts."""
    parsed = message.message
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and html is not None
    in_text = re.findall(r"https://postroom\.test(/c/[A-Za-z0-9_\-.]+)", text.get_content())
    in_html = re.findall(r'href="https://postroom\.test(/c/[^"]+)"', html.get_content())
    assert in_text and in_text == in_html, (in_text, in_html)
    return str(in_text[0])


async def _audience(client: httpx.AsyncClient, ws: WorkspaceHandle, list_id: str) -> int:
    response = await client.post(
        "/v1/audiences/preview", headers=ws.headers, json={"audience": {"lists": [list_id]}}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


async def test_subscribe_mail_link_page_and_confirm(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    deliver: Deliver,
    clock: FrozenClock,
) -> None:
    list_id = await _list(client, workspace)
    contact_id = await _contact(client, workspace, "dee@example.com")
    response = await client.post(
        f"/v1/lists/{list_id}/subscribe",
        headers=workspace.headers,
        json={"contact_ids": [contact_id]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["changed"] == 1
    assert await _status(ctx, list_id, contact_id) == "unconfirmed"
    assert await _audience(client, workspace, list_id) == 0

    [(delivery, send)] = await _confirmations(ctx, contact_id)
    assert (send.kind, send.purpose, send.priority) == (
        "transactional",
        "transactional",
        PRIORITY_TRANSACTIONAL,
    )
    assert delivery.priority == PRIORITY_TRANSACTIONAL and delivery.status == "queued"
    assert not send.track_clicks and not send.track_opens

    outcomes = await deliver()
    assert outcomes["sent"] == 1
    [message] = smtp_server.messages
    assert message.rcpt_tos == ["dee@example.com"]
    assert message.message["Subject"] == "Please confirm your subscription to Weekly"
    assert "List-Unsubscribe" not in message.message  # transactional, not marketing
    path = _link(message)

    # GET only shows the page: link scanners prefetch, and must confirm nothing.
    clock.advance(timedelta(minutes=5))
    for _ in range(2):
        page = await client.get(path)
        assert page.status_code == 200
        assert 'method="post"' in page.text and "dee@example.com" in page.text
        assert page.headers["cache-control"].startswith("no-store")
    assert await _status(ctx, list_id, contact_id) == "unconfirmed"
    before = len(await _events(ctx, "contact.subscribed", contact_id))

    done = await client.post(path, headers={"user-agent": "test-browser"})
    assert done.status_code == 200
    assert "You are subscribed" in done.text
    assert await _status(ctx, list_id, contact_id) == "subscribed"
    async with ctx.db.transaction() as session:
        row = await session.get(Subscription, (uuid.UUID(list_id), uuid.UUID(contact_id)))
        assert row is not None
        assert row.confirmed_at == clock.now() and row.subscribed_at == clock.now()
    events = await _events(ctx, "contact.subscribed", contact_id)
    assert len(events) == before + 1
    assert events[-1].data["source"] == "double_opt_in"
    assert events[-1].data["status"] == "subscribed"
    assert events[-1].data["user_agent"] == "test-browser"
    assert events[-1].resource_id == uuid.UUID(list_id)
    assert await _audience(client, workspace, list_id) == 1

    # Again: a friendly page, nothing changes, nothing is recorded twice.
    again = await client.post(path)
    assert again.status_code == 200 and "Already confirmed" in again.text
    assert "Already confirmed" in (await client.get(path)).text
    assert len(await _events(ctx, "contact.subscribed", contact_id)) == before + 1


async def test_every_subscribe_path_queues_a_confirmation(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    list_id = await _list(client, workspace)
    plain = (
        await client.post("/v1/lists", headers=workspace.headers, json={"name": "Plain"})
    ).json()["id"]
    h = workspace.headers

    one = await client.post(
        "/v1/contacts", headers=h, json={"email": "one@example.com", "lists": [list_id]}
    )
    assert one.status_code == 201, one.text
    bulk = await client.post(
        "/v1/contacts/bulk",
        headers=h,
        json={
            "contacts": [{"email": "b1@example.com"}, {"email": "b2@example.com"}],
            "lists": [list_id],
        },
    )
    assert bulk.status_code == 200, bulk.text
    await client.post(
        "/v1/contacts", headers=h, json={"email": "mail@example.com", "lists": [plain]}
    )
    subscribed = await client.post(
        f"/v1/lists/{list_id}/subscribe", headers=h, json={"emails": ["mail@example.com"]}
    )
    assert subscribed.json()["changed"] == 1
    imported = await client.post(
        "/v1/imports",
        headers={**h, "content-type": "text/csv"},
        params={"list_id": list_id},
        content=b"email\nimp1@example.com\nimp2@example.com\n",
    )
    assert imported.status_code == 202, imported.text
    await client.post("/v1/contacts", headers=h, json={"email": "filtered@example.com"})
    by_filter = await client.post(
        f"/v1/lists/{list_id}/subscribe",
        headers=h,
        json={
            "filter": {
                "groups": [
                    {
                        "filters": [
                            {"field": "email", "operator": "startsWith", "value": "filtered@"}
                        ]
                    }
                ]
            }
        },
    )
    assert by_filter.status_code == 202, by_filter.text
    runner = JobRunner(ctx, ctx.jobs)
    while await runner.run_once():
        pass

    emails = [
        "one@example.com",
        "b1@example.com",
        "b2@example.com",
        "mail@example.com",
        "imp1@example.com",
        "imp2@example.com",
        "filtered@example.com",
    ]
    subscriptions = (
        await client.get(f"/v1/lists/{list_id}/subscriptions", headers=h, params={"limit": 50})
    ).json()["data"]
    assert sorted(s["email"] for s in subscriptions) == sorted(emails)
    assert {s["status"] for s in subscriptions} == {"unconfirmed"}
    for row in subscriptions:
        queued = await _confirmations(ctx, row["contact_id"])
        assert len(queued) == 1, row["email"]
        delivery, send = queued[0]
        assert send.list_ids == [list_id] and delivery.email == row["email"]
        assert delivery.variables is not None
        assert delivery.variables["confirm_url"].startswith("https://postroom.test/c/")
        assert delivery.variables["list_name"] == "Weekly"

    # Subscribing again while unconfirmed, or to a list without double opt-in, mails nothing.
    one_id = one.json()["id"]
    again = await client.post(
        f"/v1/lists/{list_id}/subscribe", headers=h, json={"contact_ids": [one_id]}
    )
    assert again.json()["changed"] == 0
    await client.post(f"/v1/lists/{plain}/subscribe", headers=h, json={"contact_ids": [one_id]})
    assert len(await _confirmations(ctx, one_id)) == 1


async def test_confirmation_is_queued_in_the_subscribing_transaction(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    list_id = await _list(client, workspace)
    contact_id = await _contact(client, workspace, "rollback@example.com")

    class Abort(Exception):
        pass

    async def subscribe_then_fail() -> None:
        async with ctx.db.transaction() as session:
            service = ListService(session, workspace.id, ctx.clock.now(), ctx=ctx)  # type: ignore[arg-type]
            row = await service.get(uuid.UUID(list_id))
            assert await service.subscribe(row, [uuid.UUID(contact_id)], "api")
            assert len((await session.execute(select(Delivery.id))).all()) == 1
            raise Abort

    with pytest.raises(Abort):
        await subscribe_then_fail()
    assert await _status(ctx, list_id, contact_id) is None
    assert await _confirmations(ctx, contact_id) == []
    async with ctx.db.transaction() as session:
        service = ListService(session, workspace.id, ctx.clock.now())  # type: ignore[arg-type]
        row = await service.get(uuid.UUID(list_id))
        with pytest.raises(RuntimeError):  # no way to sign the link: refuse, never skip it
            await service.subscribe(row, [uuid.UUID(contact_id)], "api")


async def test_forged_and_foreign_tokens_are_404(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, deliver: Deliver
) -> None:
    list_id = await _list(client, workspace)
    contact_id = await _contact(client, workspace, "forge@example.com")
    await client.post(
        f"/v1/lists/{list_id}/subscribe",
        headers=workspace.headers,
        json={"contact_ids": [contact_id]},
    )
    [(delivery, _send)] = await _confirmations(ctx, contact_id)
    assert delivery.variables is not None
    good = urlsplit(delivery.variables["confirm_url"]).path.removeprefix("/c/")
    ref = read_token(ctx, good)
    assert ref is not None and ref.contact_id == uuid.UUID(contact_id)
    body, _dot, mac = good.rpartition(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    other_contact = ConfirmRef(ref.workspace_id, ref.list_id, uuid.uuid4(), ref.issued_at)
    forged = [
        "nonsense",
        f"{body}.{flipped}",
        # The right payload signed for another purpose, and a payload we never signed.
        ctx.signer("unsubscribe").sign(ref.pack()),
        body + "." + mac[::-1],
        other_contact.pack().hex(),
    ]
    for token in forged:
        for method in ("GET", "POST"):
            response = await client.request(method, f"/c/{token}")
            assert response.status_code == 404, (token, method)
            assert "Link not valid" in response.text
    assert await _status(ctx, list_id, contact_id) == "unconfirmed"
    # A correctly signed link for a subscription that does not exist changes nothing.
    stray = ctx.signer(PURPOSE).sign(other_contact.pack())
    response = await client.post(f"/c/{stray}")
    assert response.status_code == 410 and "Nothing to confirm" in response.text


async def test_resend(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    deliver: Deliver,
    make_workspace: Any,
) -> None:
    list_id = await _list(client, workspace)
    contact_id = await _contact(client, workspace, "again@example.com")
    resend = f"/v1/lists/{list_id}/subscriptions/{contact_id}/resend-confirmation"
    missing = await client.post(resend, headers=workspace.headers)
    assert missing.status_code == 404  # not on the list at all
    await client.post(
        f"/v1/lists/{list_id}/subscribe",
        headers=workspace.headers,
        json={"contact_ids": [contact_id]},
    )
    response = await client.post(resend, headers=workspace.headers)
    assert response.status_code == 202, response.text
    assert response.json()["queued"] == 1
    assert (await deliver())["sent"] == 2
    first, second = (_link(m) for m in smtp_server.messages)
    assert all(m.rcpt_tos == ["again@example.com"] for m in smtp_server.messages)
    # The first mail's link still works after a resend.
    assert (await client.post(first)).status_code == 200
    assert await _status(ctx, list_id, contact_id) == "subscribed"
    assert "Already confirmed" in (await client.get(second)).text
    conflict = await client.post(resend, headers=workspace.headers)
    assert conflict.status_code == 409
    assert "subscribed" in conflict.json()["detail"]
    other = await make_workspace("other")
    assert (await client.post(resend, headers=other.headers)).status_code == 404


async def test_unconfirmed_subscriptions_expire(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    clock: FrozenClock,
    deliver: Deliver,
    smtp_server: TestSmtpServer,
) -> None:
    hours = ctx.settings.double_opt_in_expiry_hours
    assert hours == 72
    list_id = await _list(client, workspace)
    h = workspace.headers
    old = await _contact(client, workspace, "old@example.com")
    renewed = await _contact(client, workspace, "renewed@example.com")
    confirmed = await _contact(client, workspace, "confirmed@example.com")
    await client.post(
        f"/v1/lists/{list_id}/subscribe", headers=h, json={"contact_ids": [old, renewed, confirmed]}
    )
    await deliver()
    links = {m.rcpt_tos[0]: _link(m) for m in smtp_server.messages}
    assert (await client.post(links["confirmed@example.com"])).status_code == 200
    scheduler = build_scheduler(ctx)

    clock.advance(timedelta(hours=hours - 2))
    resend = f"/v1/lists/{list_id}/subscriptions/{renewed}/resend-confirmation"
    assert (await client.post(resend, headers=h)).status_code == 202
    assert (await scheduler.tick())["expire_unconfirmed"] == 0

    clock.advance(timedelta(hours=3))  # old: 73 h unconfirmed; renewed: 3 h since resend
    # The first link is past its life even before the sweep runs.
    expired = await client.get(links["renewed@example.com"])
    assert expired.status_code == 410 and "expired" in expired.text
    assert (await client.post(links["renewed@example.com"])).status_code == 410
    assert await _status(ctx, list_id, renewed) == "unconfirmed"

    assert (await scheduler.tick())["expire_unconfirmed"] == 1
    assert await _status(ctx, list_id, old) is None
    assert await _status(ctx, list_id, renewed) == "unconfirmed"
    assert await _status(ctx, list_id, confirmed) == "subscribed"
    gone = await client.post(links["old@example.com"])
    assert gone.status_code == 410 and await _status(ctx, list_id, old) is None
    assert (await scheduler.tick())["expire_unconfirmed"] == 0

    # The resent link confirms within its own window.
    await deliver()
    fresh = _link(smtp_server.messages[-1])
    assert smtp_server.messages[-1].rcpt_tos == ["renewed@example.com"]
    assert (await client.post(fresh)).status_code == 200
    assert await _status(ctx, list_id, renewed) == "subscribed"


async def test_custom_confirmation_mail(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    deliver: Deliver,
) -> None:
    list_id = await _list(client, workspace, "Digest")
    url = f"/v1/lists/{list_id}/confirmation"
    default = (await client.get(url, headers=workspace.headers)).json()
    assert default["custom"] is False and default["subject"] is None
    no_link = await client.put(
        url, headers=workspace.headers, json={"subject": "Hi", "text": "no link here"}
    )
    assert no_link.status_code == 422
    assert no_link.json()["errors"][0]["code"] == "confirm_url_missing"
    bad_from = await client.put(
        url,
        headers=workspace.headers,
        json={"subject": "Hi", "text": "{{ confirm_url }}", "from_email": "not-an-address"},
    )
    assert bad_from.status_code == 422
    assert bad_from.json()["errors"][0]["field"] == "from_email"
    custom = {
        "subject": "One click for {{ list_name }}, {{ contact.first_name }}",
        "html": '<p><a href="{{ confirm_url }}">Yes please</a></p>',
        "text": "Confirm: {{ confirm_url }}",
        "from_email": "hello@brand.example",
        "from_name": "Brand",
    }
    saved = await client.put(url, headers=workspace.headers, json=custom)
    assert saved.status_code == 200, saved.text
    assert saved.json()["custom"] is True and saved.json()["from_email"] == "hello@brand.example"
    contact_id = await _contact(client, workspace, "dig@example.com")
    await client.post(
        f"/v1/lists/{list_id}/subscribe",
        headers=workspace.headers,
        json={"contact_ids": [contact_id]},
    )
    await deliver()
    [message] = smtp_server.messages
    assert message.message["Subject"] == "One click for Digest, Dee"
    assert message.message["From"] == "Brand <hello@brand.example>"
    assert (await client.post(_link(message))).status_code == 200
    reset = await client.put(url, headers=workspace.headers, json={})
    assert reset.json()["custom"] is False


async def test_list_with_double_opt_in_off_mails_nothing(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    response = await client.post("/v1/lists", headers=workspace.headers, json={"name": "Open"})
    list_id = response.json()["id"]
    contact_id = await _contact(client, workspace, "open@example.com")
    await client.post(
        f"/v1/lists/{list_id}/subscribe",
        headers=workspace.headers,
        json={"contact_ids": [contact_id]},
    )
    assert await _status(ctx, list_id, contact_id) == "subscribed"
    assert await _confirmations(ctx, contact_id) == []
    async with ctx.db.transaction() as session:
        assert (await session.get(ContactList, uuid.UUID(list_id))) is not None
