"""The outgoing message builder: one recipient's rendered content to RFC 5322 bytes.

This is the sending hot path, so it writes headers and MIME parts directly instead of
going through ``email.message.EmailMessage`` (about 1.6 ms a message against a budget
of a quarter of that, rendering included). The encodings live in ``mime``; what stays
the same across a campaign (the From line, the List-Id...) is formatted once and cached.
Every field that reaches a header is checked for CR/LF first: a line break in a header
value would let a subscriber-supplied name inject headers or a whole body.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from postroom.delivery.mime import (
    HARD_LINE_LIMIT,
    SOFT_LINE_LIMIT,
    Marked,
    WireReady,
    encode_text_body,
    format_date,
    mailbox,
    unstructured,
)
from postroom.errors import PostroomError

if TYPE_CHECKING:
    from postroom.delivery.dkim import DkimSigner


class MessageBuildError(PostroomError, ValueError):
    """The message cannot be written as given (bad address, no body, reserved header...)."""

    code = "invalid_message"


class HeaderInjectionError(MessageBuildError):
    """A header value holds a line break (or NUL) and would split into extra headers."""

    code = "header_injection"


@dataclass(slots=True, frozen=True, kw_only=True)
class OutgoingMessage:
    """One recipient's message. Addresses are ASCII (IDN domains are IDNA-encoded)."""

    from_email: str
    to_email: str
    subject: str
    delivery_id: str
    date: datetime
    html: str | None = None
    text: str | None = None
    from_name: str = ""
    to_name: str = ""
    reply_to: str | None = None
    message_id: str | None = None  # generated from the delivery id when absent
    list_unsubscribe_url: str | None = None  # https: also gets one-click (RFC 8058)
    list_unsubscribe_mailto: str | None = None  # "mailto:..." or a bare address
    list_id: str | None = None  # "Name <id.example.com>" or "id.example.com"
    feedback_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # ``html`` with the message's click-URL prefix marked, from the composer: the lines of
    # a campaign's links then repeat for every recipient, so their encoding is made once
    # per send (see ``mime.Marked``). Used only while ``html is html_marked.real``.
    html_marked: Marked | None = None


# Headers the builder writes itself; extra headers may not set (or duplicate) them.
RESERVED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "sender", "reply-to", "subject", "date", "message-id",
        "mime-version", "content-type", "content-transfer-encoding", "list-unsubscribe",
        "list-unsubscribe-post", "list-id", "feedback-id", "x-postroom-delivery",
        "dkim-signature", "return-path", "received",
    }
)  # fmt: skip

_LINE_BREAK_OR_NUL = re.compile(r"[\r\n\x00]")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}\Z")
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}\Z")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_TOKEN = re.compile(r"[!-~]{1,200}\Z")  # printable ASCII without spaces
_ID_RIGHT = re.compile(r"[A-Za-z0-9._-]{1,100}\Z")
_URI = re.compile(r"[!-;=?-~]{1,900}\Z")  # printable ASCII without space, "<", ">"
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>\Z")

_TEXT_PART_TYPE = b'Content-Type: text/plain; charset="utf-8"\r\n'
_HTML_PART_TYPE = b'Content-Type: text/html; charset="utf-8"\r\n'
_ONE_CLICK = "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"


def _check_line_breaks(msg: OutgoingMessage) -> None:
    named = {
        "from_email": msg.from_email,
        "from_name": msg.from_name,
        "to_email": msg.to_email,
        "to_name": msg.to_name,
        "subject": msg.subject,
        "delivery_id": msg.delivery_id,
        "reply_to": msg.reply_to or "",
        "message_id": msg.message_id or "",
        "list_unsubscribe_url": msg.list_unsubscribe_url or "",
        "list_unsubscribe_mailto": msg.list_unsubscribe_mailto or "",
        "list_id": msg.list_id or "",
        "feedback_id": msg.feedback_id or "",
    }
    for name, value in msg.headers.items():
        named[f"header name {name!r}"] = name
        named[f"header {name!r}"] = value
    # One search over everything in the common case; name the field only on failure.
    if _LINE_BREAK_OR_NUL.search("".join(named.values())) is None:
        return
    for label, value in named.items():
        if _LINE_BREAK_OR_NUL.search(value):
            raise HeaderInjectionError(f"{label} contains a line break or NUL character")


