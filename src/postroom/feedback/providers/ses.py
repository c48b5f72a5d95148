"""Amazon SES events delivered by Amazon SNS.

SNS signs every message with an RSA key whose certificate it publishes at
``SigningCertURL``. The trust anchor is that URL: https on ``sns.<region>.amazonaws.com``
(as the AWS SDKs' validators do), plus the workspace's allow-list of topic ARNs — anyone
with an AWS account can make SNS sign a message, so the topic is what says it is ours.

The certificate fetcher is injected (production: httpx with a short timeout; tests: a
fake returning a self-signed certificate) and certificates are cached per URL, so a
notification storm fetches each certificate once.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import OrderedDict
from datetime import datetime
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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

PROVIDER: Final = "ses"
SNS_HOST = re.compile(r"sns\.[a-z0-9-]{1,30}\.amazonaws\.com(\.cn)?\Z")
TOPIC_ARN = re.compile(r"arn:aws(-[a-z]+)*:sns:([a-z0-9-]{1,30}):\d{12}:[A-Za-z0-9_.-]{1,256}\Z")
MAX_CERTIFICATE_BYTES = 64 * 1024
FETCH_TIMEOUT_SECONDS = 5.0

# The fields SNS signs, in the order of its canonical string (documented by AWS).
_SIGNED_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SIGNED_SUBSCRIPTION = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
MESSAGE_TYPES: Final = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")


class FetchFailed(Exception):
    pass


class SnsFetcher(Protocol):
    """GETs an https URL on an SNS host and returns the body (certificates, SubscribeURL)."""

    async def get(self, url: str) -> bytes: ...


class HttpxFetcher:
    """The production fetcher: no redirects, a short timeout, a size cap."""

    def __init__(
        self,
        timeout: float = FETCH_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self.transport = transport

    async def get(self, url: str) -> bytes:
        try:
            async with (
                httpx.AsyncClient(
                    timeout=self.timeout, follow_redirects=False, transport=self.transport
                ) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise FetchFailed(f"{url} answered {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_CERTIFICATE_BYTES:
                        raise FetchFailed(f"{url} sent more than {MAX_CERTIFICATE_BYTES} bytes")
                return body
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{url}: {exc!r}") from exc


def is_sns_url(url: str) -> bool:
    """https, an SNS host, the default port, no credentials in the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and port in (None, 443)
        and parts.username is None
        and parts.password is None
        and SNS_HOST.match(parts.hostname or "") is not None
    )


