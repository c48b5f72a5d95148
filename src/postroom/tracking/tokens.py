"""Signed tokens and URLs for the public endpoints (open pixel, click redirect,
unsubscribe, preferences, view in browser, double opt-in confirmation).

Open and click tokens carry the workspace, send, delivery and contact ids, so recording an
open or click needs no database read; a click token also carries the target URL, so the
redirect can only ever go where the signed message pointed (no open redirect). Tokens are
HMAC-signed per purpose and never expire; old secret keys keep verifying them.

Click tokens come in two shapes, both accepted by :meth:`TrackingLinks.read_click`:

- ``REF.MAC.LINK.MAC`` (current): a per-message part signing the delivery ids, and a
  per-send part signing (send id, target URL). The link part is the same for every
  recipient of a send, so the builder signs each distinct URL once per send instead of
  once per recipient; the send id inside it must match the message part's, so a link
  part cannot be grafted onto a message of another send.
- ``PAYLOAD.MAC`` (tokens in mail sent before): one MAC over the ids and the URL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from postroom.context import AppContext
from postroom.security.tokens import b64

ZERO = uuid.UUID(int=0)
IDS_BYTES = 64


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    workspace_id: uuid.UUID
    send_id: uuid.UUID
    delivery_id: uuid.UUID
    contact_id: uuid.UUID | None

    def pack(self) -> bytes:
        return (
            self.workspace_id.bytes
            + self.send_id.bytes
            + self.delivery_id.bytes
            + (self.contact_id or ZERO).bytes
        )

    @classmethod
    def unpack(cls, data: bytes) -> DeliveryRef | None:
        if len(data) < IDS_BYTES:
            return None
        ids = [uuid.UUID(bytes=data[i : i + 16]) for i in range(0, IDS_BYTES, 16)]
        return cls(ids[0], ids[1], ids[2], None if ids[3] == ZERO else ids[3])


@dataclass(frozen=True, slots=True)
class MessageUrls:
    """The signed URLs of one delivery, made together (see :meth:`TrackingLinks.for_message`)."""

    open: str
    click_prefix: str
    unsubscribe: str
    manage: str
    view: str


class TrackingLinks:
    """Builds and reads the public URLs of one Postroom instance."""

    def __init__(self, ctx: AppContext) -> None:
        self.base = ctx.settings.public_base_url
        self._open = ctx.signer("open")
        self._click = ctx.signer("click")  # the original one-part click tokens
        self._click_ref = ctx.signer("click-message")
        self._click_link = ctx.signer("click-link")
        self._unsubscribe = ctx.signer("unsubscribe")
        self._preferences = ctx.signer("preferences")
        self._view = ctx.signer("view")
        self._own_prefixes = tuple(f"{self.base}/{p}/" for p in ("u", "p", "v", "c"))

    def for_message(self, ref: DeliveryRef) -> MessageUrls:
        """All five per-delivery URLs: the same tokens as :meth:`open_url`,
        :meth:`click_prefix`, :meth:`unsubscribe_url`, :meth:`manage_url` and
        :meth:`view_url`, with the ids packed and encoded once for all of them."""
        payload = ref.pack()
        encoded = b64(payload)
        base = self.base
        return MessageUrls(
            open=f"{base}/t/o/{self._open.sign_encoded(payload, encoded)}",
            click_prefix=f"{base}/t/c/{self._click_ref.sign_encoded(payload, encoded)}.",
            unsubscribe=f"{base}/u/{self._unsubscribe.sign_encoded(payload, encoded)}",
            manage=f"{base}/p/{self._preferences.sign_encoded(payload, encoded)}",
            view=f"{base}/v/{self._view.sign_encoded(payload, encoded)}",
        )

    def open_url(self, ref: DeliveryRef) -> str:
        return f"{self.base}/t/o/{self._open.sign(ref.pack())}"

    def click_url(self, ref: DeliveryRef, url: str) -> str:
        return self.click_prefix(ref) + self.click_link_part(ref.send_id, url)

    def click_prefix(self, ref: DeliveryRef) -> str:
        """The per-message start of every click URL of this delivery (ends with ".")."""
        return f"{self.base}/t/c/{self._click_ref.sign(ref.pack())}."

    def click_link_part(self, send_id: uuid.UUID, url: str) -> str:
        """The per-send end of a click URL: the same for every recipient of a send."""
        return self._click_link.sign(send_id.bytes + url.encode())

    def unsubscribe_url(self, ref: DeliveryRef) -> str:
        return f"{self.base}/u/{self._unsubscribe.sign(ref.pack())}"

    def manage_url(self, ref: DeliveryRef) -> str:
        return f"{self.base}/p/{self._preferences.sign(ref.pack())}"

    def view_url(self, ref: DeliveryRef) -> str:
        return f"{self.base}/v/{self._view.sign(ref.pack())}"

    def is_own(self, url: str) -> bool:
        """Our unsubscribe, preferences, view and confirm links are never click-tracked."""
        return url.startswith(self._own_prefixes)

    def read_open(self, token: str) -> DeliveryRef | None:
        payload = self._open.verify(token)
        return DeliveryRef.unpack(payload) if payload else None

    def read_click(self, token: str) -> tuple[DeliveryRef, str] | None:
        parts = token.split(".")
        if len(parts) == 4:
            return self._read_two_part_click(parts)
        payload = self._click.verify(token)
        if not payload:
            return None
        ref = DeliveryRef.unpack(payload)
        try:
            url = payload[IDS_BYTES:].decode()
        except UnicodeDecodeError:
            return None
        if ref is None or not url.lower().startswith(("http://", "https://")):
            return None
        return ref, url

    def _read_two_part_click(self, parts: list[str]) -> tuple[DeliveryRef, str] | None:
        message = self._click_ref.verify(f"{parts[0]}.{parts[1]}")
        link = self._click_link.verify(f"{parts[2]}.{parts[3]}")
        if not message or not link or len(message) != IDS_BYTES:
            return None
        ref = DeliveryRef.unpack(message)
        if ref is None or link[:16] != ref.send_id.bytes:
            return None
        try:
            url = link[16:].decode()
        except UnicodeDecodeError:
            return None
        if not url.lower().startswith(("http://", "https://")):
            return None
        return ref, url

    def read(self, purpose: str, token: str) -> DeliveryRef | None:
        signer = {
            "unsubscribe": self._unsubscribe,
            "preferences": self._preferences,
            "view": self._view,
        }[purpose]
        payload = signer.verify(token)
        return DeliveryRef.unpack(payload) if payload else None
