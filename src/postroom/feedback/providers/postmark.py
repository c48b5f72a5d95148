"""Postmark's webhooks. Postmark does not sign them: each workspace gives Postmark a URL
with HTTP Basic credentials (``https://user:pass@host/webhooks/postmark/{workspace}``),
checked here in constant time. Our delivery id travels in the message's Metadata
(``X-PM-Metadata-postroom_delivery`` over SMTP, ``Metadata`` over the API).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Final

from postroom.feedback.providers.events import (
    EventKind,
    MalformedWebhook,
    ProviderEvent,
    WebhookRefused,
    WebhookUnauthenticated,
    compact,
    delivery_ref_in,
    iso_time,
    load_json,
    ref,
    text,
)

PROVIDER: Final = "postmark"

_HARD: Final = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
_SOFT: Final = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked", "MailFrontier"})
_COMPLAINT: Final = frozenset({"SpamComplaint", "SpamNotification"})


def basic_credentials(authorization: str | None) -> tuple[str, str]:
    if not authorization:
        raise WebhookUnauthenticated("Postmark webhooks need HTTP Basic credentials")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise WebhookUnauthenticated("Postmark webhooks need HTTP Basic credentials")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise WebhookRefused("the Basic credentials are not valid base64") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise WebhookRefused("the Basic credentials have no password")
    return username, password


def check_credentials(
    authorization: str | None, expected_username: str, expected_password: str
) -> None:
    username, password = basic_credentials(authorization)
    # Both compared in full (no short-circuit), each in constant time.
    user_ok = hmac.compare_digest(username.encode(), expected_username.encode())
    password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
    if not (user_ok and password_ok):
        raise WebhookRefused("wrong Postmark webhook credentials")


def _kind(record: dict[str, Any]) -> EventKind | None:
    record_type = record.get("RecordType")
    if record_type == "Delivery":
        return "delivered"
    if record_type == "Bounce":
        bounce_type = record.get("Type")
        if bounce_type in _HARD:
            return "bounce_hard"
        if bounce_type in _SOFT:
            return "bounce_soft"
        if bounce_type in _COMPLAINT:
            return "complaint"
        if bounce_type == "Unsubscribe":
            return "unsubscribe"
        return None  # AutoResponder, ChallengeVerification, OpenRelayTest …
    if record_type == "SpamComplaint":
        return "complaint"
    if record_type == "Open":
        return "open"
    if record_type == "Click":
        return "click"
    if record_type == "SubscriptionChange":
        # Only a recipient's own unsubscribe (Postmark's "ManualSuppression") is ours to
        # apply; suppressions from bounces and complaints arrive as their own records,
        # and a reactivation (SuppressSending false) does not resubscribe anyone here.
        if record.get("SuppressSending") is True and record.get("SuppressionReason") in (
            "ManualSuppression",
            None,
        ):
            return "unsubscribe"
        return None
    return None


def parse(body: bytes) -> ProviderEvent | None:
    record = load_json(body)
    if not isinstance(record, dict) or not isinstance(record.get("RecordType"), str):
        raise MalformedWebhook("a Postmark webhook body is a JSON object with a RecordType")
    kind = _kind(record)
    if kind is None:
        return None
    email = record.get("Email") or record.get("Recipient")
    at = (
        record.get("BouncedAt")
        or record.get("DeliveredAt")
        or record.get("ReceivedAt")
        or record.get("ChangedAt")
    )
    return ProviderEvent(
        provider=PROVIDER,
        kind=kind,
        delivery_ref=delivery_ref_in(record.get("Metadata")),
        # Postmark's MessageID is its own id, not our Message-ID header; kept as a
        # detail only.
        message_id=None,
        email=text(email, 320),
        occurred_at=iso_time(at),
        provider_event_id=text(record.get("ID"), 100),
        details=compact(
            {
                "event_type": text(record.get("RecordType"), 40),
                "bounce_type": text(record.get("Type"), 40),
                "code": text(record.get("TypeCode"), 10),
                "diagnostic": text(record.get("Details")) or text(record.get("Description")),
                "url": text(record.get("OriginalLink")),
                "user_agent": text(record.get("UserAgent"), 300),
                "postmark_message_id": ref(record.get("MessageID")),
            }
        ),
    )
