"""The delivery engine against a real SMTP server (the aiosmtpd fixture), on both
databases: what reaches the server, how each reply is recorded in the ledger, retries by
moving the clock, priorities, pauses and cancellations, and the worker wiring."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from postroom.clock import FrozenClock
from postroom.contacts.lists_repository import SuppressionRepository
from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.maildir import MaildirTransport, list_messages
from postroom.delivery.relay_url import parse_relay_url
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.delivery.smtp_pool import SmtpRelayPool
from postroom.delivery.transports import SingleTransport, instance_transport
from postroom.domains.service import DomainService
from postroom.ids import uuid7
from postroom.models.contacts import Contact, Suppression, email_hash
from postroom.models.delivery import PRIORITY_CAMPAIGN, PRIORITY_TRANSACTIONAL, Delivery, Send
from postroom.models.platform import Event
from postroom.wiring import build_delivery_engine, build_scheduler
from postroom.worker.loop import Worker
from tests.conftest import WorkspaceHandle
from tests.support.smtp_server import ReceivedMessage, TestSmtpServer

HTML = "<html><body><p>Hello {{ contact.first_name | default('friend') }}</p></body></html>"
MakeEngine = Callable[..., DeliveryEngine]


# --- helpers ---------------------------------------------------------------------------------


def relay_pool(url: str, *, connections: int = 4) -> SmtpRelayPool:
    return SmtpRelayPool(
        parse_relay_url(url + "?timeout=5"),
        max_connections=connections,
        max_messages_per_connection=100,
    )


@pytest.fixture
async def make_engine(ctx: AppContext, smtp_server: TestSmtpServer) -> AsyncIterator[MakeEngine]:
    engines: list[DeliveryEngine] = []

    def factory(
        *, url: str | None = None, batch: int = 50, concurrency: int = 1, owner: str = "engine-a"
    ) -> DeliveryEngine:
        engine = DeliveryEngine(
            ctx,
            SingleTransport(relay_pool(url or smtp_server.url)),
            owner=owner,
            batch_size=batch,
            concurrency=concurrency,
        )
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.close()


async def add_contacts(
    ctx: AppContext, workspace_id: Any, emails: Sequence[str], **fields: Any
) -> dict[str, uuid.UUID]:
    now = ctx.clock.now()
    ids: dict[str, uuid.UUID] = {}
    async with ctx.db.transaction() as session:
        for address in emails:
            contact = Contact(
                id=uuid7(),
                workspace_id=workspace_id,
                email=address,
                email_key=address.lower(),
                created_at=now,
                updated_at=now,
                **fields,
            )
            session.add(contact)
            ids[address] = contact.id
    return ids


async def queue_send(
    ctx: AppContext,
    workspace_id: Any,
    recipients: Sequence[Recipient],
    *,
    purpose: str = "marketing",
    kind: str = "campaign",
    priority: int = PRIORITY_CAMPAIGN,
    html: str = HTML,
    subject: str = "News for {{ contact.first_name | default('you') }}",
) -> tuple[Send, list[uuid.UUID]]:
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        send = await create_send(
            session,
            workspace_id,
            SendSpec(
                kind=kind,
                content={"inline": {"subject": subject, "html": html, "text": None}},
                from_email="news@brand.example",
                from_name="Brand",
                purpose=purpose,
                priority=priority,
                track_opens=False,
                track_clicks=False,
            ),
            now,
        )
        ids = await enqueue(session, send, recipients, now)
    return send, ids


async def deliveries(ctx: AppContext, send_id: uuid.UUID) -> dict[str, Delivery]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(select(Delivery).where(Delivery.send_id == send_id))
        return {row.email: row for row in rows.scalars()}


async def event_counts(ctx: AppContext) -> Counter[str]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(select(Event.type, func.count()).group_by(Event.type))
        return Counter(dict(rows.all()))


def received_by(smtp: TestSmtpServer) -> dict[str, list[ReceivedMessage]]:
    found: dict[str, list[ReceivedMessage]] = {}
    for message in smtp.messages:
        for rcpt in message.rcpt_tos:
            found.setdefault(rcpt, []).append(message)
    return found


def addresses(count: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(count)]


# --- what reaches the server -----------------------------------------------------------------


async def test_every_delivery_reaches_the_relay_once_with_its_headers(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    emails = addresses(30)
    contacts = await add_contacts(ctx, workspace.id, emails[:10], first_name="Ann")
    send, _ids = await queue_send(
        ctx, workspace.id, [Recipient(e, contacts.get(e)) for e in emails]
    )
    receipt, receipt_ids = await queue_send(
        ctx,
        workspace.id,
        [Recipient("buyer@example.com")],
        purpose="transactional",
        kind="transactional",
        priority=PRIORITY_TRANSACTIONAL,
    )

    totals = await make_engine(concurrency=3, batch=7).run_until_idle()

    assert totals == Counter({"sent": 31})
    got = received_by(smtp_server)
    assert sorted(got) == sorted([*emails, "buyer@example.com"])
    rows = await deliveries(ctx, send.id)
    for address in emails:
        [message] = got[address]
        parsed = message.message
        row = rows[address]
        assert parsed["To"].addresses[0].addr_spec == address
        assert parsed["X-Postroom-Delivery"] == str(row.id)
        assert parsed["Message-ID"] == row.message_id == f"<{row.id}@brand.example>"
        assert parsed["List-Unsubscribe"] and parsed["List-Unsubscribe-Post"]
        assert message.mail_from.endswith("@" + ctx.settings.effective_bounce_domain)
        expected = "Ann" if address in contacts else "friend"
        assert parsed["Subject"] == f"News for {'Ann' if address in contacts else 'you'}"
        assert expected in parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert row.status == "sent" and row.attempts == 1
        assert row.sent_at == ctx.clock.now()
        assert row.smtp_response and row.smtp_response.startswith("250")
        assert row.relay == f"smtp:127.0.0.1:{smtp_server.port}"
        assert row.lease_owner is None and row.lease_expires_at is None
    [transactional] = got["buyer@example.com"]
    assert transactional.message["List-Unsubscribe"] is None  # not marketing mail
    assert (await deliveries(ctx, receipt.id))["buyer@example.com"].id == receipt_ids[0]
    assert (await event_counts(ctx))["email.sent"] == 31


async def test_dkim_signs_when_the_sending_domain_has_a_key(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    async with ctx.db.transaction() as session:
        service = DomainService(
            session,
            workspace.id,  # type: ignore[arg-type]
            ctx.clock.now(),
            ctx.secret_box,
            ctx.settings.effective_bounce_domain,
        )
        await service.create("brand.example", "s1", 1024)
    await queue_send(ctx, workspace.id, [Recipient("signed@example.com")])
    await make_engine().run_until_idle()
    [message] = smtp_server.messages
    signature = str(message.message["DKIM-Signature"])
    assert "d=brand.example" in signature and "s=s1" in signature


# --- outcomes --------------------------------------------------------------------------------


async def test_temporary_failures_back_off_then_deliver(
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    emails = addresses(20)
    greylisted = set(emails[::3])
    smtp_server.behaviour.rcpt_reply_fn = lambda rcpt: (
        "451 4.7.1 greylisted, try later" if rcpt in greylisted else None
    )
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in emails])
    engine = make_engine(batch=8)
    start = clock.now()

    assert await engine.run_until_idle() == Counter(sent=13, deferred=7)
    rows = await deliveries(ctx, send.id)
    for address in greylisted:
        assert rows[address].status == "deferred"
        assert rows[address].attempts == 1
        assert rows[address].next_attempt_at == start + timedelta(seconds=60)
        assert "451" in (rows[address].smtp_response or "")
    assert await engine.run_until_idle() == Counter()  # not due yet: nothing claimed

    clock.advance(61)  # still greylisted: the wait doubles
    assert await engine.run_until_idle() == Counter(deferred=7)
    rows = await deliveries(ctx, send.id)
    assert {rows[a].next_attempt_at for a in greylisted} == {clock.now() + timedelta(seconds=120)}

    smtp_server.behaviour.rcpt_reply_fn = None
    clock.advance(121)
    assert await engine.run_until_idle() == Counter(sent=7)
    rows = await deliveries(ctx, send.id)
    assert {row.status for row in rows.values()} == {"sent"}
    assert {rows[a].attempts for a in greylisted} == {3}
    assert sorted(received_by(smtp_server)) == sorted(emails)
    assert (await event_counts(ctx))["email.deferred"] == 14


async def test_unknown_user_bounces_suppresses_and_marks_the_contact(
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    contacts = await add_contacts(ctx, workspace.id, ["gone@example.com", "here@example.com"])
    smtp_server.behaviour.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user here"
    send, _ = await queue_send(
        ctx, workspace.id, [Recipient(e, contact_id) for e, contact_id in contacts.items()]
    )
    assert await make_engine().run_until_idle() == Counter(sent=1, bounced=1)

    row = (await deliveries(ctx, send.id))["gone@example.com"]
    assert row.status == "bounced"
    assert "5.1.1" in (row.smtp_response or "")
    async with ctx.db.transaction() as session:
        suppressions = list((await session.execute(select(Suppression))).scalars())
        statuses = dict((await session.execute(select(Contact.email, Contact.status))).all())
        [event] = (
            await session.execute(select(Event).where(Event.type == "email.bounced"))
        ).scalars()
    assert [(s.email, s.reason) for s in suppressions] == [("gone@example.com", "bounce")]
    assert suppressions[0].email_hash == email_hash("gone@example.com")
    assert statuses == {"gone@example.com": "bounced", "here@example.com": "subscribed"}
    assert event.resource_id == row.id and event.contact_id == contacts["gone@example.com"]
    assert event.data["enhanced"] == "5.1.1"

    # The next send to that address is skipped at send time, without reaching the relay.
    smtp_server.reset()
    later, _ = await queue_send(ctx, workspace.id, [Recipient("gone@example.com")])
    assert await make_engine().run_until_idle() == Counter(skipped=1)
    skipped = (await deliveries(ctx, later.id))["gone@example.com"]
    assert skipped.status == "skipped" and skipped.attempts == 0
    assert skipped.smtp_response == "suppressed: bounce"
    assert smtp_server.count() == 0
    assert (await event_counts(ctx))["email.skipped"] == 1


async def test_suppression_reasons_at_send_time_depend_on_the_purpose(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        repository = SuppressionRepository(session, workspace.id)  # type: ignore[arg-type]
        for address, reason in (("left@example.com", "unsubscribe"), ("ops@example.com", "manual")):
            await repository.add(
                email=address, hashed=email_hash(address), reason=reason, note=None, now=now
            )
    recipients = [Recipient("left@example.com"), Recipient("ops@example.com")]
    news, _ = await queue_send(ctx, workspace.id, recipients)
    receipt, _ = await queue_send(
        ctx, workspace.id, recipients, purpose="transactional", kind="transactional"
    )
    assert await make_engine().run_until_idle() == Counter(skipped=3, sent=1)
    assert {e: r.status for e, r in (await deliveries(ctx, news.id)).items()} == {
        "left@example.com": "skipped",
        "ops@example.com": "skipped",
    }
    # An unsubscribe stops marketing mail only; a manual suppression stops everything.
    assert {e: r.status for e, r in (await deliveries(ctx, receipt.id)).items()} == {
        "left@example.com": "sent",
        "ops@example.com": "skipped",
    }
    assert received_by(smtp_server).keys() == {"left@example.com"}


async def test_policy_rejection_at_data_fails_without_suppressing(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    contacts = await add_contacts(ctx, workspace.id, ["strict@example.com"])
    smtp_server.behaviour.data_reply = "554 5.7.1 message refused by policy"
    send, _ = await queue_send(
        ctx, workspace.id, [Recipient("strict@example.com", contacts["strict@example.com"])]
    )
    assert await make_engine().run_until_idle() == Counter(failed=1)
    row = (await deliveries(ctx, send.id))["strict@example.com"]
    assert row.status == "failed" and "5.7.1" in (row.smtp_response or "")
    async with ctx.db.transaction() as session:
        assert (await session.execute(select(func.count()).select_from(Suppression))).scalar() == 0
        assert (await session.execute(select(Contact.status))).scalar() == "subscribed"
    assert (await event_counts(ctx))["email.failed"] == 1


async def test_relay_auth_failure_pauses_the_relay_and_defers_without_counting(
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    smtp_server.behaviour.auth_fail = True
    emails = addresses(6)
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in emails])
    engine = make_engine(url=f"smtp://relay-user:wrong@127.0.0.1:{smtp_server.port}", batch=4)
    start = clock.now()

    assert await engine.run_until_idle() == Counter(deferred=6)
    rows = await deliveries(ctx, send.id)
    for row in rows.values():
        assert row.status == "deferred"
        assert row.attempts == 0  # the relay's fault is no attempt at the recipient
        assert row.next_attempt_at == start + timedelta(seconds=60)  # the pause
    assert "535" in (rows[emails[0]].smtp_response or "")
    counts = await event_counts(ctx)
    assert counts["email.deferred"] == 6
    assert not counts["email.failed"] and not counts["email.bounced"]
    async with ctx.db.transaction() as session:
        assert (await session.execute(select(func.count()).select_from(Suppression))).scalar() == 0
    assert smtp_server.count() == 0

    smtp_server.behaviour.auth_fail = False
    clock.advance(30)  # still paused
    assert await engine.run_until_idle() == Counter()
    clock.advance(31)
    assert await engine.run_until_idle() == Counter(sent=6)
    assert smtp_server.logins[-1] == ("relay-user", "wrong")
    assert {row.attempts for row in (await deliveries(ctx, send.id)).values()} == {1}


async def test_rows_claimed_while_the_relay_rests_wait_for_the_pause_to_end(
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    smtp_server.behaviour.mail_reply = "421 4.3.2 service shutting down"
    engine = make_engine()
    await queue_send(ctx, workspace.id, [Recipient("one@example.com")])
    assert await engine.run_until_idle() == Counter(deferred=1)
    paused_until = clock.now() + timedelta(seconds=60)

    smtp_server.behaviour.mail_reply = None
    clock.advance(10)
    second, _ = await queue_send(ctx, workspace.id, [Recipient("two@example.com")])
    assert await engine.run_until_idle() == Counter(deferred=1)  # not attempted
    row = (await deliveries(ctx, second.id))["two@example.com"]
    assert row.attempts == 0 and row.next_attempt_at == paused_until
    assert "paused" in (row.smtp_response or "")
    assert smtp_server.count() == 0

    clock.set(paused_until)
    assert await engine.run_until_idle() == Counter(sent=2)


async def test_connection_dropped_at_rcpt_is_deferred(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    smtp_server.behaviour.drop_at = "rcpt"
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(3)])
    assert await make_engine().run_until_idle() == Counter(deferred=3)
    rows = await deliveries(ctx, send.id)
    assert {row.attempts for row in rows.values()} == {1}
    assert smtp_server.count() == 0


async def test_drop_after_data_is_uncertain_and_resent_with_the_same_message_id(
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    smtp_server.behaviour.drop_at = "after_data"
    send, [delivery_id] = await queue_send(ctx, workspace.id, [Recipient("maybe@example.com")])
    engine = make_engine()
    assert await engine.run_until_idle() == Counter(uncertain=1)
    row = (await deliveries(ctx, send.id))["maybe@example.com"]
    assert row.status == "uncertain" and row.attempts == 1
    assert (await event_counts(ctx))["email.uncertain"] == 1

    smtp_server.behaviour.drop_at = None
    clock.advance(61)
    assert await engine.run_until_idle() == Counter(sent=1)
    first, second = smtp_server.messages
    assert first.message["Message-ID"] == second.message["Message-ID"] == row.message_id
    assert first.message["X-Postroom-Delivery"] == second.message["X-Postroom-Delivery"]
    assert second.message["X-Postroom-Delivery"] == str(delivery_id)
    assert (await deliveries(ctx, send.id))["maybe@example.com"].attempts == 2


async def test_deferrals_past_the_lifetime_fail(
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    smtp_server.behaviour.rcpt_replies["full@example.com"] = "452 4.2.2 mailbox full"
    send, _ = await queue_send(ctx, workspace.id, [Recipient("full@example.com")])
    engine = make_engine()
    assert await engine.run_until_idle() == Counter(deferred=1)
    clock.advance(timedelta(hours=72))
    assert await engine.run_until_idle() == Counter(failed=1)
    row = (await deliveries(ctx, send.id))["full@example.com"]
    assert row.status == "failed" and row.attempts == 2
    assert "lifetime" in (row.smtp_response or "") and "452" in (row.smtp_response or "")
    async with ctx.db.transaction() as session:
        assert (await session.execute(select(func.count()).select_from(Suppression))).scalar() == 0


async def test_a_render_error_fails_that_delivery_only(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    send, _ = await queue_send(
        ctx,
        workspace.id,
        [
            Recipient("zero@example.com", variables={"n": 0}),
            Recipient("one@example.com", variables={"n": 1}),
        ],
        html="<p>{{ 10 // n }} left</p>",
    )
    assert await make_engine().run_until_idle() == Counter(sent=1, failed=1)
    rows = await deliveries(ctx, send.id)
    assert rows["zero@example.com"].status == "failed"
    assert "ZeroDivisionError" in (rows["zero@example.com"].smtp_response or "")
    assert received_by(smtp_server).keys() == {"one@example.com"}


# --- claiming, pausing, cancelling, reclaiming -----------------------------------------------


async def test_a_transactional_message_jumps_a_queue_of_bulk_mail(
    ctx: AppContext, clock: FrozenClock, workspace: WorkspaceHandle, make_engine: MakeEngine
) -> None:
    await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(2000, "bulk")])
    clock.advance(5)  # queued later, so only the priority can put it first
    _, [urgent] = await queue_send(
        ctx,
        workspace.id,
        [Recipient("reset@example.com")],
        purpose="transactional",
        kind="transactional",
        priority=PRIORITY_TRANSACTIONAL,
    )
    claimed = await make_engine(batch=50).claim()
    assert len(claimed) == 50
    assert urgent in {row.id for row in claimed}


async def test_a_send_paused_or_cancelled_after_the_claim_is_not_sent(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    paused, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(3, "p")])
    cancelled, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(2, "c")])
    engine = make_engine()
    claimed = await engine.claim()
    assert len(claimed) == 5
    async with ctx.db.transaction() as session:
        await session.execute(update(Send).where(Send.id == paused.id).values(state="paused"))
        await session.execute(update(Send).where(Send.id == cancelled.id).values(state="cancelled"))

    report = await engine.process(claimed)
    assert report.counts == Counter(released=3, cancelled=2)
    assert smtp_server.count() == 0
    assert {(r.status, r.attempts) for r in (await deliveries(ctx, paused.id)).values()} == {
        ("queued", 0)
    }
    assert {r.status for r in (await deliveries(ctx, cancelled.id)).values()} == {"cancelled"}
    assert await engine.run_until_idle() == Counter()  # paused rows are not claimable

    async with ctx.db.transaction() as session:
        await session.execute(update(Send).where(Send.id == paused.id).values(state="active"))
    assert await engine.run_until_idle() == Counter(sent=3)


async def test_an_expired_lease_is_reclaimed_as_uncertain_and_sent_again(
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    send, _ = await queue_send(ctx, workspace.id, [Recipient("lost@example.com")])
    dead = make_engine(owner="dead-worker")
    [held] = await dead.claim()
    scheduler = build_scheduler(ctx)
    clock.advance(ctx.settings.worker_lease_seconds - 1)
    assert (await scheduler.tick())["reclaim_deliveries"] == 0
    clock.advance(2)
    assert (await scheduler.tick())["reclaim_deliveries"] == 1
    assert (await deliveries(ctx, send.id))["lost@example.com"].status == "uncertain"

    assert await make_engine(owner="survivor").run_until_idle() == Counter(sent=1)
    # The dead worker's late answer changes nothing: it no longer holds the row.
    report = await dead.process([held])
    assert report.counts == Counter()
    row = (await deliveries(ctx, send.id))["lost@example.com"]
    assert row.status == "sent" and row.attempts == 2
    assert (await event_counts(ctx))["email.sent"] == 1


# --- wiring ----------------------------------------------------------------------------------


async def test_instance_transport_is_the_relay_url_or_the_maildir(
    ctx: AppContext, smtp_server: TestSmtpServer, tmp_path: Path
) -> None:
    relay = instance_transport(
        ctx.settings.model_copy(update={"smtp_url": smtp_server.url, "smtp_max_connections": 2})
    )
    assert isinstance(relay, SmtpRelayPool) and relay.max_connections == 2
    capture = instance_transport(ctx.settings.model_copy(update={"data_dir": tmp_path}))
    assert isinstance(capture, MaildirTransport) and capture.root == tmp_path / "mail"


async def test_the_worker_sends_mail_until_stopped(
    ctx: AppContext, workspace: WorkspaceHandle, smtp_server: TestSmtpServer
) -> None:
    """``serve`` and ``postroom worker`` both run this Worker: it sends through the
    instance transport (here the Maildir capture: no POSTROOM_SMTP_URL)."""
    ctx.settings.worker_poll_seconds = 0.05
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(12)])
    worker = Worker(ctx, ctx.jobs, build_scheduler(ctx), build_delivery_engine(ctx))
    worker.start()
    try:
        for _ in range(200):
            rows = await deliveries(ctx, send.id)
            if {row.status for row in rows.values()} == {"sent"}:
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop(grace_seconds=5)
    assert {row.status for row in (await deliveries(ctx, send.id)).values()} == {"sent"}
    captured = list_messages(ctx.settings.data_dir / "mail", limit=100)
    assert sorted(m.to for m in captured) == sorted(addresses(12))
