"""The one place where feedback changes state.

Everything mailbox providers tell us — DSNs and ARF reports through the inbound SMTP
receiver, provider webhooks (SES, SendGrid, Mailgun, Postmark), ``mailto:`` unsubscribes,
replies — ends up in one of the functions below, so a bounce means the same thing
whichever way it arrived. Each function takes the caller's session (it only flushes; the
edge commits), the workspace the caller believes the delivery belongs to (checked), the
matched :class:`~postroom.models.delivery.Delivery` (see ``postroom.feedback.matching``),
a :class:`Detail` and the time, and returns ``True`` when it changed anything.

All of them are idempotent: applying the same feedback twice changes nothing more and
records no second event. The rules (DESIGN.md, "Outcomes" and "Unsubscribe, suppression,
consent"):

- **hard bounce** (``5.1.x``, ``5.2.1``…): delivery ``bounced``, contact ``bounced``, a
  ``bounce`` suppression (blocks all mail), ``email.bounced``.
- **soft bounce** (``4.x.x``, ``5.2.2`` mailbox full): delivery ``failed``, counted per
  address; the ``soft_bounce_limit``-th within ``soft_bounce_days`` days escalates to the
  hard bounce effects (``email.bounced`` with ``bounce_type: soft_limit``).
- **policy failure** (``5.7.x`` and other 5xx not about the address): delivery ``failed``,
  never suppressed.
- **complaint**: contact ``complained``, a ``complaint`` suppression, unsubscribed from
  every list, ``email.complained``.
- **unsubscribe**: exactly what the RFC 8058 one-click POST does
  (``postroom.tracking.service.LinkService.unsubscribe``).
- **delivered**, **replied**, **auto-replied**: one event each (a reply or auto-reply is
  de-duplicated by its Message-ID when the caller gives one in ``detail.data``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from postroom.config import Settings
from postroom.contacts.lists_repository import (
    SubscriptionRepository,
    SuppressionRepository,
    dialect_insert,
)
from postroom.delivery.outcomes import OutcomeKind, classify_reply
from postroom.events.service import record
from postroom.ids import uuid7
from postroom.models.contacts import Contact, email_hash
from postroom.models.delivery import Delivery
from postroom.models.feedback import SoftBounce
from postroom.models.platform import Event
from postroom.tracking.service import LinkService
from postroom.tracking.tokens import DeliveryRef

BounceKind = Literal["hard", "soft", "policy"]

_TEXT_LIMIT = 1000
# Ledger states a bounce report can move: the message left us (or may have).
_SENT_LIKE = ("sent", "uncertain")
_BOUNCEABLE = ("sent", "uncertain", "deferred", "failed")
# A worse contact status is never overwritten by a milder one.
_BOUNCE_OVERWRITES = ("subscribed", "unsubscribed")
_BASIC_CODE = re.compile(r"\s*(?:smtp\s*;\s*)?([245]\d\d)[\s-]", re.IGNORECASE)
_ENHANCED_ANYWHERE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


class FeedbackError(ValueError):
    """The caller passed a delivery of another workspace (a matching bug, never input)."""


@dataclass(frozen=True, slots=True)
class Detail:
    """What the feedback said. ``source`` names the channel (``dsn``, ``arf``, ``mailto``,
    ``reply``, ``ses``, ``sendgrid``, ``mailgun``, ``postmark``…); ``status`` is the RFC 3463
    enhanced code when known; ``diagnostic`` the remote's own words; ``data`` is merged
    into the event (keep it small and free of message bodies)."""

    source: str
    status: str | None = None
    diagnostic: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SoftBouncePolicy:
    limit: int = 3
    days: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> SoftBouncePolicy:
        return cls(limit=settings.soft_bounce_limit, days=settings.soft_bounce_days)


def bounce_kind(status: str | None, diagnostic: str | None = None) -> BounceKind:
    """Hard, soft or policy, by the enhanced code first (the ledger's own rules in
    ``postroom.delivery.outcomes``), then by the basic code and wording of the diagnostic.
    With nothing to go on a bounce is ``soft``: counted, and suppressed only if it repeats.
    """
    text = " ".join((diagnostic or "").split())
    enhanced = _enhanced(status) or _enhanced_in(text)
    basic = _BASIC_CODE.match(text)
    if enhanced is not None:
        code = 550 if enhanced.startswith("5") else 450
        if basic is not None and basic.group(1)[0] == enhanced[0]:
            code = int(basic.group(1))
        outcome = classify_reply(code, f"{enhanced} {text}", stage="rcpt")
    elif basic is not None:
        outcome = classify_reply(int(basic.group(1)), text, stage="rcpt")
    else:
        return "soft"
    if outcome.kind is OutcomeKind.BOUNCED:
        return "hard"
    if outcome.kind in (OutcomeKind.DEFERRED, OutcomeKind.UNCERTAIN, OutcomeKind.SENT):
        return "soft"
    return "policy"


def _enhanced(status: str | None) -> str | None:
    if not status:
        return None
    match = _ENHANCED_ANYWHERE.search(status.strip())
    return ".".join(match.groups()) if match else None


def _enhanced_in(text: str) -> str | None:
    match = _ENHANCED_ANYWHERE.search(text)
    return ".".join(match.groups()) if match else None


# -- bounces -----------------------------------------------------------------------------


async def bounce(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    delivery: Delivery,
    detail: Detail,
    *,
    now: datetime,
    policy: SoftBouncePolicy,
) -> BounceKind:
    """Classify ``detail`` (``bounce_kind``) and apply the matching effect; returns the
    kind it was treated as. A caller that already knows the kind (a provider saying
    "Permanent") calls ``hard_bounce``/``soft_bounce``/``failed`` directly."""
    kind = bounce_kind(detail.status, detail.diagnostic)
    if kind == "hard":
        await hard_bounce(session, workspace_id, delivery, detail, now=now)
    elif kind == "soft":
        await soft_bounce(session, workspace_id, delivery, detail, now=now, policy=policy)
    else:
        await failed(session, workspace_id, delivery, detail, now=now)
    return kind


async def hard_bounce(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    delivery: Delivery,
    detail: Detail,
    *,
    now: datetime,
    bounce_type: str = "hard",
) -> bool:
    """Delivery ``bounced``, contact ``bounced``, ``bounce`` suppression, ``email.bounced``."""
    _check(workspace_id, delivery)
    moved = await _move(session, delivery, "bounced", _BOUNCEABLE, detail, now)
    suppressed = await SuppressionRepository(session, workspace_id).add(
        email=delivery.email,
        hashed=email_hash(delivery.email),
        reason="bounce",
        note=_note(detail),
        now=now,
    )
    await _set_contact_status(session, workspace_id, delivery, "bounced", _BOUNCE_OVERWRITES, now)
    if not (moved or suppressed):
        return False
    await _event(session, delivery, "email.bounced", detail, now, bounce_type=bounce_type)
    return True


async def soft_bounce(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    delivery: Delivery,
    detail: Detail,
    *,
    now: datetime,
    policy: SoftBouncePolicy,
) -> bool:
    """Delivery ``failed`` (``email.failed`` with ``bounce_type: soft``) and one soft bounce
    counted for the address; the ``policy.limit``-th within ``policy.days`` days turns into
    a hard bounce. A delivery counts once, however many reports arrive for it."""
    _check(workspace_id, delivery)
    hashed = email_hash(delivery.email)
    inserted = await session.execute(
        dialect_insert(session)(SoftBounce)
        .values(
            id=uuid7(),
            workspace_id=workspace_id,
            delivery_id=delivery.id,
            email_hash=hashed,
            status=(_enhanced(detail.status) or detail.status or None),
            occurred_at=now,
        )
        .on_conflict_do_nothing()
        .returning(SoftBounce.id)
    )
    if inserted.first() is None:
        return False
    recent = (
        await session.execute(
            select(func.count())
            .select_from(SoftBounce)
            .where(
                SoftBounce.workspace_id == workspace_id,
                SoftBounce.email_hash == hashed,
                SoftBounce.occurred_at > now - timedelta(days=policy.days),
            )
        )
    ).scalar_one()
    if recent >= policy.limit:
        escalated = Detail(
            detail.source,
            detail.status,
            detail.diagnostic,
            {**detail.data, "soft_bounces": int(recent), "within_days": policy.days},
        )
        await hard_bounce(
            session, workspace_id, delivery, escalated, now=now, bounce_type="soft_limit"
        )
        return True
    await _move(session, delivery, "failed", _SENT_LIKE, detail, now)
    await _event(
        session, delivery, "email.failed", detail, now, bounce_type="soft", soft_bounces=recent
    )
    return True


async def failed(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    delivery: Delivery,
    detail: Detail,
    *,
    now: datetime,
) -> bool:
    """A permanent failure that is not the address's fault (policy, reputation, content:
    ``5.7.x``): delivery ``failed``, ``email.failed``; nothing is suppressed."""
    _check(workspace_id, delivery)
    if not await _move(session, delivery, "failed", _SENT_LIKE, detail, now):
        return False
    await _event(session, delivery, "email.failed", detail, now, bounce_type="policy")
    return True


# -- complaints and unsubscribes ---------------------------------------------------------


async def complaint(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    delivery: Delivery,
    detail: Detail,
    *,
    now: datetime,
) -> bool:
    """Contact ``complained``, ``complaint`` suppression (blocks all mail), unsubscribed
    from every list, ``email.complained``."""
    _check(workspace_id, delivery)
    hashed = email_hash(delivery.email)
    suppressed = await SuppressionRepository(session, workspace_id).add(
        email=delivery.email, hashed=hashed, reason="complaint", note=_note(detail), now=now
    )
    changed_status = await _set_contact_status(
        session,
        workspace_id,
        delivery,
        "complained",
        ("subscribed", "unsubscribed", "bounced"),
        now,
    )
    subscriptions = SubscriptionRepository(session, workspace_id)
    left = 0
    for contact_id in await _contact_ids(session, workspace_id, delivery):
        removed = await subscriptions.unsubscribe_everywhere(contact_id, now)
        left += removed
        if removed:
            await record(
                session,
                workspace_id=workspace_id,
                type="contact.unsubscribed",
                occurred_at=now,
                contact_id=contact_id,
                resource_type="contact",
                resource_id=contact_id,
                data={"scope": "all", "source": f"complaint:{detail.source}"},
            )
    if not (suppressed or changed_status or left):
        return False
    await _event(session, delivery, "email.complained", detail, now)
    return True


async def unsubscribe(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    delivery: Delivery,
    detail: Detail,
    *,
    now: datetime,
) -> bool:
    """The one-click unsubscribe, reached another way (``method`` = ``detail.source``):
    off the send's lists, or off all marketing mail when the send had none. A delivery
    without a contact (transactional) or whose contact is gone changes nothing."""
    _check(workspace_id, delivery)
    ref = DeliveryRef(workspace_id, delivery.send_id, delivery.id, delivery.contact_id)
    service = LinkService(session, ref, now)
    target = await service.target()
    if target is None:
        return False
    before = await _count_events(session, delivery, "email.unsubscribed")
    await service.unsubscribe(target, method=detail.source)
    return await _count_events(session, delivery, "email.unsubscribed") > before


# -- delivery, replies -------------------------------------------------------------------


async def delivered(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    delivery: Delivery,
    detail: Detail,
    *,
    now: datetime,
) -> bool:
    """``email.delivered``, once per delivery. An ``uncertain`` delivery (the connection
    dropped before the relay's reply) is known to be ``sent`` now, so it is not retried."""
    _check(workspace_id, delivery)
    if await _count_events(session, delivery, "email.delivered"):
        return False
    await _move(session, delivery, "sent", ("uncertain",), detail, now, sent_at=now)
    await _event(session, delivery, "email.delivered", detail, now)
    return True


async def replied(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    delivery: Delivery,
    detail: Detail,
    *,
    now: datetime,
    automatic: bool = False,
) -> bool:
    """``email.replied`` (sequences stop on it) or, with ``automatic``, ``email.auto_replied``
    (vacation notices and other RFC 3834 auto-replies, which are not replies). The same
    reply (``detail.data["message_id"]``) is recorded once."""
    _check(workspace_id, delivery)
    kind = "email.auto_replied" if automatic else "email.replied"
    message_id = detail.data.get("message_id")
    if message_id:
        seen = await _events_of(session, delivery, kind)
        if any(data.get("message_id") == message_id for data in seen):
            return False
    await _event(session, delivery, kind, detail, now)
    return True


# -- helpers -----------------------------------------------------------------------------


def _check(workspace_id: uuid.UUID, delivery: Delivery) -> None:
    if delivery.workspace_id != workspace_id:
        raise FeedbackError(f"delivery {delivery.id} is not in workspace {workspace_id}")


def _note(detail: Detail) -> str:
    parts = [detail.source, detail.status or "", detail.diagnostic or ""]
    return " ".join(" ".join(p for p in parts if p).split())[:_TEXT_LIMIT]


async def _move(
    session: AsyncSession,
    delivery: Delivery,
    status: str,
    allowed: tuple[str, ...],
    detail: Detail,
    now: datetime,
    *,
    sent_at: datetime | None = None,
) -> bool:
    """Conditional status change (``allowed`` → ``status``): concurrent reports for the
    same delivery move it once."""
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if detail.diagnostic and status != "sent":
        values["smtp_response"] = _note(detail)
    if sent_at is not None:
        values["sent_at"] = sent_at
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery.id,
            Delivery.workspace_id == delivery.workspace_id,
            Delivery.status.in_(allowed),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    for name, value in values.items():
        set_committed_value(delivery, name, value)
    return True


async def _contact_ids(
    session: AsyncSession, workspace_id: uuid.UUID, delivery: Delivery
) -> list[uuid.UUID]:
    """The delivery's contact, and any contact of the workspace with that address (a
    transactional delivery has no contact id, but the person may be a contact)."""
    condition = Contact.email_hash == email_hash(delivery.email)
    if delivery.contact_id is not None:
        condition = or_(condition, Contact.id == delivery.contact_id)
    rows = await session.execute(
        select(Contact.id).where(Contact.workspace_id == workspace_id, condition)
    )
    return list(rows.scalars())


async def _set_contact_status(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    delivery: Delivery,
    status: str,
    overwrites: tuple[str, ...],
    now: datetime,
) -> bool:
    ids = await _contact_ids(session, workspace_id, delivery)
    if not ids:
        return False
    result = await session.execute(
        update(Contact)
        .where(
            Contact.workspace_id == workspace_id,
            Contact.id.in_(ids),
            Contact.status.in_(overwrites),
        )
        .values(status=status, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def _events_of(session: AsyncSession, delivery: Delivery, kind: str) -> list[dict[str, Any]]:
    """The data of the ``kind`` events already recorded for the delivery. ``events`` has
    no index on ``resource_id``; the contact's index (or the workspace/type/time one for a
    delivery without a contact), bounded by the delivery's creation, keeps this small."""
    query = select(Event.data).where(
        Event.workspace_id == delivery.workspace_id,
        Event.type == kind,
        Event.resource_id == delivery.id,
        # A day of slack: another process's clock may run a little behind.
        Event.occurred_at >= delivery.created_at - timedelta(days=1),
    )
    if delivery.contact_id is not None:
        query = query.where(Event.contact_id == delivery.contact_id)
    return [dict(data or {}) for data in (await session.execute(query)).scalars()]


async def _count_events(session: AsyncSession, delivery: Delivery, kind: str) -> int:
    return len(await _events_of(session, delivery, kind))


async def _event(
    session: AsyncSession,
    delivery: Delivery,
    kind: str,
    detail: Detail,
    now: datetime,
    **extra: Any,
) -> None:
    data: dict[str, Any] = {
        "send_id": str(delivery.send_id),
        "email": delivery.email,
        "source": detail.source,
    }
    if detail.status:
        data["status"] = detail.status
    if detail.diagnostic:
        data["diagnostic"] = detail.diagnostic[:_TEXT_LIMIT]
    data.update(extra)
    data.update(detail.data)
    await record(
        session,
        workspace_id=delivery.workspace_id,
        type=kind,
        occurred_at=now,
        contact_id=delivery.contact_id,
        resource_type="delivery",
        resource_id=delivery.id,
        data=data,
    )
