"""SendGrid's signed Event Webhook.

SendGrid signs ``timestamp + raw body`` with ECDSA P-256 / SHA-256 and sends the DER
signature (base64) and the timestamp in ``X-Twilio-Email-Event-Webhook-Signature`` /
``-Timestamp``. The workspace stores the verification key SendGrid shows (base64 DER or
PEM). Custom arguments (``unique_args`` / ``custom_args``, set for example through the
X-SMTPAPI header) appear as top-level keys of each event: ``postroom_delivery`` there is
our delivery id; otherwise ``smtp-id`` carries the Message-ID we sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

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

PROVIDER: Final = "sendgrid"
SIGNATURE_HEADER: Final = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER: Final = "x-twilio-email-event-webhook-timestamp"
MAX_EVENTS: Final = 5000

# Why SendGrid dropped a message without sending it, mapped onto what it means for us;
# other drop reasons (message size, invalid SMTPAPI header …) say nothing about the
# recipient and change nothing.
_DROP_REASONS: Final[tuple[tuple[str, EventKind], ...]] = (
    ("bounced address", "bounce_hard"),
    ("invalid", "bounce_hard"),
    ("spam reporting address", "complaint"),
    ("unsubscribed address", "unsubscribe"),
)


def load_public_key(raw: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER) or as PEM; P-256 only."""
    value = raw.strip()
    try:
        if value.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(value.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise ValueError("not a public key in base64 DER or PEM form") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("SendGrid's verification key is an ECDSA P-256 public key")
    return key


def verify(
    public_key: str,
    headers: dict[str, str],
    body: bytes,
    now: datetime,
    tolerance: timedelta,
) -> str:
    """Check the signature and the timestamp's age; returns the replay key.

    The replay key is a hash of what is signed (timestamp and body), not the signature:
    an ECDSA signature can be altered into another valid one (s → n - s) without the key,
    so a replay keyed on the signature text could slip through."""
    signature_b64 = headers.get(SIGNATURE_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    if not signature_b64 or not timestamp:
        raise WebhookUnauthenticated("the SendGrid event webhook call is not signed")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRefused("the SendGrid signature is not base64") from None
    try:
        key = load_public_key(public_key)
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise WebhookRefused("the SendGrid signature does not match") from None
    signed_at = unix_time(timestamp)
    if signed_at is None or abs(now - signed_at) > tolerance:
        raise WebhookStale("the SendGrid signature timestamp is too old (or in the future)")
    return hashlib.sha256(timestamp.encode() + b"." + body).hexdigest()


def _kind(item: dict[str, Any]) -> EventKind | None:
    name = item.get("event")
    if name == "delivered":
        return "delivered"
    if name == "bounce":
        # "bounce" is a permanent failure; type "blocked" is a temporary refusal.
        return "bounce_soft" if item.get("type") == "blocked" else "bounce_hard"
    if name == "blocked":
        return "bounce_soft"
    if name == "dropped":
        reason = str(item.get("reason") or "").lower()
        return next((kind for prefix, kind in _DROP_REASONS if reason.startswith(prefix)), None)
    if name == "spamreport":
        return "complaint"
    if name == "open":
        return "open"
    if name == "click":
        return "click"
    if name in ("unsubscribe", "group_unsubscribe"):
        return "unsubscribe"
    return None  # processed, deferred, group_resubscribe …: nothing to apply


def parse(body: bytes) -> list[ProviderEvent]:
    items = load_json(body)
    if not isinstance(items, list):
        raise MalformedWebhook("a SendGrid event webhook body is a JSON array of events")
    if len(items) > MAX_EVENTS:
        raise MalformedWebhook(f"more than {MAX_EVENTS} events in one call")
    events: list[ProviderEvent] = []
    for item in items:
        if not isinstance(item, dict):
            raise MalformedWebhook("each SendGrid event is a JSON object")
        kind = _kind(item)
        if kind is None:
            continue
        custom = item.get("custom_args") if isinstance(item.get("custom_args"), dict) else None
        events.append(
            ProviderEvent(
                provider=PROVIDER,
                kind=kind,
                delivery_ref=delivery_ref_in(item) or delivery_ref_in(custom),
                message_id=ref(item.get("smtp-id")),
                email=text(item.get("email"), 320),
                occurred_at=unix_time(item.get("timestamp")),
                provider_event_id=text(item.get("sg_event_id"), 200),
                details=compact(
                    {
                        "event_type": text(item.get("event"), 40),
                        "bounce_type": text(item.get("type"), 40),
                        "bounce_classification": text(item.get("bounce_classification"), 60),
                        "status": text(item.get("status"), 20),
                        "diagnostic": text(item.get("reason")),
                        "url": text(item.get("url")),
                        "user_agent": text(item.get("useragent"), 300),
                        "ip": text(item.get("ip"), 64),
                        "sendgrid_message_id": text(item.get("sg_message_id"), 200),
                    }
                ),
            )
        )
    return events
