"""Double opt-in: confirmation mails, the ``/c/{token}`` confirmation, resend and expiry.

Subscribing a contact to a list with ``double_opt_in`` leaves the subscription
``unconfirmed`` and, in the same transaction, queues a confirmation mail through the
transactional machinery of the ledger (a send of kind ``transactional`` at transactional
priority, one delivery per contact), so nothing is mailed for a rolled-back subscribe and
nothing is lost for a committed one. Every path that subscribes goes through here: the
list subscribe API (ids/emails, and filters through their job), contact upsert and bulk
upsert with ``lists``, and imports into a list.

The mail carries a signed ``/c/{token}`` link (``postroom.contacts.confirmation``) naming
the workspace, list and contact and the time it was issued. ``GET /c/{token}`` only shows
a page with a button, since link scanners prefetch every URL in a message; ``POST`` confirms:
``unconfirmed`` → ``subscribed`` with ``confirmed_at``, and a ``contact.subscribed`` event
in the same transaction. A token older than ``POSTROOM_DOUBLE_OPT_IN_EXPIRY_HOURS`` no
longer confirms, and a scheduler task deletes unconfirmed subscriptions that old (set-based):
an address nobody confirmed never consented, so nothing about the attempt is kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.confirmation import (
    PURPOSE,
    Confirmation,
    ConfirmRef,
    confirm,
    confirm_url,
    examine,
    expire_unconfirmed,
    expiry,
    read_token,
)
from postroom.context import AppContext
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from postroom.events.service import record_many
from postroom.models.contacts import (
    TRANSACTIONAL_BLOCKING_REASONS,
    Contact,
    ContactList,
    Subscription,
    Suppression,
)
from postroom.models.delivery import PRIORITY_TRANSACTIONAL, Send
from postroom.models.domains import SendingDomain
from postroom.models.double_opt_in import ListConfirmation
from postroom.templates.errors import TemplateProblem
from postroom.templates.rendering import compile_content_cached
from postroom.templates.repository import TemplateRepository

# The public side lives in ``postroom.contacts.confirmation``; re-exported for callers.
__all__ = [
    "PURPOSE",
    "ConfirmRef",
    "Confirmation",
    "ConfirmationSettings",
    "DoubleOptIn",
    "check_inline",
    "confirm",
    "confirm_url",
    "examine",
    "expire_unconfirmed",
    "expiry",
    "read_token",
]

CHUNK = 1000
TAG = "double-opt-in"

DEFAULT_SUBJECT = "Please confirm your subscription to {{ list_name }}"
DEFAULT_HTML = """<!doctype html>
<html><body style="font-family:Arial,Helvetica,sans-serif;color:#222;line-height:1.5">
<p>Hello{% if contact.first_name %} {{ contact.first_name }}{% endif %},</p>
<p>Please confirm that you want to receive <strong>{{ list_name }}</strong>.</p>
<p><a href="{{ confirm_url }}" style="display:inline-block;padding:10px 18px;background:#222;\
color:#fff;text-decoration:none;border-radius:4px">Confirm my subscription</a></p>
<p style="color:#666;font-size:13px">If you did not ask for this, ignore this message:
you will not be subscribed.</p>
</body></html>
"""
DEFAULT_TEXT = """Hello{% if contact.first_name %} {{ contact.first_name }}{% endif %},

Please confirm that you want to receive {{ list_name }}:

{{ confirm_url }}

