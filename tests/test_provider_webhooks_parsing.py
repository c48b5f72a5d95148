"""The provider adapters without a database: payload shapes as the providers document
them map onto the normalized events, and arbitrary (hostile) bodies end in a
``MalformedWebhook`` (400) or no event — never another exception (a 500)."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.feedback.providers import mailgun, postmark, sendgrid, ses
from postroom.feedback.providers.events import (
    MalformedWebhook,
    WebhookRefused,
    WebhookUnauthenticated,
)
from postroom.feedback.providers.ses import canonical_string, is_sns_url, parse_ses_message

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DELIVERY = "01940000-0000-7000-8000-000000000001"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "event",
                    "RecordType",
                    "Type",
                    "email",
                    "Email",
                    "Metadata",
                    "eventType",
                    "mail",
                    "bounce",
                    "bouncedRecipients",
                    "headers",
                    "severity",
                    "message",
                    "user-variables",
                    "postroom_delivery",
                    "timestamp",
                    "smtp-id",
                    "SuppressSending",
                ]
            )
            | st.text(max_size=8),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(json_values)
def test_hostile_bodies_never_crash(value: Any) -> None:
    raw = json.dumps(value).encode()
    for parse in (sendgrid.parse, postmark.parse):
        with contextlib.suppress(MalformedWebhook):
            parse(raw)
    with contextlib.suppress(MalformedWebhook):
        parse_ses_message(value)
    if isinstance(value, dict):
        mailgun.parse_event(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_malformed_or_parsed(raw: bytes) -> None:
    for parse in (sendgrid.parse, postmark.parse, ses.parse_envelope):
        with contextlib.suppress(MalformedWebhook):
            parse(raw)


def test_ses_bounce_complaint_delivery_open_click() -> None:
    mail = {
        "messageId": "ses-1",
        "timestamp": "2026-03-02T08:00:00Z",
        "destination": ["a@example.com"],
        "headers": [
            {"name": "X-Postroom-Delivery", "value": DELIVERY},
            {"name": "Message-ID", "value": "<x@brand.example>"},
        ],
    }
    hard = parse_ses_message(
        {
            "notificationType": "Bounce",
            "mail": mail,
            "bounce": {
                "bounceType": "Permanent",
                "bouncedRecipients": [
                    {"emailAddress": "a@example.com", "status": "5.1.1", "diagnosticCode": "x"}
                ],
            },
        }
    )
    assert [(e.kind, e.delivery_ref, e.message_id, e.email) for e in hard] == [
        ("bounce_hard", DELIVERY, "<x@brand.example>", "a@example.com")
    ]
    assert hard[0].details["status"] == "5.1.1"
    soft = parse_ses_message(
        json.dumps(
            {
                "eventType": "Bounce",
                "mail": mail,
                "bounce": {"bounceType": "Undetermined", "bouncedRecipients": ["a@example.com"]},
            }
        )
    )
    assert [e.kind for e in soft] == ["bounce_soft"]
    kinds = [
        parse_ses_message({"eventType": kind, "mail": mail, key: value})[0].kind
        for kind, key, value in [
            ("Complaint", "complaint", {"complainedRecipients": [{"emailAddress": "a@x.io"}]}),
            ("Delivery", "delivery", {"recipients": ["a@example.com"]}),
            ("Open", "open", {"timestamp": "2026-03-02T08:01:00Z"}),
            ("Click", "click", {"link": "https://x.example/"}),
        ]
    ]
    assert kinds == ["complaint", "delivered", "open", "click"]
    assert parse_ses_message({"eventType": "Send", "mail": mail, "send": {}}) == []


def test_sns_canonical_string_and_hosts() -> None:
    message = {
        "Type": "Notification",
        "MessageId": "m",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
        "Message": "hello",
        "Timestamp": "2026-03-02T09:00:00Z",
    }
    assert canonical_string(message) == (
        b"Message\nhello\nMessageId\nm\nTimestamp\n2026-03-02T09:00:00Z\n"
        b"TopicArn\narn:aws:sns:us-east-1:123456789012:t\nType\nNotification\n"
    )
    assert b"Subject\ns\n" in canonical_string({**message, "Subject": "s"})
    with pytest.raises(MalformedWebhook):
        canonical_string({**message, "Type": "SubscriptionConfirmation"})  # no Token
    assert is_sns_url("https://sns.us-east-1.amazonaws.com/x.pem")
    assert is_sns_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem")
    for url in (
        "http://sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
        "https://user@sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com:8443/x.pem",
        "https://s3.amazonaws.com/x.pem",
        "https://[::1/x",
    ):
        assert not is_sns_url(url), url


def test_sendgrid_kinds_and_key_forms() -> None:
    events = [
        {"event": "bounce", "type": "bounce", "email": "a@x.io"},
        {"event": "bounce", "type": "blocked", "email": "a@x.io"},
        {"event": "dropped", "reason": "Bounced Address", "email": "a@x.io"},
        {"event": "dropped", "reason": "Spam Reporting Address", "email": "a@x.io"},
        {"event": "dropped", "reason": "Unsubscribed Address", "email": "a@x.io"},
        {"event": "dropped", "reason": "Exceeded Maximum Message Size", "email": "a@x.io"},
        {"event": "spamreport", "email": "a@x.io"},
        {"event": "open", "email": "a@x.io"},
        {"event": "click", "url": "https://x.example/", "email": "a@x.io"},
        {"event": "group_unsubscribe", "email": "a@x.io"},
        {"event": "deferred", "email": "a@x.io"},
        {"event": "delivered", "email": "a@x.io", "custom_args": {"postroom_delivery": DELIVERY}},
    ]
    parsed = sendgrid.parse(json.dumps(events).encode())
    assert [e.kind for e in parsed] == [
        "bounce_hard",
        "bounce_soft",
        "bounce_hard",
        "complaint",
        "unsubscribe",
        "complaint",
        "open",
        "click",
        "unsubscribe",
        "delivered",
    ]
    assert parsed[-1].delivery_ref == DELIVERY
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    der = base64.b64encode(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    assert sendgrid.load_public_key(pem) == sendgrid.load_public_key(der)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ValueError, match="P-256"):
        sendgrid.load_public_key(
            p384.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
        )
    with pytest.raises(WebhookUnauthenticated):
        sendgrid.verify(der, {}, b"[]", NOW, timedelta(minutes=15))


def test_mailgun_kinds() -> None:
    def kind(**data: Any) -> str | None:
        event = mailgun.parse_event({"recipient": "a@x.io", **data})
        return event.kind if event else None

    assert kind(event="failed", severity="permanent") == "bounce_hard"
    assert kind(event="failed", severity="temporary") == "bounce_soft"
    assert kind(event="complained") == "complaint"
    assert kind(event="opened") == "open"
    assert kind(event="clicked", url="https://x.example/") == "click"
    assert kind(event="unsubscribed") == "unsubscribe"
    assert kind(event="delivered") == "delivered"
    assert kind(event="accepted") is None
    event = mailgun.parse_event(
        {"event": "delivered", "message": {"headers": {"message-id": "abc@brand.example"}}}
    )
    assert event is not None and event.message_id == "<abc@brand.example>"


def test_postmark_kinds_and_credentials() -> None:
    def kind(**record: Any) -> str | None:
        event = postmark.parse(json.dumps({"Email": "a@x.io", **record}).encode())
        return event.kind if event else None

    assert kind(RecordType="Bounce", Type="HardBounce") == "bounce_hard"
    assert kind(RecordType="Bounce", Type="SoftBounce") == "bounce_soft"
    assert kind(RecordType="Bounce", Type="AutoResponder") is None
    assert kind(RecordType="SpamComplaint") == "complaint"
    assert kind(RecordType="Delivery") == "delivered"
    assert kind(RecordType="Click", OriginalLink="https://x.example") == "click"
    assert kind(RecordType="SubscriptionChange", SuppressSending=True) == "unsubscribe"
    assert kind(RecordType="SubscriptionChange", SuppressSending=False) is None
    assert (
        kind(RecordType="SubscriptionChange", SuppressSending=True, SuppressionReason="HardBounce")
        is None
    )
    good = "Basic " + base64.b64encode(b"user:pa:ss").decode()
    postmark.check_credentials(good, "user", "pa:ss")
    with pytest.raises(WebhookRefused):
        postmark.check_credentials(good, "user", "pa:sS")
    with pytest.raises(WebhookUnauthenticated):
        postmark.check_credentials(None, "user", "pa:ss")


async def test_httpx_fetcher_refuses_redirects_errors_and_huge_bodies() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/ok.pem":
            return httpx.Response(200, content=b"PEM")
        if path == "/moved.pem":
            return httpx.Response(302, headers={"Location": "https://evil.example/x.pem"})
        if path == "/huge.pem":
            return httpx.Response(200, content=b"x" * (ses.MAX_CERTIFICATE_BYTES + 1))
        raise httpx.ConnectError("unreachable", request=request)

    fetcher = ses.HttpxFetcher(transport=httpx.MockTransport(answer))
    base = "https://sns.us-east-1.amazonaws.com"
    assert await fetcher.get(f"{base}/ok.pem") == b"PEM"
    for path in ("/moved.pem", "/huge.pem", "/down.pem"):
        with pytest.raises(ses.FetchFailed):
            await fetcher.get(base + path)


async def test_certificate_cache_is_bounded() -> None:
    class Counting:
        def __init__(self) -> None:
            self.calls: list[str] = []

        async def get(self, url: str) -> bytes:
            self.calls.append(url)
            return CERT_PEM

    fetcher = Counting()
    client = ses.SnsClient(fetcher, cache_size=2)
    urls = [f"https://sns.us-east-1.amazonaws.com/{n}.pem" for n in range(3)]
    for url in [urls[0], urls[0], urls[1], urls[0], urls[2], urls[1]]:
        await client.certificate(url)
    # 0 and 1 fetched, 0 served from the cache (twice), 2 evicts 1 (least recently used).
    assert fetcher.calls == [urls[0], urls[1], urls[2], urls[1]]
    with pytest.raises(WebhookRefused):
        await ses.SnsClient(
            ses.HttpxFetcher(
                transport=httpx.MockTransport(
                    lambda r: httpx.Response(200, content=b"not a certificate")
                )
            )
        ).certificate(urls[0])


def _self_signed() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-east-1.amazonaws.com")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


CERT_PEM = _self_signed()