def url_region(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    return host.split(".")[1] if SNS_HOST.match(host) else None


def topic_region(arn: str) -> str | None:
    match = TOPIC_ARN.match(arn)
    return match.group(2) if match else None


class SnsClient:
    """Verifies SNS signatures (with a per-URL certificate cache) and confirms
    subscriptions. One per process, kept on the app's state."""

    def __init__(self, fetcher: SnsFetcher, cache_size: int = 32) -> None:
        self.fetcher = fetcher
        self.cache_size = cache_size
        self._certificates: OrderedDict[str, x509.Certificate] = OrderedDict()

    async def certificate(self, url: str) -> x509.Certificate:
        cached = self._certificates.get(url)
        if cached is not None:
            self._certificates.move_to_end(url)
            return cached
        try:
            pem = await self.fetcher.get(url)
            certificate = x509.load_pem_x509_certificate(pem)
        except (FetchFailed, ValueError) as exc:
            raise WebhookRefused(f"the SNS signing certificate could not be used: {exc}") from None
        self._certificates[url] = certificate
        while len(self._certificates) > self.cache_size:
            self._certificates.popitem(last=False)
        return certificate

    async def verify(self, message: dict[str, Any], now: datetime) -> None:
        """Raise unless ``message`` carries a valid SNS signature."""
        signature_b64 = message.get("Signature")
        cert_url = message.get("SigningCertURL") or message.get("SigningCertUrl")
        if not signature_b64 or not cert_url:
            raise WebhookUnauthenticated("the SNS message is not signed")
        version = message.get("SignatureVersion")
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()  # noqa: S303 - SNS SignatureVersion 1 is SHA1withRSA
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise WebhookRefused(f"unsupported SNS SignatureVersion {version!r}")
        if not isinstance(cert_url, str) or not is_sns_url(cert_url):
            raise WebhookRefused("SigningCertURL is not an https URL on an SNS host")
        if not cert_url.endswith(".pem"):
            raise WebhookRefused("SigningCertURL does not name a .pem certificate")
        arn = str(message.get("TopicArn", ""))
        if topic_region(arn) != url_region(cert_url):
            raise WebhookRefused("the signing certificate is not from the topic's region")
        try:
            signature = base64.b64decode(str(signature_b64), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRefused("the SNS Signature is not base64") from None
        certificate = await self.certificate(cert_url)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise WebhookRefused("the SNS signing certificate is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRefused("the SNS signing certificate does not hold an RSA key")
        try:
            key.verify(signature, canonical_string(message), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise WebhookRefused("the SNS signature does not match the message") from None

    async def confirm(self, subscribe_url: str) -> None:
        if not is_sns_url(subscribe_url):
            raise WebhookRefused("SubscribeURL is not an https URL on an SNS host")
        try:
            await self.fetcher.get(subscribe_url)
        except FetchFailed as exc:
            raise SubscriptionNotConfirmed(str(exc)) from None


class SubscriptionNotConfirmed(Exception):
    """SNS could not be reached to confirm; the caller answers 502 so SNS retries."""


def canonical_string(message: dict[str, Any]) -> bytes:
    """``Name\\nValue\\n`` for each signed field present, in AWS's order."""
    kind = message.get("Type")
    fields = _SIGNED_NOTIFICATION if kind == "Notification" else _SIGNED_SUBSCRIPTION
    lines: list[str] = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":
                continue  # optional; signed only when present
            raise MalformedWebhook(f"the SNS message has no {name}")
        if not isinstance(value, str):
            raise MalformedWebhook(f"the SNS field {name} is not a string")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode()


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The SNS JSON envelope (SNS posts it as text/plain)."""
    message = load_json(body)
    if not isinstance(message, dict):
        raise MalformedWebhook("an SNS message is a JSON object")
    if message.get("Type") not in MESSAGE_TYPES:
        raise MalformedWebhook(f"unknown SNS message Type {message.get('Type')!r}")
    if not isinstance(message.get("TopicArn"), str) or not TOPIC_ARN.match(message["TopicArn"]):
        raise MalformedWebhook("the SNS message has no valid TopicArn")
    return message


# --- SES event JSON (the SNS Message of a Notification) ----------------------------------


def _headers(mail: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    raw = mail.get("headers")
    if isinstance(raw, list):
        for header in raw:
            if isinstance(header, dict):
                name, value = header.get("name"), header.get("value")
                if isinstance(name, str) and isinstance(value, str):
                    found.setdefault(name.lower(), value)
    return found


def _recipients(items: Any, key: str = "emailAddress") -> list[dict[str, Any]]:
    if not isinstance(items, list):
        return []
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict) and text(item.get(key), 320):
            out.append(item)
        elif isinstance(item, str) and text(item, 320):
            out.append({key: item})
    return out


def parse_ses_message(raw: Any) -> list[ProviderEvent]:
    """Events of one SES notification (event publishing ``eventType`` or the older
    identity notifications ``notificationType``); types that change nothing (Send,
    Reject, Rendering Failure, DeliveryDelay) give no events."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise MalformedWebhook("the SNS Message is not SES event JSON") from None
    if not isinstance(raw, dict):
        raise MalformedWebhook("the SNS Message is not SES event JSON")
    kind = raw.get("eventType") or raw.get("notificationType")
    mail = raw.get("mail")
    if not isinstance(kind, str) or not isinstance(mail, dict):
        raise MalformedWebhook("SES event JSON needs eventType (or notificationType) and mail")
    headers = _headers(mail)
    common = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    delivery = ref(headers.get("x-postroom-delivery")) or delivery_ref_in(mail.get("tags"))
    message_id = ref(headers.get("message-id")) or ref((common or {}).get("messageId"))
    base = {"ses_message_id": text(mail.get("messageId"), 200), "event_type": kind}
    destination = _recipients(mail.get("destination"), "address")
    first_recipient = text(destination[0]["address"], 320) if destination else None

    def event(
        kind_: EventKind, email: str | None, at: Any, details: dict[str, Any]
    ) -> ProviderEvent:
        return ProviderEvent(
            provider=PROVIDER,
            kind=kind_,
            delivery_ref=delivery,
            message_id=message_id,
            email=email,
            occurred_at=iso_time(at) or iso_time(mail.get("timestamp")),
            provider_event_id=text(raw.get("feedbackId"), 200),
            details=compact({**base, **details}),
        )

    events: list[ProviderEvent] = []
    if kind == "Bounce":
        bounce = raw.get("bounce") if isinstance(raw.get("bounce"), dict) else None
        if bounce is None:
            raise MalformedWebhook("a Bounce event needs a bounce object")
        hard = bounce.get("bounceType") == "Permanent"
        for item in _recipients(bounce.get("bouncedRecipients")):
            events.append(
                event(
                    "bounce_hard" if hard else "bounce_soft",
                    text(item.get("emailAddress"), 320),
                    bounce.get("timestamp"),
                    {
                        "bounce_type": text(bounce.get("bounceType"), 40),
                        "bounce_subtype": text(bounce.get("bounceSubType"), 40),
                        "status": text(item.get("status"), 20),
                        "action": text(item.get("action"), 20),
                        "diagnostic": text(item.get("diagnosticCode")),
                    },
                )
            )
    elif kind == "Complaint":
        complaint = raw.get("complaint") if isinstance(raw.get("complaint"), dict) else None
        if complaint is None:
            raise MalformedWebhook("a Complaint event needs a complaint object")
        for item in _recipients(complaint.get("complainedRecipients")):
            events.append(
                event(
                    "complaint",
                    text(item.get("emailAddress"), 320),
                    complaint.get("timestamp"),
                    {
                        "feedback_type": text(complaint.get("complaintFeedbackType"), 40),
                        "user_agent": text(complaint.get("userAgent"), 300),
                    },
                )
            )
    elif kind == "Delivery":
        delivered = raw.get("delivery") if isinstance(raw.get("delivery"), dict) else None
        if delivered is None:
            raise MalformedWebhook("a Delivery event needs a delivery object")
        for item in _recipients(delivered.get("recipients"), "address"):
            events.append(
                event(
                    "delivered",
                    text(item.get("address"), 320),
                    delivered.get("timestamp"),
                    {"smtp_response": text(delivered.get("smtpResponse"))},
                )
            )
    elif kind in ("Open", "Click"):
        key = kind.lower()
        data = raw.get(key) if isinstance(raw.get(key), dict) else None
        if data is None:
            raise MalformedWebhook(f"an {kind} event needs an {key} object")
        events.append(
            event(
                "open" if kind == "Open" else "click",
                first_recipient,
                data.get("timestamp"),
                {
                    "url": text(data.get("link")),
                    "user_agent": text(data.get("userAgent"), 300),
                    "ip": text(data.get("ipAddress"), 64),
                },
            )
        )
    return events