@lru_cache(maxsize=4096)
def normalize_address(address: str) -> str:
    """An addr-spec safe to write into a header: trimmed, ASCII, domain IDNA-encoded."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not _LOCAL_PART.match(local) or ".." in local:
        raise MessageBuildError(f"not a usable email address: {address!r}")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise MessageBuildError(f"not a usable email domain: {domain!r}") from exc
    if not _DOMAIN.match(domain) or len(domain) > 253:
        raise MessageBuildError(f"not a usable email domain: {domain!r}")
    return f"{local}@{domain}"


@lru_cache(maxsize=8192)
def _mailbox_line(header: str, name: str, address: str) -> str:
    return f"{header}: {mailbox(name, normalize_address(address), len(header) + 2)}\r\n"


@lru_cache(maxsize=256)
def _list_id_line(list_id: str) -> str:
    name, lt, rest = list_id.rpartition("<")
    identifier = rest[:-1] if lt and rest.endswith(">") else list_id
    if not _ID_RIGHT.match(identifier):
        raise MessageBuildError(f"not a usable List-Id: {list_id!r}")
    name = name.strip() if lt else ""
    if not name:
        return f"List-Id: <{identifier}>\r\n"
    return f"List-Id: {mailbox(name, identifier, 9)}\r\n"


@lru_cache(maxsize=256)
def _feedback_id_line(feedback_id: str) -> str:
    if not _TOKEN.match(feedback_id):
        raise MessageBuildError(f"not a usable Feedback-ID: {feedback_id!r}")
    return f"Feedback-ID: {feedback_id}\r\n"


def _list_unsubscribe_lines(url: str | None, mailto: str | None) -> str:
    entries: list[str] = []
    if url:
        if not _URI.match(url):
            raise MessageBuildError(f"not a usable unsubscribe URL: {url!r}")
        entries.append(f"<{url}>")
    if mailto:
        if mailto[:7].lower() != "mailto:":
            mailto = "mailto:" + mailto
        if not _URI.match(mailto):
            raise MessageBuildError(f"not a usable unsubscribe mailto: {mailto!r}")
        entries.append(f"<{mailto}>")
    if not entries:
        return ""
    value = ", ".join(entries)
    if len(value) + 18 > SOFT_LINE_LIMIT:
        value = ",\r\n ".join(entries)
    line = f"List-Unsubscribe: {value}\r\n"
    # RFC 8058 one-click needs an HTTPS URI to POST to.
    if url and url[:8].lower() == "https://":
        line += _ONE_CLICK
    return line


def _message_id(given: str | None, delivery_id: str, sender: str) -> str:
    domain = sender.rpartition("@")[2]
    if given:
        given = given.strip()
        if not given.startswith("<"):
            given = f"<{given}>"
        if not _MESSAGE_ID.match(given) or len(given) > HARD_LINE_LIMIT - 12:
            raise MessageBuildError(f"not a usable Message-ID: {given!r}")
        return given
    # Derived from the delivery id, so a retried delivery keeps its Message-ID and
    # receivers can de-duplicate it.
    left = delivery_id if _ID_RIGHT.match(delivery_id) else os.urandom(16).hex()
    return f"<{left}@{domain}>"


def _extra_header_lines(headers: Mapping[str, str]) -> list[str]:
    lines = []
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise MessageBuildError(f"not a usable header name: {name!r}")
        if name.lower() in RESERVED_HEADERS:
            raise MessageBuildError(f"header {name!r} is set by the builder itself")
        lines.append(f"{name}: {unstructured(value, len(name) + 2)}\r\n")
    return lines


def _body(msg: OutgoingMessage, message_id: str) -> tuple[str, bytes]:
    """The MIME headers (as text) and the body bytes after the blank line."""
    text, html = msg.text, msg.html
    if text and html:
        # Not random, so the same input gives the same bytes; QP and base64 can never
        # produce "=_", and a 7bit part is checked not to contain the boundary.
        boundary = "=_" + hashlib.blake2b(message_id.encode(), digest_size=12).hexdigest()
        text_cte, text_body = encode_text_body(text, boundary)
        html_cte, html_body = encode_text_body(html, boundary, msg.html_marked)
        delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
        body = b"".join(
            (
                delimiter[2:],
                _TEXT_PART_TYPE,
                f"Content-Transfer-Encoding: {text_cte}\r\n\r\n".encode("ascii"),
                text_body,
                delimiter,
                _HTML_PART_TYPE,
                f"Content-Transfer-Encoding: {html_cte}\r\n\r\n".encode("ascii"),
                html_body,
                f"\r\n--{boundary}--\r\n".encode("ascii"),
            )
        )
        return f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n', body
    content, subtype = (html, "html") if html else (text, "plain")
    if not content:
        raise MessageBuildError("a message needs an HTML or a text body")
    cte, body = encode_text_body(content, None, msg.html_marked if html else None)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n',
        body,
    )


def build_message(msg: OutgoingMessage, signer: DkimSigner | None = None) -> bytes:
    """The complete message, CRLF line endings, DKIM-signed first when ``signer`` is given.

    Raises ``HeaderInjectionError`` for a line break in any header value and
    ``MessageBuildError`` for anything else that cannot be written.
    """
    _check_line_breaks(msg)
    sender = normalize_address(msg.from_email)
    if not _TOKEN.match(msg.delivery_id):
        raise MessageBuildError(f"not a usable delivery id: {msg.delivery_id!r}")
    message_id = _message_id(msg.message_id, msg.delivery_id, sender)
    lines = [
        _mailbox_line("From", msg.from_name, msg.from_email),
        _mailbox_line("To", msg.to_name, msg.to_email),
    ]
    if msg.reply_to:
        lines.append(_mailbox_line("Reply-To", "", msg.reply_to))
    lines.append(f"Subject: {unstructured(msg.subject, 9)}\r\n")
    lines.append(f"Date: {format_date(msg.date)}\r\n")
    lines.append(f"Message-ID: {message_id}\r\n")
    if msg.list_unsubscribe_url or msg.list_unsubscribe_mailto:
        lines.append(_list_unsubscribe_lines(msg.list_unsubscribe_url, msg.list_unsubscribe_mailto))
    if msg.list_id:
        lines.append(_list_id_line(msg.list_id))
    if msg.feedback_id:
        lines.append(_feedback_id_line(msg.feedback_id))
    lines.append(f"X-Postroom-Delivery: {msg.delivery_id}\r\n")
    if msg.headers:
        lines.extend(_extra_header_lines(msg.headers))
    content_headers, body = _body(msg, message_id)
    lines.append("MIME-Version: 1.0\r\n")
    lines.append(content_headers)
    head = "".join(lines).encode("ascii")
    message = b"".join((head, b"\r\n", body))
    # Every header line starts with a field name or a folding space, and the encoders
    # never start a body line with "."; only an extra header's name could.
    wire_ready = not (msg.headers and any(name.startswith(".") for name in msg.headers))
    if signer is not None:
        moment = msg.date if msg.date.tzinfo else msg.date.replace(tzinfo=UTC)
        message = signer.sign(message, timestamp=int(moment.timestamp())) + message
    return WireReady(message) if wire_ready else message


__all__ = [
    "RESERVED_HEADERS",
    "HeaderInjectionError",
    "MessageBuildError",
    "OutgoingMessage",
    "build_message",
    "normalize_address",
]
