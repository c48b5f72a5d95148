"""From a ledger row to a message: pick the content, personalise it, apply tracking, and
assemble the headers DESIGN.md requires (List-Unsubscribe one-click, List-Id,
Feedback-ID, X-Postroom-Delivery, VERP return path).

Content is compiled once per send and cached (``compile_content_cached``); only the
per-recipient render and the link rewrite run per message.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.delivery.message import OutgoingMessage
from postroom.delivery.verp import verp_address
from postroom.models.delivery import Send
from postroom.models.templates import TemplateVersion
from postroom.security.tokens import derive_key
from postroom.templates.content import content_for_send
from postroom.templates.locales import pick_version
from postroom.templates.rendering import (
    CompiledContent,
    RenderedContent,
    build_context,
    compile_content_cached,
    render_content,
)
from postroom.tracking.links import insert_open_pixel, rewrite_links
from postroom.tracking.tokens import DeliveryRef, TrackingLinks


@dataclass(frozen=True, slots=True)
class Composed:
    mail_from: str
    rcpt_to: str
    message: OutgoingMessage


def version_for(
    send: Send, locale: str | None, versions: Mapping[str, TemplateVersion]
) -> TemplateVersion:
    """The frozen locale variant a contact gets: its locale, its language, the send's
    default locale, else any (a send always has at least one version)."""
    default = str(send.content.get("default_locale") or "en")
    found = pick_version(versions.values(), locale, default)
    if found is not None:
        return found
    if not versions:
        raise LookupError(f"send {send.id} has no template version")
    return versions[min(versions)]


async def load_versions(session: AsyncSession, send: Send) -> dict[str, TemplateVersion]:
    """The template versions frozen into a send (``{}`` for inline content)."""
    frozen = send.content.get("versions") or {}
    if not frozen:
        return {}
    ids = [uuid.UUID(str(value)) for value in frozen.values()]
    rows = await session.execute(
        select(TemplateVersion).where(
            TemplateVersion.id.in_(ids), TemplateVersion.workspace_id == send.workspace_id
        )
    )
    return {row.locale: row for row in rows.scalars()}


def compiled_for(
    send: Send, locale: str | None, versions: Mapping[str, TemplateVersion] | None = None
) -> CompiledContent:
    """The compiled content of a send for a contact's locale. Inline content is compiled
    here (cached by its hash); template versions (``load_versions``) go through the same
    per-process cache as previews (``content_for_send``)."""
    content = send.content
    if "inline" in content:
        inline = content["inline"]
        return compile_content_cached(
            subject=inline.get("subject", ""),
            html=inline.get("html") or "",
            text=inline.get("text"),
            preheader=inline.get("preheader"),
            kind=send.purpose,
        )
    if versions is None:
        raise LookupError("template-version content needs the versions of the send")
    return content_for_send(send.purpose, version_for(send, locale, versions))


class Composer:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.links = TrackingLinks(ctx)
        self.bounce_domain = ctx.settings.effective_bounce_domain
        self.verp_key = derive_key(ctx.settings.signing_keys[0], "verp")

    def ref(self, send: Send, delivery_id: uuid.UUID, contact_id: uuid.UUID | None) -> DeliveryRef:
        return DeliveryRef(send.workspace_id, send.id, delivery_id, contact_id)

    def render(
        self,
        send: Send,
        compiled: CompiledContent,
        ref: DeliveryRef,
        contact: Mapping[str, Any] | None,
        variables: Mapping[str, Any] | None,
        *,
        tracking: bool = True,
    ) -> RenderedContent:
        context = build_context(
            contact=contact,
            variables=variables,
            unsubscribe_url=self.links.unsubscribe_url(ref),
            manage_url=self.links.manage_url(ref),
            view_in_browser_url=self.links.view_url(ref),
        )
        rendered = render_content(compiled, context)
        if not tracking:
            return rendered
        html = rendered.html
        if html and send.track_clicks:
            html = rewrite_links(
                html, lambda url: self.links.click_url(ref, url), skip=self.links.is_own
            )
        if html and send.track_opens:
            html = insert_open_pixel(html, self.links.open_url(ref))
        return RenderedContent(
            subject=rendered.subject, html=html, text=rendered.text, preheader=rendered.preheader
        )

    def envelope(
        self,
        send: Send,
        compiled: CompiledContent,
        *,
        delivery_id: uuid.UUID,
        email: str,
        contact: Mapping[str, Any] | None,
        contact_id: uuid.UUID | None,
        variables: Mapping[str, Any] | None,
        now: datetime,
        subject_prefix: str = "",
    ) -> Composed:
        ref = self.ref(send, delivery_id, contact_id)
        rendered = self.render(send, compiled, ref, contact, variables)
        marketing = send.purpose == "marketing"
        return_path = verp_address(str(delivery_id), self.verp_key, self.bounce_domain)
        name = ""
        if contact:
            name = " ".join(
                str(p) for p in (contact.get("first_name"), contact.get("last_name")) if p
            )
        message = OutgoingMessage(
            from_email=send.from_email,
            from_name=send.from_name,
            to_email=email,
            to_name=name,
            reply_to=send.reply_to,
            subject=subject_prefix + rendered.subject,
            html=rendered.html or None,
            text=rendered.text or None,
            delivery_id=str(delivery_id),
            date=now,
            list_unsubscribe_url=self.links.unsubscribe_url(ref) if marketing else None,
            list_unsubscribe_mailto=f"mailto:{return_path}?subject=unsubscribe"
            if marketing
            else None,
            list_id=self.list_id(send) if marketing else None,
            feedback_id=self.feedback_id(send),
        )
        return Composed(mail_from=return_path, rcpt_to=email, message=message)

    @staticmethod
    def feedback_id(send: Send) -> str:
        """Gmail's Feedback-ID: campaign:customer:mail type:sender, for complaint stats."""
        campaign = (send.campaign_id or send.id).hex[:16]
        return f"{campaign}:{send.workspace_id.hex[:12]}:{send.kind}:postroom"

    def list_id(self, send: Send) -> str:
        domain = send.from_email.rpartition("@")[2] or "postroom.invalid"
        key = (
            send.list_ids[0].replace("-", "")[:16] if send.list_ids else send.workspace_id.hex[:16]
        )
        return f"{key}.list-id.{domain}"
