"""Double opt-in, the public side: signed ``/c/{token}`` links, the confirmation they
lead to, and the expiry of unconfirmed subscriptions (``postroom.contacts.double_opt_in``
queues the mails).

A token names the workspace, list and contact and the second it was issued; it is signed
with the ``confirm`` purpose key, so no other link of ours (and nothing we did not sign)
can stand in for it. ``GET /c/{token}`` only looks (``examine``); ``POST`` confirms.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.events.service import record
from postroom.models.contacts import Contact, ContactList, Subscription

PURPOSE = "confirm"


# -- tokens --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfirmRef:
    """What a confirmation link names. ``issued_at`` (whole seconds) bounds its life."""

    workspace_id: uuid.UUID
    list_id: uuid.UUID
    contact_id: uuid.UUID
    issued_at: datetime

    def pack(self) -> bytes:
        stamp = struct.pack(">Q", int(self.issued_at.timestamp()))
        return self.workspace_id.bytes + self.list_id.bytes + self.contact_id.bytes + stamp

    @classmethod
    def unpack(cls, data: bytes) -> ConfirmRef | None:
        if len(data) != 56:
            return None
        ids = [uuid.UUID(bytes=data[i : i + 16]) for i in range(0, 48, 16)]
        (seconds,) = struct.unpack(">Q", data[48:])
        try:
            issued = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return cls(ids[0], ids[1], ids[2], issued)


def confirm_url(ctx: AppContext, ref: ConfirmRef) -> str:
    return f"{ctx.settings.public_base_url}/c/{ctx.signer(PURPOSE).sign(ref.pack())}"


def read_token(ctx: AppContext, token: str) -> ConfirmRef | None:
    """The reference a token names, or ``None`` for anything we did not sign."""
    payload = ctx.signer(PURPOSE).verify(token)
    return ConfirmRef.unpack(payload) if payload else None


def expiry(ctx: AppContext) -> timedelta:
    return timedelta(hours=ctx.settings.double_opt_in_expiry_hours)


# -- the public confirmation ---------------------------------------------------------------

PageState = Literal["confirm", "done", "already", "expired", "gone"]


@dataclass(slots=True)
class Confirmation:
    state: PageState
    list_name: str | None = None
    email: str | None = None


async def examine(
    ctx: AppContext, session: AsyncSession, ref: ConfirmRef, now: datetime
) -> tuple[Confirmation, Subscription | None]:
    """Where a valid token stands, without changing anything (the GET page)."""
    row = (
        await session.execute(
            select(ContactList, Contact, Subscription)
            .join(Subscription, Subscription.list_id == ContactList.id)
            .join(Contact, Contact.id == Subscription.contact_id)
            .where(
                ContactList.id == ref.list_id,
                ContactList.workspace_id == ref.workspace_id,
                Subscription.contact_id == ref.contact_id,
                Contact.workspace_id == ref.workspace_id,
            )
        )
    ).first()
    if row is None:
        return Confirmation("gone"), None
    contact_list, contact, subscription = row
    found = Confirmation("confirm", contact_list.name, contact.email)
    if subscription.status == "subscribed":
        found.state = "already"
    elif subscription.status != "unconfirmed":
        # Unsubscribed since: an old confirmation link must not undo that.
        found.state = "gone"
    elif ref.issued_at + expiry(ctx) < now:
        found.state = "expired"
    return found, subscription


async def confirm(
    ctx: AppContext,
    session: AsyncSession,
    ref: ConfirmRef,
    now: datetime,
    *,
    evidence: dict[str, Any],
) -> Confirmation:
    """``unconfirmed`` → ``subscribed`` (the POST). Idempotent: a second POST finds it
    ``already`` confirmed and records nothing."""
    found, _subscription = await examine(ctx, session, ref, now)
    if found.state != "confirm":
        return found
    changed = (
        await session.execute(
            update(Subscription)
            .where(
                Subscription.list_id == ref.list_id,
                Subscription.contact_id == ref.contact_id,
                Subscription.status == "unconfirmed",
            )
            .values(status="subscribed", confirmed_at=now, subscribed_at=now, updated_at=now)
            .returning(Subscription.contact_id)
            .execution_options(synchronize_session=False)
        )
    ).first()
    if changed is None:  # confirmed by a concurrent request a moment ago
        found.state = "already"
        return found
    await record(
        session,
        workspace_id=ref.workspace_id,
        type="contact.subscribed",
        occurred_at=now,
        contact_id=ref.contact_id,
        resource_type="list",
        resource_id=ref.list_id,
        data={
            "list_id": str(ref.list_id),
            "status": "subscribed",
            "source": "double_opt_in",
            "link_issued_at": ref.issued_at.isoformat(),
            **evidence,
        },
    )
    found.state = "done"
    return found


# -- expiry (scheduler) --------------------------------------------------------------------


async def expire_unconfirmed(session: AsyncSession, ctx: AppContext) -> int:
    """Delete unconfirmed subscriptions older than the expiry, in every workspace: one
    statement through the partial index. Any number of schedulers may run it at once (a
    row deleted by one is simply not found by the other)."""
    cutoff = ctx.clock.now() - expiry(ctx)
    result = await session.execute(
        delete(Subscription).where(
            Subscription.status == "unconfirmed", Subscription.updated_at < cutoff
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
