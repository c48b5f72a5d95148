"""From a ledger row to a message: pick the content, personalise it, apply tracking, and
assemble the headers DESIGN.md requires (List-Unsubscribe one-click, List-Id,
Feedback-ID, X-Postroom-Delivery, VERP return path).

Content is compiled once per send and cached (``compile_content_cached``); only the
per-recipient render and the link rewrite run per message. The five signed URLs of a
message are made together; links are rewritten chunk by chunk (``LinkRewriter``) with a
mark where the message's click prefix goes, and the marked HTML goes to the builder with
the real one, so the encoding of link lines is made once per send (``mime.Marked``).
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
from postroom.delivery.mime import Marked
from postroom.delivery.verp import verp_address
from postroom.feedback.addresses import reply_address, reply_keys, reply_tokens_enabled
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
from postroom.tracking.links import (
    CLICK_MARK,
    LinkRewriter,
    attribute_safe,
    insert_open_pixel,
    insert_open_pixel_into,
)
from postroom.tracking.tokens import DeliveryRef, MessageUrls, TrackingLinks


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
        # Replies to campaign/sequence mail come back to us (feedback.inbound) only when
        # this instance receives mail for the reply domain.
        self.reply_domain = ctx.settings.effective_reply_domain
        self.reply_key = reply_keys(ctx.settings)[0] if reply_tokens_enabled(ctx.settings) else None
        self._rewriters: dict[uuid.UUID, LinkRewriter] = {}

    def rewriter(self, send_id: uuid.UUID) -> LinkRewriter:
        """The send's link rewriter: each distinct link is signed once per send."""
        rewriter = self._rewriters.get(send_id)
        if rewriter is None:
            if len(self._rewriters) >= 256:
                self._rewriters.clear()
            links = self.links
            rewriter = LinkRewriter(
                lambda url: links.click_link_part(send_id, url), skip=links.is_own
            )
            self._rewriters[send_id] = rewriter
        return rewriter

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
        unsubscribe_url: str | None = None,
    ) -> RenderedContent:
        urls = self.links.for_message(ref)
        unsubscribe_url = unsubscribe_url or urls.unsubscribe
        return self._render(send, compiled, urls, contact, variables, tracking, unsubscribe_url)[0]

    def _render(
        self,
        send: Send,
        compiled: CompiledContent,
        urls: MessageUrls,
        contact: Mapping[str, Any] | None,
        variables: Mapping[str, Any] | None,
        tracking: bool,
        unsubscribe_url: str,
    ) -> tuple[RenderedContent, Marked | None]:
        """The rendered content, and its HTML with the click prefix marked (or None)."""
        context = build_context(
            contact=contact,
            variables=variables,
            unsubscribe_url=unsubscribe_url,
            manage_url=urls.manage,
            view_in_browser_url=urls.view,
        )
        parts: list[str] = []
        rendered = render_content(compiled, context, html_parts=parts)
        if not tracking:
            return rendered, None
        html, marked = self._track(send, rendered.html, parts, urls)
        content = RenderedContent(
            subject=rendered.subject, html=html, text=rendered.text, preheader=rendered.preheader
        )
        return content, marked

    def _track(
        self, send: Send, html: str, parts: list[str], urls: MessageUrls
    ) -> tuple[str, Marked | None]:
        """Click rewriting and the open pixel. Links are rewritten with a mark standing in
        for the message's click prefix, then the prefix is put in: the marked HTML goes to
        the builder along with the real one, so that the lines of a campaign's links, the
        same for every recipient when marked, are encoded once per send."""
        if not html:
            return html, None
        marked = None
        if send.track_clicks:
            prefix = attribute_safe(urls.click_prefix)
            segments = self.rewriter(send.id).rewrite_segments(parts)
            if not send.track_opens or insert_open_pixel_into(segments, urls.open):
                text = CLICK_MARK.join(segments)
                marked = Marked(text, CLICK_MARK, prefix, prefix.join(segments))
            else:  # no "</body" or "</BODY": the pixel goes where the plain path puts it
                text = insert_open_pixel(CLICK_MARK.join(segments), urls.open)
                marked = Marked.of(text, CLICK_MARK, prefix)
            return marked.real, marked
        if send.track_opens:
            html = insert_open_pixel(html, urls.open)
        return html, None

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
        urls = self.links.for_message(ref)  # signed once: body and header
        unsubscribe_url = urls.unsubscribe
        rendered, marked = self._render(
            send, compiled, urls, contact, variables, True, unsubscribe_url
        )
        marketing = send.purpose == "marketing"
        delivery = str(delivery_id)
        return_path = verp_address(delivery, self.verp_key, self.bounce_domain)
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
            reply_to=self.reply_to(send, delivery_id),
            subject=subject_prefix + rendered.subject,
            html=rendered.html or None,
            text=rendered.text or None,
            delivery_id=delivery,
            date=now,
            list_unsubscribe_url=unsubscribe_url if marketing else None,
            list_unsubscribe_mailto=f"mailto:{return_path}?subject=unsubscribe"
            if marketing
            else None,
            list_id=self.list_id(send) if marketing else None,
            feedback_id=self.feedback_id(send),
            html_marked=marked if rendered.html else None,
        )
        return Composed(mail_from=return_path, rcpt_to=email, message=message)

    def reply_to(self, send: Send, delivery_id: uuid.UUID) -> str | None:
        """Campaign and sequence mail gets a tokenized Reply-To on the reply domain: the
        reply is recorded (``email.replied``) and forwarded to ``send.reply_to`` (else the
        From address). Other mail, or an instance that receives no mail, keeps the send's
        own Reply-To."""
        if self.reply_key is None or send.kind not in ("campaign", "sequence_step"):
            return send.reply_to
        return reply_address(str(delivery_id), self.reply_key, self.reply_domain)

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
