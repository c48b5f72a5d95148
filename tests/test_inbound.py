"""The inbound SMTP receiver end to end, on both databases: a real aiosmtpd receiver on a
free port, a real smtplib client, the messages of tests/feedback_samples (DSNs and ARF
reports after the RFCs plus Gmail/Outlook/Yahoo shapes, auto-replies, replies, mailto
unsubscribes), and the SMTP fixture catching forwarded replies."""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from collections.abc import AsyncIterator
from email.message import Message
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from postroom.config import Settings
from postroom.context import AppContext
from postroom.delivery.verp import verp_address
from postroom.feedback import matching
from postroom.feedback import repository as inbound_repository
from postroom.feedback.addresses import reply_address, reply_keys
from postroom.feedback.classify import header, parse
from postroom.feedback.smtp import InboundServer
from postroom.models.feedback import InboundMessage
from tests.conftest import MakeWorkspace, WorkspaceHandle, make_settings
from tests.support.feedback import (
    Sent,
    contact_row,
    delivery_row,
    events,
    sent_delivery,
    subscription_statuses,
    suppression_reasons,
)
from tests.support.smtp_server import TestSmtpServer

SAMPLES = Path(__file__).parent / "feedback_samples"
BOUNCE_DOMAIN = "bounces.postroom.test"
REPLY_DOMAIN = "replies.postroom.test"


@pytest.fixture
def settings(db_url: str, tmp_path: Path, smtp_server: TestSmtpServer) -> Settings:
    return make_settings(
        db_url,
        tmp_path,
        bounce_domain=BOUNCE_DOMAIN,
        reply_domain=REPLY_DOMAIN,
        smtp_url=smtp_server.url,
        inbound_port=0,
        inbound_max_message_bytes=256 * 1024,
        inbound_keep_bytes=4096,
        soft_bounce_limit=2,
    )


@pytest.fixture
async def inbound(ctx: AppContext) -> AsyncIterator[InboundServer]:
    server = InboundServer(ctx, host="127.0.0.1", port=0)
    await server.start()
    yield server
    await server.stop()


class Client:
    """smtplib in a thread (the receiver runs on the test's own event loop)."""

    def __init__(self, server: InboundServer) -> None:
        assert server.bound_port is not None
        self.port = server.bound_port

    def _send(self, mail_from: str, rcpts: list[str], data: bytes) -> dict[str, object]:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
            return dict(smtp.sendmail(mail_from, rcpts, data))

    async def send(self, mail_from: str, rcpts: list[str], data: bytes) -> dict[str, object]:
        return await asyncio.to_thread(self._send, mail_from, rcpts, data)


def verp_of(ctx: AppContext, delivery_id: uuid.UUID) -> str:
    return verp_address(str(delivery_id), matching.verp_keys(ctx.settings)[0], BOUNCE_DOMAIN)


def reply_of(ctx: AppContext, delivery_id: uuid.UUID) -> str:
    return reply_address(str(delivery_id), reply_keys(ctx.settings)[0], REPLY_DOMAIN)


def sample(name: str, ctx: AppContext, sent: Sent, **override: str) -> bytes:
    values = {
        "verp": verp_of(ctx, sent.delivery_id),
        "rcpt": sent.email,
        "message_id": sent.message_id,
        "delivery": str(sent.delivery_id),
        "reply": reply_of(ctx, sent.delivery_id),
        **override,
    }
    text = (SAMPLES / name).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


async def counters(ctx: AppContext) -> dict[str, int]:
    async with ctx.db.transaction() as session:
        return await inbound_repository.counters(session)


async def kept_rows(ctx: AppContext) -> list[InboundMessage]:
    async with ctx.db.transaction() as session:
        return list(
            (await session.execute(select(InboundMessage).order_by(InboundMessage.id))).scalars()
        )


