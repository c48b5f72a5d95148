"""Mailgun's webhooks (the JSON ``signature`` + ``event-data`` shape).

The signature is HMAC-SHA256 of ``timestamp + token`` with the workspace's webhook
signing key. A stale timestamp is refused, and each token is accepted once (the caller
keeps them for the tolerance window). Our delivery id travels as a user variable
(``X-Mailgun-Variables: {"postroom_delivery": "…"}``) or, when Mailgun reports it, in the
message headers; the Message-ID is ``message.headers.message-id`` (without brackets).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from postroom.feedback.providers.events import (
    EventKind,
    MalformedWebhook,
    ProviderEvent,
    WebhookRefused,
    WebhookStale,
    WebhookUnauthenticated,
    compact,
    delivery_ref_in,
    load_json,
    ref,
    text,
    unix_time,
)

PROVIDER: Final = "mailgun"


@dataclass(frozen=True, slots=True)
class MailgunCall:
    token: str
    signed_at: datetime
    event: ProviderEvent | None  # None: an event type that changes nothing


def parse_and_verify(
    signing_key: str, body: bytes, now: datetime, tolerance: timedelta
) -> MailgunCall:
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise MalformedWebhook("a Mailgun webhook body is a JSON object")
    signature = payload.get("signature")
    if not isinstance(signature, dict):
        raise WebhookUnauthenticated("the Mailgun webhook call has no signature object")
    timestamp = signature.get("timestamp")
    token = signature.get("token")
    given = signature.get("signature")
    if not all(isinstance(v, str | int) and str(v) for v in (timestamp, token, given)):
        raise WebhookUnauthenticated("the Mailgun signature needs timestamp, token and signature")
    timestamp, token, given = str(timestamp), str(token), str(given)
    if len(token) > 200:
        raise WebhookRefused("the Mailgun token is too long")
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise WebhookRefused("the Mailgun signature does not match")
    signed_at = unix_time(timestamp)
    if signed_at is None or abs(now - signed_at) > tolerance:
        raise WebhookStale("the Mailgun signature timestamp is too old (or in the future)")
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise MalformedWebhook("the Mailgun webhook call has no event-data object")
    return MailgunCall(token=token, signed_at=signed_at, event=parse_event(data))


def _kind(data: dict[str, Any]) -> EventKind | None:
    name = data.get("event")
    if name == "delivered":
        return "delivered"
    if name == "failed":
        # Mailgun retries "temporary" failures itself; "permanent" ones are final.
        return "bounce_hard" if data.get("severity") == "permanent" else "bounce_soft"
    if name == "complained":
        return "complaint"
    if name == "opened":
        return "open"
    if name == "clicked":
        return "click"
    if name == "unsubscribed":
        return "unsubscribe"
    return None  # accepted, rejected, stored …


def parse_event(data: dict[str, Any]) -> ProviderEvent | None:
    kind = _kind(data)
    if kind is None:
        return None
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = (message or {}).get("headers")
    headers = headers if isinstance(headers, dict) else {}
    status = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    client = data.get("client-info") if isinstance(data.get("client-info"), dict) else {}
    message_id = ref(headers.get("message-id"))
    if message_id and not message_id.startswith("<"):
        message_id = f"<{message_id}>"
    status = status or {}
    client = client or {}
    return ProviderEvent(
        provider=PROVIDER,
        kind=kind,
        delivery_ref=delivery_ref_in(data.get("user-variables")) or delivery_ref_in(headers),
        message_id=message_id,
        email=text(data.get("recipient"), 320),
        occurred_at=unix_time(data.get("timestamp")),
        provider_event_id=text(data.get("id"), 200),
        details=compact(
            {
                "event_type": text(data.get("event"), 40),
                "severity": text(data.get("severity"), 20),
                "reason": text(data.get("reason"), 60),
                "status": text(status.get("enhanced-code"), 20),
                "code": text(status.get("code"), 10),
                "diagnostic": text(status.get("message")) or text(status.get("description")),
                "url": text(data.get("url")),
                "user_agent": text(client.get("user-agent"), 300),
                "ip": text(data.get("ip"), 64),
            }
        ),
    )
