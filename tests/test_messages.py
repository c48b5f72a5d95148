"""Transactional messages over HTTP on both databases: single and batch requests,
per-recipient rejections, idempotent replays, validation, templates with locale variants,
and the history a message shows once the engine has sent it through the SMTP fixture."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from sqlalchemy import func, select

from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.transports import SingleTransport
from postroom.models.delivery import PRIORITY_TRANSACTIONAL, Delivery, Send
from tests.conftest import MakeWorkspace, WorkspaceHandle
from tests.support.smtp_server import TestSmtpServer
from tests.test_api_keys import assert_problem
from tests.test_engine import received_by, relay_pool

SENDER = {"email": "app@shop.example", "name": "Shop"}


async def _post(
    client: httpx.AsyncClient, ws: WorkspaceHandle, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post("/v1/messages", headers={**ws.headers, **headers}, json=body)


def _inline(**fields: Any) -> dict[str, Any]:
    return {"from": SENDER, "subject": "Your code", "text": "Code {{ code }}", **fields}


async def _send_all(ctx: AppContext, smtp: TestSmtpServer) -> Counter[str]:
    engine = DeliveryEngine(ctx, SingleTransport(relay_pool(smtp.url)), owner="test", batch_size=50)
    try:
        return await engine.run_until_idle()
    finally:
        await engine.close()


async def _sends(ctx: AppContext) -> int:
    async with ctx.db.transaction() as session:
        return int((await session.execute(select(func.count()).select_from(Send))).scalar_one())


async def test_a_single_message_is_queued_sent_and_shows_its_history(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
) -> None:
    response = await _post(
        client,
        workspace,
        _inline(
            to={"email": "Buyer@Example.com", "name": "Bea Buyer"},
            variables={"code": "4321"},
            reply_to="help@shop.example",
            tags=["otp"],
            metadata={"order": 7},
        ),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    [recipient] = body["recipients"]
    assert (body["queued"], body["rejected"]) == (1, 0)
    assert recipient["status"] == "queued" and recipient["email"] == "Buyer@example.com"
    async with ctx.db.transaction() as session:
        send = (await session.execute(select(Send))).scalar_one()
        delivery = (await session.execute(select(Delivery))).scalar_one()
    assert (send.kind, send.purpose, send.priority) == (
        "transactional",
        "transactional",
        PRIORITY_TRANSACTIONAL,
    )
    assert str(send.id) == body["id"] and str(delivery.id) == recipient["delivery_id"]
    assert delivery.contact_id is None  # not a contact: fine for transactional mail
    assert (delivery.priority, delivery.status) == (PRIORITY_TRANSACTIONAL, "queued")

    assert await _send_all(ctx, smtp_server) == Counter(sent=1)
    [message] = smtp_server.messages
    parsed = message.message
    assert str(parsed["To"]) == "Bea Buyer <Buyer@example.com>"
    assert str(parsed["From"]) == "Shop <app@shop.example>"
    assert str(parsed["Reply-To"]) == "help@shop.example"
    assert parsed.get_body(("plain",)).get_content().strip() == "Code 4321"  # type: ignore[union-attr]
    assert parsed["List-Unsubscribe"] is None

    shown = await client.get(f"/v1/messages/{body['id']}", headers=workspace.headers)
    assert shown.status_code == 200, shown.text
    view = shown.json()
    assert view["from"] == {"email": "app@shop.example", "name": "Shop"}
    assert (view["subject"], view["tags"], view["metadata"]) == ("Your code", ["otp"], {"order": 7})
    assert view["counts"] == {"sent": 1}
    [row] = view["deliveries"]
    assert row["status"] == "sent" and row["attempts"] == 1
    assert row["smtp_response"].startswith("250")
    assert row["message_id"] == parsed["Message-ID"]
    assert row["sent_at"] is not None and row["next_attempt_at"] is None
    assert [e["type"] for e in row["events"]] == ["email.queued", "email.sent"]


async def test_a_batch_rejects_recipients_one_by_one_and_merges_contacts(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
) -> None:
    ann = await client.post(
        "/v1/contacts",
        headers=workspace.headers,
        json={"email": "ann@example.com", "first_name": "Ann"},
    )
    for address, reason in (
        ("bounced@example.com", "bounce"),
        ("left@example.com", "unsubscribe"),
        ("blocked@example.com", "manual"),
    ):
        added = await client.post(
            "/v1/suppressions", headers=workspace.headers, json={"email": address, "reason": reason}
        )
        assert added.status_code == 201, added.text
    body = {
        "from": SENDER,
        "subject": "Hello {{ contact.first_name | default(to_name) }}",
        "html": "<p>Hi {{ contact.first_name | default(to_name) }}, code {{ code }}</p>",
        "variables": {"code": "shared"},
        "batch": [
            {"to": "ann@example.com", "variables": {"code": "A1"}},
            {"to": {"email": "bob@example.com", "name": "Bob"}},
            {"to": "not-an-email"},
            {"to": "ANN@example.com"},
            {"to": "bounced@example.com"},
            {"to": "left@example.com"},
            {"to": "blocked@example.com"},
        ],
    }
    response = await _post(client, workspace, body)
    assert response.status_code == 202, response.text
    results = response.json()["recipients"]
    assert [(r["email"], r["status"], r["reason"]) for r in results] == [
        ("ann@example.com", "queued", None),
        ("bob@example.com", "queued", None),
        ("not-an-email", "rejected", "invalid_email"),
        ("ANN@example.com", "rejected", "duplicate"),
        ("bounced@example.com", "rejected", "suppressed"),
        ("left@example.com", "queued", None),  # an unsubscribe does not stop transactional mail
        ("blocked@example.com", "rejected", "suppressed"),
    ]
    assert "bounce" in results[4]["detail"] and "manual" in results[6]["detail"]
    assert all(r["delivery_id"] is None for r in results if r["status"] == "rejected")

    async with ctx.db.transaction() as session:
        contacts = dict((await session.execute(select(Delivery.email, Delivery.contact_id))).all())
    assert str(contacts["ann@example.com"]) == ann.json()["id"]
    assert contacts["bob@example.com"] is None

    assert await _send_all(ctx, smtp_server) == Counter(sent=3)
    got = {rcpt: messages[0].message for rcpt, messages in received_by(smtp_server).items()}
    assert set(got) == {"ann@example.com", "bob@example.com", "left@example.com"}
    assert got["ann@example.com"]["Subject"] == "Hello Ann"
    assert "Hi Ann, code A1" in got["ann@example.com"].get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Hi Bob, code shared" in got["bob@example.com"].get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert str(got["bob@example.com"]["To"]) == "Bob <bob@example.com>"


async def test_an_idempotency_key_replays_the_answer_without_a_second_send(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    body = _inline(to="once@example.com", variables={"code": "1"})
    first = await _post(client, workspace, body, **{"Idempotency-Key": "order-7-otp"})
    again = await _post(client, workspace, body, **{"Idempotency-Key": "order-7-otp"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert await _sends(ctx) == 1
    other = await _post(client, workspace, body, **{"Idempotency-Key": "order-8-otp"})
    assert other.json()["id"] != first.json()["id"]
    assert await _sends(ctx) == 2


async def test_invalid_requests_are_422_and_create_nothing(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    too_many = _inline(batch=[{"to": f"r{i}@example.com"} for i in range(101)])
    assert_problem(await _post(client, workspace, too_many), 422)
    no_content = {"from": SENDER, "to": "a@example.com"}
    assert assert_problem(await _post(client, workspace, no_content), 422)["errors"] == [
        {
            "field": "body",
            "message": "give one of template_id, template_version_id or subject with html/text",
            "code": "content_required",
        }
    ]
    both = _inline(to="a@example.com", batch=[{"to": "b@example.com"}])
    assert_problem(await _post(client, workspace, both), 422)
    neither = _inline()
    assert_problem(await _post(client, workspace, neither), 422)
    no_body = {"from": SENDER, "to": "a@example.com", "subject": "Only a subject"}
    assert_problem(await _post(client, workspace, no_body), 422)
    two_sources = _inline(to="a@example.com", template_id="00000000-0000-7000-8000-000000000000")
    assert_problem(await _post(client, workspace, two_sources), 422)
    bad_sender = _inline(to="a@example.com", **{"from": {"email": "nobody"}})
    problem = assert_problem(await _post(client, workspace, bad_sender), 422)
    assert problem["errors"][0]["field"] == "from.email"  # type: ignore[index]
    broken = _inline(to="a@example.com", text="Code {{ code ")
    problem = assert_problem(await _post(client, workspace, broken), 422)
    assert problem["errors"][0]["code"] == "template_invalid"  # type: ignore[index]
    missing_from = {"to": "a@example.com", "subject": "s", "text": "t"}
    assert_problem(await _post(client, workspace, missing_from), 422)
    assert await _sends(ctx) == 0

    # A bad recipient address is that recipient's rejection, not the request's.
    bad_to = await _post(client, workspace, _inline(to="not an address"))
    assert bad_to.status_code == 202
    assert bad_to.json()["recipients"][0]["reason"] == "invalid_email"
    assert bad_to.json()["queued"] == 0


async def _template(
    client: httpx.AsyncClient, ws: WorkspaceHandle, versions: dict[str, tuple[str, str]]
) -> tuple[str, dict[str, str]]:
    created = await client.post(
        "/v1/templates",
        headers=ws.headers,
        json={"name": "Receipt", "kind": "transactional", "default_locale": "en"},
    )
    assert created.status_code == 201, created.text
    template_id = created.json()["id"]
    ids: dict[str, str] = {}
    for locale, (subject, html) in versions.items():
        draft = await client.post(
            f"/v1/templates/{template_id}/versions",
            headers=ws.headers,
            json={"subject": subject, "html": html, "locale": locale},
        )
        assert draft.status_code == 201, draft.text
        ids[locale] = draft.json()["id"]
    return template_id, ids


async def _publish(
    client: httpx.AsyncClient, ws: WorkspaceHandle, template_id: str, version_id: str
) -> None:
    response = await client.post(
        f"/v1/templates/{template_id}/versions/{version_id}/publish", headers=ws.headers
    )
    assert response.status_code == 200, response.text


async def test_template_messages_freeze_the_published_locale_variants(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
) -> None:
    template_id, versions = await _template(
        client,
        workspace,
        {
            "en": ("Receipt {{ order }}", "<p>Thanks {{ contact.first_name }}</p>"),
            "fr": ("Reçu {{ order }}", "<p>Merci {{ contact.first_name }}</p>"),
        },
    )
    unpublished = _inline(to="a@example.com", subject=None, text=None, template_id=template_id)
    problem = assert_problem(await _post(client, workspace, unpublished), 422)
    assert problem["errors"][0]["code"] == "not_published"  # type: ignore[index]
    draft = {"from": SENDER, "to": "a@example.com", "template_version_id": versions["en"]}
    assert_problem(await _post(client, workspace, draft), 422)
    for version_id in versions.values():
        await _publish(client, workspace, template_id, version_id)
    await client.post(
        "/v1/contacts",
        headers=workspace.headers,
        json={"email": "marie@example.com", "first_name": "Marie", "locale": "fr-CA"},
    )
    body = {
        "from": SENDER,
        "template_id": template_id,
        "variables": {"order": "A-7"},
        "batch": [{"to": "marie@example.com"}, {"to": "guest@example.com"}],
    }
    response = await _post(client, workspace, body)
    assert response.status_code == 202, response.text
    # Publishing a new English version afterwards does not change what this message sends.
    newer = await client.post(
        f"/v1/templates/{template_id}/versions",
        headers=workspace.headers,
        json={"subject": "Changed", "html": "<p>Changed</p>", "locale": "en"},
    )
    await _publish(client, workspace, template_id, newer.json()["id"])

    assert await _send_all(ctx, smtp_server) == Counter(sent=2)
    got = {rcpt: messages[0].message for rcpt, messages in received_by(smtp_server).items()}
    assert got["marie@example.com"]["Subject"] == "Reçu A-7"
    assert "Merci Marie" in got["marie@example.com"].get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert got["guest@example.com"]["Subject"] == "Receipt A-7"

    view = (
        await client.get(f"/v1/messages/{response.json()['id']}", headers=workspace.headers)
    ).json()
    assert view["template_id"] == template_id
    assert view["template_version_ids"] == versions
    assert view["subject"] is None

    exact = {"from": SENDER, "to": "x@example.com", "template_version_id": versions["fr"]}
    assert (await _post(client, workspace, exact)).status_code == 202


async def test_messages_stay_in_their_workspace_and_need_their_scopes(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    make_workspace: MakeWorkspace,
    make_key: Any,
) -> None:
    other = await make_workspace("other")
    template_id, versions = await _template(client, workspace, {"en": ("Hi", "<p>Hi</p>")})
    await _publish(client, workspace, template_id, versions["en"])
    sent = await _post(client, workspace, _inline(to="a@example.com"))
    message_id = sent.json()["id"]

    assert_problem(await client.get(f"/v1/messages/{message_id}", headers=other.headers), 404)
    assert_problem(await client.get("/v1/messages/not-a-uuid", headers=workspace.headers), 404)
    foreign = {"from": SENDER, "to": "a@example.com", "template_id": template_id}
    problem = assert_problem(await _post(client, other, foreign), 422)
    assert problem["errors"][0]["code"] == "not_found"  # type: ignore[index]
    foreign_version = {"from": SENDER, "to": "a@example.com", "template_version_id": versions["en"]}
    assert_problem(await _post(client, other, foreign_version), 422)

    reader = {"Authorization": f"Bearer {await make_key(workspace, ['messages:read'])}"}
    assert (await client.get(f"/v1/messages/{message_id}", headers=reader)).status_code == 200
    refused = await client.post("/v1/messages", headers=reader, json=_inline(to="a@example.com"))
    assert assert_problem(refused, 403)["scope"] == "messages:write"
    assert await _sends(ctx) == 1