# -- bounces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "rfc3464_hard.eml",
        "gmail_dsn.eml",
        "outlook_ndr.eml",
        "outlook_text_ndr.eml",
        "yahoo_failure_notice.eml",
    ],
)
async def test_hard_bounces_suppress(
    ctx: AppContext, workspace: WorkspaceHandle, inbound: InboundServer, name: str
) -> None:
    sent = await sent_delivery(ctx, workspace.id, email="gone@example.net")
    data = sample(name, ctx, sent)
    client = Client(inbound)
    assert await client.send("", [verp_of(ctx, sent.delivery_id)], data) == {}
    assert (await delivery_row(ctx, sent.delivery_id)).status == "bounced"
    assert sent.contact_id is not None
    assert (await contact_row(ctx, sent.contact_id)).status == "bounced"
    assert await suppression_reasons(ctx, sent.workspace_id, sent.email) == {"bounce"}
    # The same bounce again changes nothing and records nothing.
    await client.send("", [verp_of(ctx, sent.delivery_id)], data)
    [event] = await events(ctx, "email.bounced", sent.delivery_id)
    assert event.data["bounce_type"] == "hard"
    assert event.data["source"] == "dsn"
    assert (await counters(ctx))["bounce_hard"] == 2
    assert await kept_rows(ctx) == []


async def test_dsn_to_a_plain_address_is_matched_by_the_attached_headers(
    ctx: AppContext, workspace: WorkspaceHandle, inbound: InboundServer
) -> None:
    sent = await sent_delivery(ctx, workspace.id, email="gone@example.net")
    data = sample("rfc3464_hard.eml", ctx, sent, verp=f"postmaster@{BOUNCE_DOMAIN}")
    await Client(inbound).send("", [f"postmaster@{BOUNCE_DOMAIN}"], data)
    assert (await delivery_row(ctx, sent.delivery_id)).status == "bounced"


async def test_soft_bounces_count_and_suppress_at_the_limit(
    ctx: AppContext, workspace: WorkspaceHandle, inbound: InboundServer
) -> None:
    client = Client(inbound)
    first = await sent_delivery(ctx, workspace.id, email="full@example.net")
    await client.send("", [verp_of(ctx, first.delivery_id)], sample("rfc3464_soft.eml", ctx, first))
    assert (await delivery_row(ctx, first.delivery_id)).status == "failed"
    assert await suppression_reasons(ctx, first.workspace_id, first.email) == set()

    second = await sent_delivery(ctx, workspace.id, email="full@example.net")
    data = sample("rfc3464_soft.eml", ctx, second)
    await client.send("", [verp_of(ctx, second.delivery_id)], data)
    assert (await delivery_row(ctx, second.delivery_id)).status == "bounced"
    assert await suppression_reasons(ctx, first.workspace_id, first.email) == {"bounce"}
    [event] = await events(ctx, "email.bounced")
    assert event.data["bounce_type"] == "soft_limit"


async def test_delayed_dsn_changes_nothing(
    ctx: AppContext, workspace: WorkspaceHandle, inbound: InboundServer
) -> None:
    sent = await sent_delivery(ctx, workspace.id)
    data = sample("rfc3464_delayed.eml", ctx, sent)
    await Client(inbound).send("", [verp_of(ctx, sent.delivery_id)], data)
    assert (await delivery_row(ctx, sent.delivery_id)).status == "sent"
    assert (await counters(ctx))["delayed"] == 1
    assert await kept_rows(ctx) == []


async def test_policy_bounce_fails_without_suppressing(
    ctx: AppContext, workspace: WorkspaceHandle, inbound: InboundServer
) -> None:
    sent = await sent_delivery(ctx, workspace.id)
    data = sample("rfc3464_policy.eml", ctx, sent)
    await Client(inbound).send("", [verp_of(ctx, sent.delivery_id)], data)
    assert (await delivery_row(ctx, sent.delivery_id)).status == "failed"
    assert await suppression_reasons(ctx, sent.workspace_id, sent.email) == set()
    [event] = await events(ctx, "email.failed", sent.delivery_id)
    assert event.data["bounce_type"] == "policy"
    assert event.data["status"] == "5.7.1"


