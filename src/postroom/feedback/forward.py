"""Forwarding a reply to the human behind a send, without ever looping.

The copy is re-addressed rather than relayed as is: it goes out through our relay, so it
must be *from* the send's own address (DMARC would reject the subscriber's domain sent
from our servers); the subscriber goes into Reply-To, so the human's "Reply" reaches the
subscriber directly. The body and the threading headers (Subject, In-Reply-To,
References) are kept.

Loop protection, any of which stops a forward:

- ``X-Postroom-Forwarded`` / ``X-Loop: postroom@<reply domain>`` on the incoming message:
  it is one of our own forwards coming back (a reply-to address that points at us);
- ``Auto-Submitted`` other than ``no`` (auto-replies are recorded, never forwarded, so two
  auto-responders cannot ping-pong through us);
- more ``Received`` hops than ``MAX_HOPS`` (RFC 5321 §6.3's loop heuristic).
"""

from __future__ import annotations

import email.policy
import email.utils
from email.message import Message

from postroom.feedback.classify import header, parse

MAX_HOPS = 25
FORWARDED_HEADER = "X-Postroom-Forwarded"

# Headers of the incoming message that must not travel with the copy: addressing and
# trace fields (re-set below), signatures that the changes would break anyway.
_DROP = (
    "From",
    "Sender",
    "To",
    "Cc",
    "Bcc",
    "Reply-To",
    "Return-Path",
    "Delivered-To",
    "Message-ID",
    "Received",
    "DKIM-Signature",
    "ARC-Seal",
    "ARC-Message-Signature",
    "ARC-Authentication-Results",
    "Authentication-Results",
    "Received-SPF",
    "X-Original-To",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    FORWARDED_HEADER,
    "X-Loop",
)
_SMTP = email.policy.compat32.clone(linesep="\r\n")


def loop_marker(reply_domain: str) -> str:
    return f"postroom@{reply_domain}"


def loop_reason(msg: Message, reply_domain: str) -> str | None:
    """Why this message must not be forwarded, or ``None``."""
    if header(msg, FORWARDED_HEADER):
        return "already forwarded by Postroom"
    loops = [str(v).strip().lower() for v in (msg.get_all("X-Loop") or [])]
    if loop_marker(reply_domain).lower() in loops:
        return "X-Loop names this Postroom"
    auto = header(msg, "Auto-Submitted").lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    if len(msg.get_all("Received") or []) > MAX_HOPS:
        return f"more than {MAX_HOPS} Received hops"
    return None


def forward_copy(
    data: bytes,
    *,
    to: str,
    from_email: str,
    from_name: str,
    reply_domain: str,
    delivery_id: str,
) -> bytes:
    """The copy for ``to``: from ``from_email`` "via" the send's name, Reply-To the
    subscriber, marked so that it is never forwarded again."""
    msg = parse(data)
    original_from = header(msg, "From")
    name, address = email.utils.parseaddr(original_from)
    for name_to_drop in _DROP:
        del msg[name_to_drop]
    label = f"{name or address or 'Someone'} via {from_name or 'Postroom'}"
    # New headers go first, where a reader looks for trace fields.
    new_headers = [
        ("From", email.utils.formataddr((label, from_email))),
        ("To", to),
        ("Message-ID", email.utils.make_msgid(domain=reply_domain)),
        (FORWARDED_HEADER, f"1; delivery={delivery_id}"),
        ("X-Loop", loop_marker(reply_domain)),
    ]
    if address:
        new_headers.append(("Reply-To", email.utils.formataddr((name, address))))
    if not header(msg, "Date"):
        new_headers.append(("Date", email.utils.formatdate(usegmt=True)))
    existing = list(msg.items())
    for key in list(msg.keys()):
        del msg[key]
    for key, value in [*new_headers, *existing]:
        msg[key] = value
    return msg.as_bytes(policy=_SMTP)