If you did not ask for this, ignore this message: you will not be subscribed.
"""


# -- per-list settings ---------------------------------------------------------------------


@dataclass(slots=True)
class ConfirmationSettings:
    """The effective confirmation mail of a list (``custom`` is False for the default)."""

    list_id: uuid.UUID
    custom: bool
    template_id: uuid.UUID | None
    subject: str | None
    html: str | None
    text: str | None
    from_email: str | None
    from_name: str | None
    reply_to: str | None


def check_inline(subject: str | None, html: str | None, text: str | None) -> None:
    """A custom inline body must compile and carry the link, or it would mail a dead end."""
    if subject is None and html is None and text is None:
        return
    if not subject or not (html or text):
        raise ValidationFailed.single(
            "subject", "a custom confirmation mail needs a subject and html or text", "required"
        )
    if not any("confirm_url" in (part or "") for part in (html, text)):
        raise ValidationFailed.single(
            "html", "the confirmation mail must contain {{ confirm_url }}", "confirm_url_missing"
        )
    try:
        compile_content_cached(
            subject=subject, html=html or "", text=text, preheader=None, kind="transactional"
        )
    except TemplateProblem as problem:
        raise ValidationFailed(
            [FieldProblem(e.field, e.message, "template_invalid") for e in problem.errors],
            f"the content does not compile: {problem}",
        ) from None


# -- the service ---------------------------------------------------------------------------


class DoubleOptIn:
    """Queueing, resending and configuring confirmation mails of one workspace."""

    def __init__(
        self, ctx: AppContext, session: AsyncSession, workspace_id: uuid.UUID, now: datetime
    ) -> None:
        self.ctx = ctx
        self.session = session
        self.workspace_id = workspace_id
        self.now = now

    async def queue(self, row: ContactList, contact_ids: Sequence[uuid.UUID]) -> int:
        """Queue a confirmation for each contact (one send, deliveries in chunks); returns
        how many were queued. Contacts suppressed for transactional mail, bounced or
        complained get none (the engine would skip them anyway)."""
        if not contact_ids:
            return 0
        send: Send | None = None
        queued = 0
        ids = list(dict.fromkeys(contact_ids))
        for start in range(0, len(ids), CHUNK):
            rows = await self._mailable(ids[start : start + CHUNK])
            if not rows:
                continue
            if send is None:
                send = await self._create_send(row)
            queued += await self._enqueue(send, row, rows)
        return queued

    async def resend(self, list_id: uuid.UUID, contact_id: uuid.UUID) -> int:
        """Mail a fresh link; the subscription's expiry starts again. 409 unless the
        subscription is ``unconfirmed``."""
        row = await self._list(list_id)
        subscription = (
            await self.session.execute(
                select(Subscription).where(
                    Subscription.list_id == row.id,
                    Subscription.contact_id == contact_id,
                    Subscription.workspace_id == self.workspace_id,
                )
            )
        ).scalar_one_or_none()
        if subscription is None:
            raise NotFound("subscription", contact_id)
        if subscription.status != "unconfirmed":
            raise Conflict(
                f"the subscription is {subscription.status}: only an unconfirmed "
                "subscription gets a confirmation mail"
            )
        queued = await self.queue(row, [contact_id])
        if not queued:
            raise Conflict("the address is suppressed for transactional mail")
        subscription.updated_at = self.now
        await self.session.flush()
        return queued

    async def settings(self, list_id: uuid.UUID) -> ConfirmationSettings:
        row = await self._list(list_id)
        custom = await self.session.get(ListConfirmation, row.id)
        if custom is None:
            return ConfirmationSettings(row.id, False, None, None, None, None, None, None, None)
        return ConfirmationSettings(
            row.id,
            True,
            custom.template_id,
            custom.subject,
            custom.html,
            custom.text,
            custom.from_email,
            custom.from_name,
            custom.reply_to,
        )

    async def configure(self, list_id: uuid.UUID, values: dict[str, Any]) -> ConfirmationSettings:
        """Replace the list's confirmation settings (all ``None`` → the default mail)."""
        row = await self._list(list_id)
        check_inline(values.get("subject"), values.get("html"), values.get("text"))
        template_id = values.get("template_id")
        if template_id is not None:
            if values.get("subject") or values.get("html") or values.get("text"):
                raise ValidationFailed.single(
                    "template_id", "give either template_id or subject/html/text", "conflict"
                )
            templates = TemplateRepository(self.session, self.workspace_id)
            template = await templates.get(template_id)
            if template is None:
                raise ValidationFailed.single(
                    "template_id", f"template {template_id} not found", "not_found"
                )
            if not await templates.published([template.id]):
                raise ValidationFailed.single(
                    "template_id", "the template has no published version", "not_published"
                )
        custom = await self.session.get(ListConfirmation, row.id)
        if all(v is None for v in values.values()):
            if custom is not None:
                await self.session.delete(custom)
                await self.session.flush()
            return await self.settings(list_id)
        if custom is None:
            custom = ListConfirmation(
                list_id=row.id, workspace_id=self.workspace_id, created_at=self.now
            )
            self.session.add(custom)
        for name in ("template_id", "subject", "html", "text", "from_email", "from_name"):
            setattr(custom, name, values.get(name))
        custom.reply_to = values.get("reply_to")
        custom.updated_at = self.now
        await self.session.flush()
        return await self.settings(list_id)

    # -- internals -------------------------------------------------------------------------

    async def _list(self, list_id: uuid.UUID) -> ContactList:
        row = (
            await self.session.execute(
                select(ContactList).where(
                    ContactList.id == list_id, ContactList.workspace_id == self.workspace_id
                )
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("list", list_id)
        return row

    async def _mailable(self, ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, str]]:
        query = (
            select(Contact.id, Contact.email)
            .where(
                Contact.workspace_id == self.workspace_id,
                Contact.id.in_(ids),
                Contact.status.not_in(("bounced", "complained")),
                ~select(Suppression.id)
                .where(
                    Suppression.workspace_id == self.workspace_id,
                    Suppression.email_hash == Contact.email_hash,
                    Suppression.reason.in_(TRANSACTIONAL_BLOCKING_REASONS),
                )
                .exists(),
            )
            .order_by(Contact.id)
        )
        return [(row[0], row[1]) for row in (await self.session.execute(query)).all()]

    async def _create_send(self, row: ContactList) -> Send:
        custom = await self.session.get(ListConfirmation, row.id)
        content = await self._content(custom)
        return await create_send(
            self.session,
            self.workspace_id,
            SendSpec(
                kind="transactional",
                purpose="transactional",
                priority=PRIORITY_TRANSACTIONAL,
                content=content,
                from_email=(custom.from_email if custom else None) or await self._sender(),
                from_name=(custom.from_name if custom else None) or "",
                reply_to=custom.reply_to if custom else None,
                # The link is the whole point of the mail: no redirect in front of it, and
                # no pixel in a message the person has not agreed to receive yet.
                track_opens=False,
                track_clicks=False,
                list_ids=[str(row.id)],
                tags=[TAG],
                metadata={"double_opt_in_list_id": str(row.id)},
            ),
            self.now,
        )

    async def _content(self, custom: ListConfirmation | None) -> dict[str, Any]:
        if custom is not None and custom.template_id is not None:
            templates = TemplateRepository(self.session, self.workspace_id)
            template = await templates.get(custom.template_id)
            versions = await templates.published([custom.template_id]) if template else []
            if template is not None and versions:
                locales = {version.locale: str(version.id) for version in versions}
                default = (
                    template.default_locale if template.default_locale in locales else min(locales)
                )
                return {
                    "versions": locales,
                    "default_locale": default,
                    "template_id": str(template.id),
                }
            # An unpublished or deleted template must not stop subscriptions: the
            # built-in mail goes instead.
        if custom is not None and custom.subject and (custom.html or custom.text):
            inline = {"subject": custom.subject, "html": custom.html, "text": custom.text}
        else:
            inline = {"subject": DEFAULT_SUBJECT, "html": DEFAULT_HTML, "text": DEFAULT_TEXT}
        return {"inline": {**inline, "preheader": None}}

    async def _sender(self) -> str:
        if self.ctx.settings.double_opt_in_from:
            return self.ctx.settings.double_opt_in_from
        domain = (
            await self.session.execute(
                select(SendingDomain.domain)
                .where(SendingDomain.workspace_id == self.workspace_id)
                .order_by(SendingDomain.created_at, SendingDomain.id)
                .limit(1)
            )
        ).scalar_one_or_none()
        if domain is None:
            host = self.ctx.settings.public_base_url.split("://", 1)[-1].split("/", 1)[0]
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
            domain = host if "." in host and not host.replace(".", "").isdigit() else "localhost"
        return f"no-reply@{domain}"

    async def _enqueue(
        self, send: Send, row: ContactList, contacts: list[tuple[uuid.UUID, str]]
    ) -> int:
        recipients = [
            Recipient(
                email,
                contact_id,
                {
                    "confirm_url": confirm_url(
                        self.ctx, ConfirmRef(self.workspace_id, row.id, contact_id, self.now)
                    ),
                    "list_name": row.name,
                },
            )
            for contact_id, email in contacts
        ]
        ids = await enqueue(self.session, send, recipients, self.now)
        await record_many(
            self.session,
            [
                {
                    "workspace_id": self.workspace_id,
                    "type": "email.queued",
                    "contact_id": recipient.contact_id,
                    "resource_type": "delivery",
                    "resource_id": delivery_id,
                    "data": {"send_id": str(send.id), "email": recipient.email, "kind": TAG},
                    "occurred_at": self.now,
                }
                for recipient, delivery_id in zip(recipients, ids, strict=True)
            ],
        )
        return len(ids)