async def test_forged_verp_is_ignored_and_counted(
    ctx: AppContext, workspace: WorkspaceHandle, inbound: InboundServer
) -> None:
    sent = await sent_delivery(ctx, workspace.id)
    genuine = verp_of(ctx, sent.delivery_id)
    local, _, domain = genuine.partition("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"
    client = Client(inbound)
    data = sample("rfc3464_hard.eml", ctx, sent, verp=forged)
    assert await client.send("", [forged], data) == {}
    # A report quoting a forged VERP as its original sender is ignored too.
    arf = sample("arf_rfc5965.eml", ctx, sent, verp=forged)
    await client.send("abuse@mail.example.com", [f"fbl@{BOUNCE_DOMAIN}"], arf)
    assert (await delivery_row(ctx, sent.delivery_id)).status == "sent"
    assert await suppression_reasons(ctx, sent.workspace_id, sent.email) == set()
    assert (await counters(ctx))["forged"] == 2
    assert await kept_rows(ctx) == []


# -- complaints and unsubscribes ---------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["arf_rfc5965.eml", "arf_yahoo_headers_only.eml", "arf_message_id_only.eml"]
)
async def test_arf_complaints(
    ctx: AppContext, workspace: WorkspaceHandle, inbound: InboundServer, name: str
) -> None:
    sent = await sent_delivery(ctx, workspace.id, lists=("A", "B"))
    await Client(inbound).send(
        "feedback@example.com", [f"fbl@{BOUNCE_DOMAIN}"], sample(name, ctx, sent)
    )
    assert sent.contact_id is not None
    assert (await contact_row(ctx, sent.contact_id)).status == "complained"
    assert await suppression_reasons(ctx, sent.workspace_id, sent.email) == {"complaint"}
    assert set((await subscription_statuses(ctx, sent.contact_id)).values()) == {"unsubscribed"}
    [event] = await events(ctx, "email.complained", sent.delivery_id)
    assert event.data["feedback_type"] == "abuse"


async def test_mailto_unsubscribe_is_the_one_click_effect(
    ctx: AppContext, workspace: WorkspaceHandle, inbound: InboundServer
) -> None:
    sent = await sent_delivery(ctx, workspace.id, lists=("Weekly", "Product"), send_lists=1)
    data = sample("mailto_unsubscribe.eml", ctx, sent)
    await Client(inbound).send(sent.email, [verp_of(ctx, sent.delivery_id)], data)
    assert sent.contact_id is not None
    statuses = await subscription_statuses(ctx, sent.contact_id)
    assert statuses == {sent.list_ids[0]: "unsubscribed", sent.list_ids[1]: "subscribed"}
    [event] = await events(ctx, "email.unsubscribed", sent.delivery_id)
    assert event.data["method"] == "mailto"


# -- replies -----------------------------------------------------------------------------


async def test_reply_is_recorded_and_forwarded_once(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    inbound: InboundServer,
    smtp_server: TestSmtpServer,
) -> None:
    sent = await sent_delivery(ctx, workspace.id, reply_to="owner@brand.example")
    client = Client(inbound)
    data = sample("reply.eml", ctx, sent)
    await client.send(sent.email, [reply_of(ctx, sent.delivery_id)], data)

    [event] = await events(ctx, "email.replied", sent.delivery_id)
    assert event.data["message_id"] == "<reply-1@example.com>"
    [forwarded] = smtp_server.messages
    assert forwarded.rcpt_tos == ["owner@brand.example"]
    assert forwarded.mail_from in ("", "<>")  # a null sender: a bounce of it never loops
    copy = forwarded.message
    assert "news@brand.example" in str(copy["From"])
    assert sent.email in str(copy["Reply-To"])
    assert str(copy["In-Reply-To"]) == sent.message_id
    assert str(copy["X-Loop"]) == f"postroom@{REPLY_DOMAIN}"
    assert copy["DKIM-Signature"] is None
    assert "know more about the sale" in copy.get_content()

    # The same reply again (a retried SMTP transaction) is neither recorded nor forwarded.
    await client.send(sent.email, [reply_of(ctx, sent.delivery_id)], data)
    assert smtp_server.count() == 1
    # Our own forward coming back to the reply address (a reply-to that points at us)
    # does not loop: not recorded, not forwarded again.
    await client.send("", [reply_of(ctx, sent.delivery_id)], forwarded.data)
    assert smtp_server.count() == 1
    assert len(await events(ctx, "email.replied")) == 1
    counted = await counters(ctx)
    assert counted["forwarded"] == 1
    assert counted["forward_loop"] == 1


async def test_reply_without_a_human_reply_to_goes_to_the_sender(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    inbound: InboundServer,
    smtp_server: TestSmtpServer,
) -> None:
    sent = await sent_delivery(ctx, workspace.id, reply_to=None)
    data = sample("reply.eml", ctx, sent)
    await Client(inbound).send(sent.email, [reply_of(ctx, sent.delivery_id)], data)
    assert smtp_server.recipients() == ["news@brand.example"]


