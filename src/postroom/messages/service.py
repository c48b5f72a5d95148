"""Transactional messages: one request becomes one send (kind ``transactional``, the most
urgent priority) and a queued delivery per accepted recipient; the delivery engine does
the rest. A message's id is its send's id.

Recipients need not be contacts. When one is, its contact is attached (merge tags, the
contact's history). A recipient is rejected, without failing the request, when its
address is invalid, repeated, or suppressed for a reason that blocks transactional mail
(bounce, complaint, manual: an unsubscribe does not).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.contact_fields import FieldError, normalize_email
from postroom.delivery.engine import TO_NAME_VARIABLE
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.errors import FieldProblem, NotFound, ValidationFailed
from postroom.events.service import record_many
from postroom.messages.schemas import BatchEntry, Mailbox, MessageCreate
from postroom.models.contacts import (
    TRANSACTIONAL_BLOCKING_REASONS,
    Contact,
    Suppression,
    email_hash,
)
from postroom.models.delivery import PRIORITY_TRANSACTIONAL, Delivery, Send
from postroom.models.platform import Event
from postroom.models.templates import TemplateVersion
from postroom.templates.errors import TemplateProblem
from postroom.templates.rendering import compile_content_cached
from postroom.templates.repository import TemplateRepository

MESSAGE = "message"
IMMUTABLE_VERSIONS = ("published", "unpublished")


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    email: str
    status: str  # queued | rejected
    reason: str | None = None
    detail: str | None = None
    delivery_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    send: Send
    recipients: list[RecipientOutcome]


@dataclass(frozen=True, slots=True)
class MessageView:
    send: Send
    deliveries: list[Delivery]
    events: dict[uuid.UUID, list[Event]]

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(delivery.status for delivery in self.deliveries))


@dataclass(slots=True)
class _Candidate:
    raw: str
    name: str | None
    variables: dict[str, Any]
    email: str = ""
    key: str = ""
    outcome: RecipientOutcome | None = None


class MessageService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID, now: datetime) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now

    # -- sending ---------------------------------------------------------------------------

    async def send(self, request: MessageCreate) -> Accepted:
        entries = _entries(request)
        content = await self._content(request)
        sender = _address(request.from_.email, "from.email")
        reply_to = _address(request.reply_to, "reply_to") if request.reply_to else None
        candidates = [
            _Candidate(
                raw=entry.to if isinstance(entry.to, str) else entry.to.email,
                name=None if isinstance(entry.to, str) else entry.to.name,
                variables={**request.variables, **(entry.variables or {})},
            )
            for entry in entries
        ]
        accepted = await self._screen(candidates)
        contacts = await self._contacts([c.key for c in accepted])
        send = await create_send(
            self.session,
            self.workspace_id,
            SendSpec(
                kind="transactional",
                purpose="transactional",
                priority=PRIORITY_TRANSACTIONAL,
                content=content,
                from_email=sender,
                from_name=request.from_.name or "",
                reply_to=reply_to,
                track_opens=request.track_opens,
                track_clicks=request.track_clicks,
                tags=request.tags,
                metadata=request.metadata,
            ),
            self.now,
        )
        recipients = [
            Recipient(c.email, contacts.get(c.key), _variables(c) or None) for c in accepted
        ]
        ids = await enqueue(self.session, send, recipients, self.now)
        for candidate, delivery_id in zip(accepted, ids, strict=True):
            candidate.outcome = RecipientOutcome(candidate.email, "queued", delivery_id=delivery_id)
        await record_many(
            self.session,
            [
                {
                    "workspace_id": self.workspace_id,
                    "type": "email.queued",
                    "contact_id": recipient.contact_id,
                    "resource_type": "delivery",
                    "resource_id": delivery_id,
                    "data": {"send_id": str(send.id), "email": recipient.email},
                    "occurred_at": self.now,
                }
                for recipient, delivery_id in zip(recipients, ids, strict=True)
            ],
        )
        outcomes = [c.outcome for c in candidates if c.outcome is not None]
        return Accepted(send, outcomes)

    async def _screen(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """Reject invalid, repeated and suppressed addresses; the rest are accepted."""
        seen: set[str] = set()
        valid: list[_Candidate] = []
        for candidate in candidates:
            try:
                candidate.email, candidate.key = normalize_email(candidate.raw)
            except FieldError as error:
                message = str(error).removeprefix("email: ")
                candidate.outcome = _rejected(candidate.raw, "invalid_email", message)
                continue
            if candidate.key in seen:
                detail = "the address appears earlier in this request"
                candidate.outcome = _rejected(candidate.email, "duplicate", detail)
                continue
            seen.add(candidate.key)
            valid.append(candidate)
        blocked = await self._suppressed([c.key for c in valid])
        accepted = []
        for candidate in valid:
            reasons = blocked.get(email_hash(candidate.key))
            if reasons:
                detail = f"the address is suppressed ({', '.join(sorted(reasons))})"
                candidate.outcome = _rejected(candidate.email, "suppressed", detail)
            else:
                accepted.append(candidate)
        return accepted

    async def _suppressed(self, keys: list[str]) -> dict[str, set[str]]:
        if not keys:
            return {}
        rows = await self.session.execute(
            select(Suppression.email_hash, Suppression.reason).where(
                Suppression.workspace_id == self.workspace_id,
                Suppression.email_hash.in_([email_hash(key) for key in keys]),
                Suppression.reason.in_(TRANSACTIONAL_BLOCKING_REASONS),
            )
        )
        found: dict[str, set[str]] = {}
        for hashed, reason in rows.all():
            found.setdefault(hashed, set()).add(reason)
        return found

    async def _contacts(self, keys: list[str]) -> dict[str, uuid.UUID]:
        if not keys:
            return {}
        rows = await self.session.execute(
            select(Contact.email_key, Contact.id).where(
                Contact.workspace_id == self.workspace_id, Contact.email_key.in_(keys)
            )
        )
        return dict(rows.all())

    # -- content ---------------------------------------------------------------------------

    async def _content(self, request: MessageCreate) -> dict[str, Any]:
        """The frozen content of the send: template versions by locale, or inline."""
        sources = [
            name
            for name, given in (
                ("template_id", request.template_id is not None),
                ("template_version_id", request.template_version_id is not None),
                ("subject", request.subject is not None or bool(request.html or request.text)),
            )
            if given
        ]
        if len(sources) != 1:
            message = (
                "give one of template_id, template_version_id or subject with html/text"
                if not sources
                else f"give only one of {', '.join(sources)}"
            )
            raise ValidationFailed.single("body", message, "content_required")
        if request.template_id is not None:
            return await self._template_content(request.template_id)
        if request.template_version_id is not None:
            return await self._version_content(request.template_version_id)
        return _inline_content(request)

    async def _template_content(self, template_id: uuid.UUID) -> dict[str, Any]:
        templates = TemplateRepository(self.session, self.workspace_id)
        template = await templates.get(template_id)
        if template is None:
            raise ValidationFailed.single(
                "template_id", f"template {template_id} not found", "not_found"
            )
        versions = await templates.published([template.id])
        if not versions:
            raise ValidationFailed.single(
                "template_id", "the template has no published version", "not_published"
            )
        locales = {version.locale: str(version.id) for version in versions}
        default = template.default_locale if template.default_locale in locales else min(locales)
        return {"versions": locales, "default_locale": default, "template_id": str(template.id)}

    async def _version_content(self, version_id: uuid.UUID) -> dict[str, Any]:
        version = (
            await self.session.execute(
                select(TemplateVersion).where(
                    TemplateVersion.id == version_id,
                    TemplateVersion.workspace_id == self.workspace_id,
                )
            )
        ).scalar_one_or_none()
        if version is None:
            raise ValidationFailed.single(
                "template_version_id", f"template version {version_id} not found", "not_found"
            )
        if version.status not in IMMUTABLE_VERSIONS:
            raise ValidationFailed.single(
                "template_version_id",
                "the version is a draft: publish it first (drafts can still change)",
                "not_published",
            )
        return {
            "versions": {version.locale: str(version.id)},
            "default_locale": version.locale,
            "template_id": str(version.template_id),
        }

    # -- reading ---------------------------------------------------------------------------

    async def get(self, message_id: uuid.UUID) -> MessageView:
        send = (
            await self.session.execute(
                select(Send).where(
                    Send.id == message_id,
                    Send.workspace_id == self.workspace_id,
                    Send.kind == "transactional",
                )
            )
        ).scalar_one_or_none()
        if send is None:
            raise NotFound(MESSAGE, message_id)
        deliveries = list(
            (
                await self.session.execute(
                    select(Delivery).where(Delivery.send_id == send.id).order_by(Delivery.id)
                )
            ).scalars()
        )
        events: dict[uuid.UUID, list[Event]] = {d.id: [] for d in deliveries}
        if deliveries:
            rows = await self.session.execute(
                select(Event)
                .where(
                    Event.workspace_id == self.workspace_id,
                    Event.resource_type == "delivery",
                    Event.resource_id.in_(list(events)),
                )
                .order_by(Event.seq)
            )
            for event in rows.scalars():
                if event.resource_id is not None:
                    events[event.resource_id].append(event)
        return MessageView(send, deliveries, events)


async def is_message(session: AsyncSession, workspace_id: uuid.UUID, raw: str) -> bool:
    """Path-id check: a transactional send of this workspace."""
    try:
        message_id = uuid.UUID(raw)
    except ValueError:
        return False
    query = select(Send.id).where(
        Send.id == message_id, Send.workspace_id == workspace_id, Send.kind == "transactional"
    )
    return (await session.execute(query.limit(1))).first() is not None


def _entries(request: MessageCreate) -> list[BatchEntry]:
    if (request.to is None) == (request.batch is None):
        raise ValidationFailed.single("to", "give either to or batch", "recipients_required")
    if request.batch is not None:
        if not request.batch:
            raise ValidationFailed.single("batch", "the batch is empty", "recipients_required")
        return request.batch
    assert request.to is not None
    return [BatchEntry(to=request.to)]


def _inline_content(request: MessageCreate) -> dict[str, Any]:
    if not request.subject:
        raise ValidationFailed.single("subject", "inline content needs a subject", "required")
    if not (request.html or request.text):
        raise ValidationFailed.single("html", "inline content needs html or text", "required")
    try:
        # Checked now, so a template error is this request's 422 and not a failed send.
        compile_content_cached(
            subject=request.subject,
            html=request.html or "",
            text=request.text,
            preheader=request.preheader,
            kind="transactional",
        )
    except TemplateProblem as problem:
        raise ValidationFailed(
            [FieldProblem(e.field, e.message, "template_invalid") for e in problem.errors],
            f"the content does not compile: {problem}",
        ) from None
    return {
        "inline": {
            "subject": request.subject,
            "html": request.html,
            "text": request.text,
            "preheader": request.preheader,
        }
    }


def _address(raw: str, field: str) -> str:
    try:
        return normalize_email(raw)[0]
    except FieldError as error:
        raise ValidationFailed.single(
            field, str(error).removeprefix("email: "), "invalid_email"
        ) from None


def _variables(candidate: _Candidate) -> dict[str, Any]:
    variables = dict(candidate.variables)
    if candidate.name and TO_NAME_VARIABLE not in variables:
        variables[TO_NAME_VARIABLE] = candidate.name
    return variables


def _rejected(email: str, reason: str, detail: str) -> RecipientOutcome:
    return RecipientOutcome(email, "rejected", reason, detail)


def mailbox_of(send: Send) -> Mailbox:
    return Mailbox(email=send.from_email, name=send.from_name or None)
