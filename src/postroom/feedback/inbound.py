"""From one inbound message to its effect: classify, match the delivery, apply the effect
(``postroom.feedback.effects``) in one transaction, forward replies after the commit, and
keep whatever could not be used.

``InboundProcessor.handle`` never raises: a message whose handling fails for any reason is
kept (kind ``error``) with the exception's text, so hostile or broken mail costs one row,
never the receiver. Counters (``inbound_counters``) record every outcome, forged VERP and
reply addresses included (those are ignored: no effect, nothing kept).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.delivery.transport import Envelope, Transport
from postroom.feedback import effects, matching
from postroom.feedback import repository as repo
from postroom.feedback.addresses import read_reply_address, reply_keys
from postroom.feedback.classify import Classified, RecipientReport, classify, parse
from postroom.feedback.effects import Detail, SoftBouncePolicy
from postroom.feedback.forward import forward_copy, loop_reason
from postroom.models.delivery import Delivery, Send

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMail:
    mail_from: str  # the envelope sender ("" for a bounce's null sender)
    rcpt_tos: Sequence[str]
    data: bytes


@dataclass(slots=True)
class Handled:
    """What became of a message: ``outcome`` is also the counter that was bumped."""

    outcome: str
    delivery_id: uuid.UUID | None = None
    kept_id: uuid.UUID | None = None
    forwarded_to: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Addressed:
    verp_id: uuid.UUID | None = None
    reply_id: uuid.UUID | None = None
    forged: bool = False


@dataclass(slots=True)
class _Forward:
    to: str
    data: bytes
    delivery_id: uuid.UUID


class InboundProcessor:
    def __init__(self, ctx: AppContext, *, transport: Transport | None = None) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.verp_keys = matching.verp_keys(settings)
        self.reply_keys = reply_keys(settings)
        self.reply_domain = settings.effective_reply_domain
        self.policy = SoftBouncePolicy.from_settings(settings)
        self.keep_bytes = settings.inbound_keep_bytes
        self._transport = transport
        self._own_transport = False

    @property
    def transport(self) -> Transport:
        """The instance transport (``POSTROOM_SMTP_URL`` or the Maildir capture), made on
        first use: most inbound mail is never forwarded."""
        if self._transport is None:
            from postroom.delivery.transports import instance_transport

            self._transport = instance_transport(self.ctx.settings)
            self._own_transport = True
        return self._transport

    async def close(self) -> None:
        if self._own_transport and self._transport is not None:
            await self._transport.close()

    async def handle(self, mail: InboundMail) -> Handled:
        try:
            handled, forward = await self._handle(mail)
        except Exception as exc:
            log.exception("inbound message could not be handled")
            return await self._keep_error(mail, f"{type(exc).__name__}: {exc}")
        if forward is not None:
            await self._forward(mail, forward, handled)
        return handled

    # -- steps -----------------------------------------------------------------------

    def _addressed(self, rcpt_tos: Sequence[str]) -> _Addressed:
        found = _Addressed()
        for rcpt in rcpt_tos:
            verp = matching.read_verp(rcpt, self.verp_keys)
            if verp.delivery_id is not None and found.verp_id is None:
                found.verp_id = verp.delivery_id
            found.forged |= verp.forged
            reply_id, forged = read_reply_address(rcpt, self.reply_keys)
            if reply_id is not None and found.reply_id is None:
                found.reply_id = reply_id
            found.forged |= forged
        return found

    async def _handle(self, mail: InboundMail) -> tuple[Handled, _Forward | None]:
        addressed = self._addressed(mail.rcpt_tos)
        now = self.ctx.clock.now()
        if addressed.forged and addressed.verp_id is None and addressed.reply_id is None:
            async with self.ctx.db.transaction() as session:
                await repo.bump(session, "forged", now)
            return Handled("forged", notes=["forged VERP or reply address: ignored"]), None
        # Parsing a large message is CPU work: off the event loop the API shares.
        classified = await asyncio.to_thread(
            classify,
            mail.data,
            mail_from=mail.mail_from,
            verp_recipient=addressed.verp_id is not None,
            reply_recipient=addressed.reply_id is not None,
        )
        async with self.ctx.db.transaction() as session:
            delivery, forged = await self._match(session, addressed, classified)
            if forged:
                await repo.bump(session, "forged", now)
                return Handled("forged", notes=["forged VERP address in the report"]), None
            handled, forward = await self._apply(session, mail, classified, delivery)
            if handled.outcome == "kept":
                handled.kept_id = await self._keep(session, mail, classified, delivery)
            await repo.bump(session, handled.outcome, now)
        return handled, forward

    async def _match(
        self, session: AsyncSession, addressed: _Addressed, classified: Classified
    ) -> tuple[Delivery | None, bool]:
        """The delivery, and whether a VERP address quoted in the report was forged."""
        if addressed.verp_id is not None:
            return await matching.by_id(session, addressed.verp_id), False
        if addressed.reply_id is not None:
            return await matching.by_id(session, addressed.reply_id), False
        for quoted in (classified.original_mail_from, classified.original_return_path):
            if quoted:
                verp = matching.read_verp(quoted, self.verp_keys)
                if verp.forged:
                    return None, True
                if verp.delivery_id is not None:
                    found = await matching.by_id(session, verp.delivery_id)
                    if found is not None:
                        return found, False
        found = await matching.find_delivery(
            session,
            header=classified.original_delivery,
            message_id=classified.original_message_id,
        )
        return found, False

    async def _apply(
        self,
        session: AsyncSession,
        mail: InboundMail,
        classified: Classified,
        delivery: Delivery | None,
    ) -> tuple[Handled, _Forward | None]:
        kind = classified.kind
        if classified.forwarded_by_us:
            # One of our own forwards came back (a reply-to address pointing at us): not
            # a new reply, nothing to forward again, nothing worth keeping.
            return Handled("forward_loop", delivery_id=delivery.id if delivery else None), None
        if kind == "unknown":
            return Handled("kept", notes=[classified.reason]), None
        if delivery is None:
            classified.reason = f"{classified.reason}; no delivery of ours matched"
            return Handled("kept", notes=[classified.reason]), None
        now = self.ctx.clock.now()
        workspace_id = delivery.workspace_id
        done = Handled(kind, delivery_id=delivery.id)
        if kind == "bounce":
            report = _report_for(classified.recipients, delivery.email)
            detail = Detail(
                "dsn",
                report.status if report else None,
                report.diagnostic if report else None,
                {"action": report.action} if report else {},
            )
            bounce = await effects.bounce(
                session, workspace_id, delivery, detail, now=now, policy=self.policy
            )
            done.outcome = f"bounce_{bounce}"
        elif kind == "delayed":
            pass  # a warning: the remote is still trying; nothing changes yet
        elif kind == "delivered":
            await effects.delivered(session, workspace_id, delivery, Detail("dsn"), now=now)
        elif kind == "complaint":
            detail = Detail("arf", data={"feedback_type": classified.feedback_type or "abuse"})
            await effects.complaint(session, workspace_id, delivery, detail, now=now)
        elif kind == "unsubscribe":
            source = "mailto" if classified.feedback_type is None else "arf"
            await effects.unsubscribe(session, workspace_id, delivery, Detail(source), now=now)
        elif kind in ("reply", "auto_reply"):
            automatic = kind == "auto_reply"
            data = {"message_id": classified.message_id} if classified.message_id else {}
            recorded = await effects.replied(
                session,
                workspace_id,
                delivery,
                Detail("inbound", data=data),
                now=now,
                automatic=automatic,
            )
            if not automatic and recorded:
                return done, await self._forward_plan(session, mail, delivery, done)
        return done, None

    async def _forward_plan(
        self, session: AsyncSession, mail: InboundMail, delivery: Delivery, done: Handled
    ) -> _Forward | None:
        send = await session.get(Send, delivery.send_id)
        if send is None:
            return None
        reason = loop_reason(parse(mail.data), self.reply_domain)
        if reason is not None:
            done.notes.append(f"not forwarded: {reason}")
            await repo.bump(session, "forward_loop", self.ctx.clock.now())
            return None
        target = send.reply_to or send.from_email
        copy = forward_copy(
            mail.data,
            to=target,
            from_email=send.from_email,
            from_name=send.from_name,
            reply_domain=self.reply_domain,
            delivery_id=str(delivery.id),
        )
        return _Forward(target, copy, delivery.id)

    async def _forward(self, mail: InboundMail, forward: _Forward, handled: Handled) -> None:
        try:
            [result] = await self.transport.send_many(
                [Envelope("", forward.to, forward.data, str(forward.delivery_id))]
            )
            ok = result.outcome.kind.value == "sent"
            problem = None if ok else result.response
        except Exception as exc:
            log.exception("forwarding a reply failed")
            problem = f"{type(exc).__name__}: {exc}"
        now = self.ctx.clock.now()
        if problem is None:
            handled.forwarded_to = forward.to
            async with self.ctx.db.transaction() as session:
                await repo.bump(session, "forwarded", now)
            return
        # The reply is recorded; its text must not be lost: keep it for the owner.
        async with self.ctx.db.transaction() as session:
            delivery = await matching.by_id(session, forward.delivery_id)
            handled.kept_id = await repo.keep(
                session,
                kind="error",
                reason=f"reply could not be forwarded to {forward.to}: {problem}"[:2000],
                mail_from=mail.mail_from,
                rcpt_tos=mail.rcpt_tos,
                data=mail.data,
                keep_bytes=self.keep_bytes,
                received_at=now,
                workspace_id=delivery.workspace_id if delivery else None,
                delivery_id=forward.delivery_id,
                contact_id=delivery.contact_id if delivery else None,
            )
            await repo.bump(session, "forward_failed", now)
        handled.notes.append(f"forwarding failed: {problem}")

    async def _keep(
        self,
        session: AsyncSession,
        mail: InboundMail,
        classified: Classified,
        delivery: Delivery | None,
    ) -> uuid.UUID:
        person = classified.from_address
        if classified.kind in ("bounce", "delayed") and classified.recipients:
            person = classified.recipients[0].final_recipient or person
        return await repo.keep(
            session,
            kind="unclassified",
            reason=classified.reason,
            mail_from=mail.mail_from,
            rcpt_tos=mail.rcpt_tos,
            data=mail.data,
            keep_bytes=self.keep_bytes,
            received_at=self.ctx.clock.now(),
            workspace_id=delivery.workspace_id if delivery else None,
            delivery_id=delivery.id if delivery else None,
            contact_id=delivery.contact_id if delivery else None,
            sender=person,
            subject=classified.subject,
        )

    async def _keep_error(self, mail: InboundMail, reason: str) -> Handled:
        try:
            async with self.ctx.db.transaction() as session:
                kept = await repo.keep(
                    session,
                    kind="error",
                    reason=reason,
                    mail_from=mail.mail_from,
                    rcpt_tos=mail.rcpt_tos,
                    data=mail.data,
                    keep_bytes=self.keep_bytes,
                    received_at=self.ctx.clock.now(),
                )
                await repo.bump(session, "error", self.ctx.clock.now())
            return Handled("error", kept_id=kept, notes=[reason])
        except Exception:
            log.exception("could not even keep the failed inbound message")
            return Handled("error", notes=[reason, "not kept"])


def _report_for(reports: Sequence[RecipientReport], email: str) -> RecipientReport | None:
    """The report about this delivery's address, else the first failed one."""
    failed = [r for r in reports if r.action == "failed"] or list(reports)
    for report in failed:
        if report.final_recipient and report.final_recipient.strip("<>").lower() == email.lower():
            return report
    return failed[0] if failed else None