async def test_failed_forward_keeps_the_reply(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    inbound: InboundServer,
    smtp_server: TestSmtpServer,
) -> None:
    sent = await sent_delivery(ctx, workspace.id, reply_to="owner@brand.example")
    smtp_server.behaviour.rcpt_replies["owner@brand.example"] = "550 5.1.1 no such user"
    await Client(inbound).send(
        sent.email, [reply_of(ctx, sent.delivery_id)], sample("reply.eml", ctx, sent)
    )
    assert len(await events(ctx, "email.replied")) == 1
    [kept] = await kept_rows(ctx)
    assert kept.kind == "error"
    assert kept.workspace_id == sent.workspace_id
    assert "could not be forwarded" in kept.reason


@pytest.mark.parametrize(
    "name",
    [
        "auto_reply_rfc3834.eml",
        "auto_reply_outlook_oof.eml",
        "auto_reply_vacation_precedence.eml",
    ],
)
async def test_auto_replies_are_told_apart(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    inbound: InboundServer,
    smtp_server: TestSmtpServer,
    name: str,
) -> None:
    sent = await sent_delivery(ctx, workspace.id)
    await Client(inbound).send(
        sent.email, [reply_of(ctx, sent.delivery_id)], sample(name, ctx, sent)
    )
    assert len(await events(ctx, "email.auto_replied", sent.delivery_id)) == 1
    assert await events(ctx, "email.replied") == []
    assert smtp_server.count() == 0


async def test_auto_reply_to_the_return_path(
    ctx: AppContext, workspace: WorkspaceHandle, inbound: InboundServer
) -> None:
    """RFC 3834 sends auto-replies to the Return-Path: our VERP address."""
    sent = await sent_delivery(ctx, workspace.id)
    verp = verp_of(ctx, sent.delivery_id)
    data = sample("auto_reply_rfc3834.eml", ctx, sent, reply=verp)
    await Client(inbound).send(sent.email, [verp], data)
    assert len(await events(ctx, "email.auto_replied", sent.delivery_id)) == 1
    assert (await delivery_row(ctx, sent.delivery_id)).status == "sent"


# -- what is refused, kept, listed and erased --------------------------------------------


async def test_other_domains_are_refused(inbound: InboundServer) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await Client(inbound).send("a@example.org", ["someone@example.com"], b"Subject: x\r\n\r\n")
    [(code, _message)] = refused.value.recipients.values()  # type: ignore[misc]
    assert code == 550


async def test_oversized_mail_is_refused(inbound: InboundServer) -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 300
    with pytest.raises(smtplib.SMTPException) as refused:
        await Client(inbound).send("a@example.org", [f"info@{BOUNCE_DOMAIN}"], big)
    assert "552" in str(refused.value) or getattr(refused.value, "smtp_code", 0) == 552


async def test_unclassifiable_mail_is_kept_and_listed(
    ctx: AppContext,
    client: httpx.AsyncClient,
    make_workspace: MakeWorkspace,
    inbound: InboundServer,
) -> None:
    a = await make_workspace("a")
    b = await make_workspace("b")
    sent = await sent_delivery(ctx, a.id)
    smtp = Client(inbound)
    # Not about any delivery: kept without a workspace (CLI only).
    await smtp.send(
        "someone@example.org", [f"info@{BOUNCE_DOMAIN}"], sample("unclassifiable.eml", ctx, sent)
    )
    # Sent to a delivery's VERP address but neither a bounce nor an unsubscribe.
    verp = verp_of(ctx, sent.delivery_id)
    question = sample("unclassifiable.eml", ctx, sent).replace(
        f"info@{BOUNCE_DOMAIN}".encode(), verp.encode()
    )
    await smtp.send("someone@example.org", [verp], question + b"x" * 998 * 8)

    rows = await kept_rows(ctx)
    assert [r.workspace_id for r in rows] == [None, sent.workspace_id]
    listed = await client.get("/v1/inbound", headers=a.headers)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["data"]
    assert item["kind"] == "unclassified"
    assert item["delivery_id"] == str(sent.delivery_id)
    assert item["rcpt_to"] == [verp]
    assert item["truncated"] is True
    assert item["size"] > 8000
    assert item["subject"] == "Question about your newsletter"
    one = await client.get(f"/v1/inbound/{item['id']}", headers=a.headers)
    assert one.status_code == 200
    assert one.json()["raw"].startswith("From: Someone")
    assert len(one.json()["raw"]) == 4096
    assert (await client.get("/v1/inbound", headers=b.headers)).json()["data"] == []
    assert (await client.get(f"/v1/inbound/{item['id']}", headers=b.headers)).status_code == 404
    gone = await client.delete(f"/v1/inbound/{item['id']}", headers=a.headers)
    assert gone.status_code == 204
    assert (await client.get(f"/v1/inbound/{item['id']}", headers=a.headers)).status_code == 404


