"""The feedback effects (``postroom.feedback.effects``) and delivery matching
(``postroom.feedback.matching``), on both databases: each effect does what DESIGN.md says
and applying it twice changes nothing more."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from postroom.clock import FrozenClock
from postroom.context import AppContext
from postroom.delivery.verp import verp_address
from postroom.feedback import effects, matching
from postroom.feedback.effects import Detail, SoftBouncePolicy, bounce_kind
from postroom.models.delivery import Delivery
from tests.conftest import MakeWorkspace, WorkspaceHandle
from tests.support.feedback import (
    Sent,
    contact_row,
    delivery_row,
    events,
    sent_delivery,
    subscription_statuses,
    suppression_reasons,
)

Effect = Callable[..., Awaitable[bool]]


async def _apply(ctx: AppContext, sent: Sent, effect: Effect, detail: Detail, **kw: Any) -> bool:
    async with ctx.db.transaction() as session:
        delivery = await matching.by_id(session, sent.delivery_id)
        assert delivery is not None
        return await effect(session, sent.workspace_id, delivery, detail, now=ctx.clock.now(), **kw)


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind"),
    [
        ("5.1.1", "smtp; 550 5.1.1 <x@example.com>: user unknown", "hard"),
        ("5.1.2", None, "hard"),
        ("5.1.10", None, "hard"),
        ("5.2.1", "mailbox disabled", "hard"),
        ("5.2.2", "smtp; 552 5.2.2 mailbox full", "soft"),
        ("4.2.2", None, "soft"),
        ("4.4.7", "delivery time expired", "soft"),
        ("5.7.1", "smtp; 550 5.7.1 message rejected as spam", "policy"),
        ("5.7.26", "DMARC policy", "policy"),
        ("5.0.0", "smtp; 550 5.0.0 no such user here", "hard"),
        ("5.0.0", "smtp; 554 5.0.0 blocked", "policy"),
        (None, "550 Requested action not taken: mailbox unavailable", "hard"),
        (None, "554 delivery error: dd This user doesn't have a yahoo.com account", "policy"),
        (None, "smtp; 550-5.1.1 The email account that you tried to reach does not exist", "hard"),
        (None, None, "soft"),
        ("garbage", "no code anywhere", "soft"),
    ],
)
def test_bounce_kind_follows_the_enhanced_code_rules(
    status: str | None, diagnostic: str | None, kind: str
) -> None:
    assert bounce_kind(status, diagnostic) == kind


async def test_hard_bounce_suppresses_once(ctx: AppContext, workspace: WorkspaceHandle) -> None:
    sent = await sent_delivery(ctx, workspace.id)
    detail = Detail("dsn", "5.1.1", "smtp; 550 5.1.1 user unknown")
    assert await _apply(ctx, sent, effects.hard_bounce, detail) is True
    assert await _apply(ctx, sent, effects.hard_bounce, detail) is False

    row = await delivery_row(ctx, sent.delivery_id)
    assert row.status == "bounced"
    assert "5.1.1" in (row.smtp_response or "")
    assert sent.contact_id is not None
    assert (await contact_row(ctx, sent.contact_id)).status == "bounced"
    assert await suppression_reasons(ctx, sent.workspace_id, sent.email) == {"bounce"}
    [event] = await events(ctx, "email.bounced", sent.delivery_id)
    assert event.contact_id == sent.contact_id
    assert event.data["bounce_type"] == "hard"
    assert event.data["status"] == "5.1.1"
    assert event.data["source"] == "dsn"


async def test_hard_bounce_of_a_transactional_message_marks_the_contact_by_address(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    contact = await sent_delivery(ctx, workspace.id, email="Person@Example.com")
    transactional = await sent_delivery(
        ctx,
        workspace.id,
        email="person@example.com",
        kind="transactional",
        purpose="transactional",
        with_contact=False,
    )
    assert transactional.contact_id is None
    assert await _apply(ctx, transactional, effects.hard_bounce, Detail("ses", "5.1.1")) is True
    assert contact.contact_id is not None
    assert (await contact_row(ctx, contact.contact_id)).status == "bounced"
    assert await suppression_reasons(ctx, workspace.id, "person@example.com") == {"bounce"}  # type: ignore[arg-type]


async def test_complained_contact_stays_complained_after_a_bounce(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    sent = await sent_delivery(ctx, workspace.id)
    await _apply(ctx, sent, effects.complaint, Detail("arf"))
    await _apply(ctx, sent, effects.hard_bounce, Detail("dsn", "5.1.1"))
    assert sent.contact_id is not None
    assert (await contact_row(ctx, sent.contact_id)).status == "complained"


async def test_soft_bounces_suppress_after_the_limit_within_the_window(
    ctx: AppContext, clock: FrozenClock, make_workspace: MakeWorkspace
) -> None:
    ws = await make_workspace("soft")
    policy = SoftBouncePolicy(limit=3, days=30)
    detail = Detail("dsn", "4.2.2", "smtp; 452 4.2.2 over quota")

    old = await sent_delivery(ctx, ws.id)
    assert await _apply(ctx, old, effects.soft_bounce, detail, policy=policy) is True
    clock.advance(timedelta(days=31))  # falls out of the window

    first = await sent_delivery(ctx, ws.id)
    second = await sent_delivery(ctx, ws.id)
    third = await sent_delivery(ctx, ws.id)
    assert await _apply(ctx, first, effects.soft_bounce, detail, policy=policy) is True
    # The same report twice counts once.
    assert await _apply(ctx, first, effects.soft_bounce, detail, policy=policy) is False
    assert await _apply(ctx, second, effects.soft_bounce, detail, policy=policy) is True
    assert (await delivery_row(ctx, second.delivery_id)).status == "failed"
    assert await suppression_reasons(ctx, ws.id, first.email) == set()  # type: ignore[arg-type]
    failed = await events(ctx, "email.failed")
    assert [e.data["bounce_type"] for e in failed] == ["soft", "soft", "soft"]
    assert [e.data["soft_bounces"] for e in failed] == [1, 1, 2]

    assert await _apply(ctx, third, effects.soft_bounce, detail, policy=policy) is True
    assert (await delivery_row(ctx, third.delivery_id)).status == "bounced"
    assert await suppression_reasons(ctx, ws.id, first.email) == {"bounce"}  # type: ignore[arg-type]
    assert first.contact_id is not None
    assert (await contact_row(ctx, first.contact_id)).status == "bounced"
    [bounced] = await events(ctx, "email.bounced")
    assert bounced.resource_id == third.delivery_id
    assert bounced.data["bounce_type"] == "soft_limit"
    assert bounced.data["soft_bounces"] == 3


async def test_policy_failure_is_not_suppressed(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    sent = await sent_delivery(ctx, workspace.id)
    policy = SoftBouncePolicy()
    async with ctx.db.transaction() as session:
        delivery = await matching.by_id(session, sent.delivery_id)
        assert delivery is not None
        kind = await effects.bounce(
            session,
            sent.workspace_id,
            delivery,
            Detail("dsn", "5.7.1", "550 5.7.1 rejected by policy"),
            now=ctx.clock.now(),
            policy=policy,
        )
    assert kind == "policy"
    assert (await delivery_row(ctx, sent.delivery_id)).status == "failed"
    assert await suppression_reasons(ctx, sent.workspace_id, sent.email) == set()
    assert sent.contact_id is not None
    assert (await contact_row(ctx, sent.contact_id)).status == "subscribed"
    assert await _apply(ctx, sent, effects.failed, Detail("dsn", "5.7.1")) is False
    assert len(await events(ctx, "email.failed")) == 1


async def test_complaint_unsubscribes_from_everything_once(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    sent = await sent_delivery(ctx, workspace.id, lists=("A", "B", "C"))
    assert sent.contact_id is not None
    assert await _apply(
        ctx, sent, effects.complaint, Detail("arf", data={"feedback_type": "abuse"})
    )
    assert not await _apply(ctx, sent, effects.complaint, Detail("arf"))
    assert (await contact_row(ctx, sent.contact_id)).status == "complained"
    assert await suppression_reasons(ctx, sent.workspace_id, sent.email) == {"complaint"}
    statuses = await subscription_statuses(ctx, sent.contact_id)
    assert set(statuses.values()) == {"unsubscribed"} and len(statuses) == 3
    [event] = await events(ctx, "email.complained", sent.delivery_id)
    assert event.data["feedback_type"] == "abuse"
    assert len(await events(ctx, "contact.unsubscribed")) == 1


async def test_unsubscribe_is_the_one_click_effect(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    sent = await sent_delivery(ctx, workspace.id, lists=("Weekly", "Product"), send_lists=1)
    assert sent.contact_id is not None
    assert await _apply(ctx, sent, effects.unsubscribe, Detail("mailto")) is True
    assert await _apply(ctx, sent, effects.unsubscribe, Detail("mailto")) is False
    statuses = await subscription_statuses(ctx, sent.contact_id)
    assert statuses == {sent.list_ids[0]: "unsubscribed", sent.list_ids[1]: "subscribed"}
    [event] = await events(ctx, "email.unsubscribed", sent.delivery_id)
    assert event.data["method"] == "mailto"
    # Not a suppression: only one list was left.
    assert await suppression_reasons(ctx, sent.workspace_id, sent.email) == set()


async def test_unsubscribe_without_lists_leaves_all_marketing(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    sent = await sent_delivery(ctx, workspace.id, send_lists=0)
    assert sent.contact_id is not None
    assert await _apply(ctx, sent, effects.unsubscribe, Detail("mailto")) is True
    assert (await contact_row(ctx, sent.contact_id)).status == "unsubscribed"
    assert await suppression_reasons(ctx, sent.workspace_id, sent.email) == {"unsubscribe"}
    assert await _apply(ctx, sent, effects.unsubscribe, Detail("mailto")) is False


async def test_unsubscribe_of_a_delivery_without_contact_changes_nothing(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    sent = await sent_delivery(ctx, workspace.id, with_contact=False, kind="transactional")
    assert await _apply(ctx, sent, effects.unsubscribe, Detail("mailto")) is False


async def test_delivered_once_and_settles_uncertain(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    sent = await sent_delivery(ctx, workspace.id, status="uncertain")
    assert await _apply(ctx, sent, effects.delivered, Detail("ses")) is True
    assert await _apply(ctx, sent, effects.delivered, Detail("ses")) is False
    assert (await delivery_row(ctx, sent.delivery_id)).status == "sent"
    assert len(await events(ctx, "email.delivered", sent.delivery_id)) == 1


async def test_replies_and_auto_replies_are_recorded_once_per_message(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    sent = await sent_delivery(ctx, workspace.id)
    first = Detail("reply", data={"message_id": "<r1@example.com>"})
    assert await _apply(ctx, sent, effects.replied, first) is True
    assert await _apply(ctx, sent, effects.replied, first) is False
    second = Detail("reply", data={"message_id": "<r2@example.com>"})
    assert await _apply(ctx, sent, effects.replied, second) is True
    auto = Detail("reply", data={"message_id": "<a1@example.com>"})
    assert await _apply(ctx, sent, effects.replied, auto, automatic=True) is True
    assert await _apply(ctx, sent, effects.replied, auto, automatic=True) is False
    assert len(await events(ctx, "email.replied", sent.delivery_id)) == 2
    assert len(await events(ctx, "email.auto_replied", sent.delivery_id)) == 1


async def test_effects_refuse_a_delivery_of_another_workspace(
    ctx: AppContext, make_workspace: MakeWorkspace
) -> None:
    a = await make_workspace("a")
    b = await make_workspace("b")
    sent = await sent_delivery(ctx, a.id)
    async with ctx.db.transaction() as session:
        delivery = await matching.by_id(session, sent.delivery_id)
        assert delivery is not None
        with pytest.raises(effects.FeedbackError):
            await effects.hard_bounce(
                session,
                b.id,  # type: ignore[arg-type]
                delivery,
                Detail("dsn", "5.1.1"),
                now=ctx.clock.now(),
            )


async def test_matching_by_verp_header_and_message_id(
    ctx: AppContext, make_workspace: MakeWorkspace
) -> None:
    a = await make_workspace("a")
    b = await make_workspace("b")
    sent = await sent_delivery(ctx, a.id)
    keys = matching.verp_keys(ctx.settings)
    address = verp_address(str(sent.delivery_id), keys[0], "bounces.postroom.test")
    local, _, domain = address.partition("@")
    tampered = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"

    assert matching.read_verp(address, keys) == matching.VerpResult(sent.delivery_id, False)
    assert matching.read_verp(address.upper(), keys).delivery_id == sent.delivery_id
    assert matching.read_verp(tampered, keys) == matching.VerpResult(None, True)
    assert matching.read_verp("someone@example.com", keys) == matching.VerpResult(None, False)

    async with ctx.db.transaction() as session:

        async def found(**kw: Any) -> uuid.UUID | None:
            row: Delivery | None = await matching.find_delivery(session, keys=keys, **kw)
            return row.id if row else None

        assert await found(verp=f"<{address}>") == sent.delivery_id
        assert await found(verp=tampered) is None
        assert await found(header=f" {sent.delivery_id} ") == sent.delivery_id
        assert await found(header="not-a-uuid") is None
        assert await found(message_id=sent.message_id) == sent.delivery_id
        assert await found(message_id=sent.message_id.strip("<>")) == sent.delivery_id
        assert await found(message_id=f"{sent.message_id} (comment)") == sent.delivery_id
        assert await found(message_id="<nothing@example.com>") is None
        assert await found(message_id="garbage") is None
        assert await found(header=str(sent.delivery_id), workspace_id=b.id) is None
        # Trust order: a forged VERP falls through to the header.
        assert await found(verp=tampered, header=str(sent.delivery_id)) == sent.delivery_id


async def test_without_an_inbound_receiver_the_reply_to_is_left_alone(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    from tests.test_inbound import _composed_reply_to

    assert ctx.settings.inbound_port is None and ctx.settings.reply_domain is None
    sent = await sent_delivery(ctx, workspace.id, reply_to="owner@brand.example")
    assert await _composed_reply_to(ctx, sent) == "owner@brand.example"
