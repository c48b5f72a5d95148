"""The one shape every provider's webhook payload is turned into, and the errors a
webhook call can end with.

A provider adapter only verifies and parses; it never touches the database. What an
event does (bounce → suppression, complaint → unsubscribed from everything …) is the
feedback effects module's business, shared with inbound SMTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from postroom.errors import PermissionDenied, PostroomError, Unauthenticated

EventKind = Literal[
    "delivered", "bounce_hard", "bounce_soft", "complaint", "open", "click", "unsubscribe"
]
EVENT_KINDS: Final = (
    "delivered",
    "bounce_hard",
    "bounce_soft",
    "complaint",
    "open",
    "click",
    "unsubscribe",
)
ProviderName = Literal["ses", "sendgrid", "mailgun", "postmark"]
PROVIDERS: Final = ("ses", "sendgrid", "mailgun", "postmark")

# The names a custom argument / metadata key / user variable may carry the delivery id
# under (providers that drop custom headers from their events pass these instead).
DELIVERY_KEYS: Final = (
    "x-postroom-delivery",
    "postroom_delivery",
    "postroom-delivery",
    "postroom_delivery_id",
)
# Longest value accepted as a delivery reference or Message-ID: anything longer is noise.
MAX_REF = 255


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One thing a provider says happened to one recipient of one message."""

    provider: str
    kind: EventKind
    # The X-Postroom-Delivery value (our delivery id) when the provider passed it back.
    delivery_ref: str | None
    # The RFC 5322 Message-ID we sent, when the provider reports it.
    message_id: str | None
    email: str | None
    occurred_at: datetime | None
    # The provider's own id of this event (SendGrid sg_event_id, Mailgun id …).
    provider_event_id: str | None = None
    # bounce status/diagnostic/type, clicked url, user agent, ip, the provider's raw type.
    details: dict[str, Any] = field(default_factory=dict)


# --- errors --------------------------------------------------------------------------------


class WebhookUnauthenticated(Unauthenticated):
    """No credentials or signature at all (401)."""

    code = "webhook_unauthenticated"


class WebhookRefused(PermissionDenied):
    """Credentials or signature present but wrong, stale or replayed (403)."""

    code = "webhook_signature_invalid"


class WebhookStale(WebhookRefused):
    code = "webhook_stale"


class WebhookReplayed(WebhookRefused):
    code = "webhook_replayed"


class MalformedWebhook(PostroomError):
    """The body is not what this provider sends (400: not in the 4xx table, so the
    problem handler's default)."""

    code = "malformed_payload"


# --- small parsing helpers shared by the adapters -----------------------------------------


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedWebhook(f"the body is not valid JSON: {exc}") from None


def text(value: Any, limit: int = 2000) -> str | None:
    """A string field, or None; numbers are accepted (some providers send them)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] if value else None


def ref(value: Any) -> str | None:
    """A delivery reference or Message-ID; over-long values are dropped, not cut."""
    found = text(value, limit=MAX_REF + 1)
    return found if found and len(found) <= MAX_REF else None


def delivery_ref_in(mapping: Any) -> str | None:
    """The delivery id under one of ``DELIVERY_KEYS`` (any case) in a dict."""
    if not isinstance(mapping, dict):
        return None
    for key, value in mapping.items():
        if isinstance(key, str) and key.strip().lower() in DELIVERY_KEYS:
            found = ref(value)
            if found:
                return found
    return None


def unix_time(value: Any) -> datetime | None:
    """Seconds since the epoch (int, float or numeric string) as an aware datetime."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if not 0 <= seconds < 32503680000:  # before year 3000
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


def iso_time(value: Any) -> datetime | None:
    """An ISO 8601 / RFC 3339 timestamp as an aware UTC datetime, or None."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    raw = value.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def compact(details: dict[str, Any]) -> dict[str, Any]:
    """Details without empty values, so stored event data stays small."""
    return {key: value for key, value in details.items() if value not in (None, "", [], {})}