async def test_erase_covers_inbound_data(
    ctx: AppContext, client: httpx.AsyncClient, workspace: WorkspaceHandle, inbound: InboundServer
) -> None:
    sent = await sent_delivery(ctx, workspace.id, email="rae@example.com")
    other = await sent_delivery(ctx, workspace.id, email="other@example.com")
    smtp = Client(inbound)
    verp = verp_of(ctx, sent.delivery_id)
    question = sample("unclassifiable.eml", ctx, sent)
    await smtp.send("someone@example.org", [verp], question)  # matched: by contact
    from_rae = question.replace(b"someone@example.org", b"Rae@Example.com")
    await smtp.send("rae@example.com", [f"info@{BOUNCE_DOMAIN}"], from_rae)  # by sender
    await smtp.send(
        "other@example.com",
        [verp_of(ctx, other.delivery_id)],
        question.replace(b"someone@example.org", b"other@example.com"),
    )
    await smtp.send(
        "", [verp_of(ctx, sent.delivery_id)], sample("rfc3464_soft.eml", ctx, sent)
    )  # soft-bounce history
    assert len(await kept_rows(ctx)) == 3

    erased = await client.post(f"/v1/contacts/{sent.contact_id}/erase", headers=workspace.headers)
    assert erased.status_code in (200, 202, 204), erased.text
    [left] = await kept_rows(ctx)
    assert left.delivery_id == other.delivery_id
    from postroom.models.feedback import SoftBounce

    async with ctx.db.transaction() as session:
        assert (await session.execute(select(SoftBounce))).first() is None


# -- the forwarded copy itself -----------------------------------------------------------


def test_forward_copy_drops_trace_and_signature_headers() -> None:
    from postroom.feedback.forward import forward_copy, loop_reason

    raw = (
        b"Received: from a\r\nReceived: from b\r\nDKIM-Signature: v=1; b=x\r\n"
        b"From: =?utf-8?q?R=C3=A6?= <rae@example.com>\r\nTo: r-x@replies.example\r\n"
        b"Subject: Re: Hi\r\nMessage-ID: <m1@example.com>\r\n\r\nbody\r\n"
    )
    copy = forward_copy(
        raw,
        to="owner@brand.example",
        from_email="news@brand.example",
        from_name="Brand",
        reply_domain="replies.example",
        delivery_id="d1",
    )
    msg: Message = parse(copy)
    assert msg.get_all("Received") is None
    assert msg["DKIM-Signature"] is None
    assert msg["To"] == "owner@brand.example"
    assert header(msg, "From") == "Ræ via Brand <news@brand.example>"
    assert "rae@example.com" in msg["Reply-To"]
    assert msg["Message-ID"] != "<m1@example.com>"
    assert loop_reason(msg, "replies.example") == "already forwarded by Postroom"
    assert loop_reason(parse(raw), "replies.example") is None
    hops = b"".join(b"Received: from h%d\r\n" % i for i in range(30))
    assert "hops" in (loop_reason(parse(hops + raw), "replies.example") or "")


# -- the Reply-To the builder writes -----------------------------------------------------


async def _composed_reply_to(ctx: AppContext, sent: Sent) -> str | None:
    from postroom.delivery.compose import Composer, compiled_for
    from postroom.delivery.message import build_message
    from postroom.models.delivery import Send

    async with ctx.db.transaction() as session:
        send = await session.get(Send, sent.send_id)
        assert send is not None
    composed = Composer(ctx).envelope(
        send,
        compiled_for(send, None),
        delivery_id=sent.delivery_id,
        email=sent.email,
        contact={"email": sent.email},
        contact_id=sent.contact_id,
        variables=None,
        now=ctx.clock.now(),
    )
    value = parse(build_message(composed.message))["Reply-To"]
    return None if value is None else str(value)


async def test_campaign_mail_gets_a_tokenized_reply_to(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    campaign = await sent_delivery(ctx, workspace.id, reply_to="owner@brand.example")
    assert await _composed_reply_to(ctx, campaign) == reply_of(ctx, campaign.delivery_id)
    transactional = await sent_delivery(
        ctx,
        workspace.id,
        email="t@example.com",
        kind="transactional",
        purpose="transactional",
        reply_to="help@brand.example",
    )
    assert await _composed_reply_to(ctx, transactional) == "help@brand.example"
