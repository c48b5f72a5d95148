"""Provider event webhooks (SES via SNS, SendGrid, Mailgun, Postmark) end to end, on both
databases: a correctly signed call changes the ledger, the contact and the suppression
list through the feedback effects; an unsigned, badly signed, stale or replayed one is
refused with a problem body and changes nothing.

Nothing leaves the machine: the SNS certificate is a self-signed one generated here and
served by a fake fetcher put on ``app.state.sns_client``; SendGrid's ECDSA key, Mailgun's
signing key and Postmark's password are the test's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from sqlalchemy import select

from postroom.context import AppContext
from postroom.feedback.providers.ses import FetchFailed, SnsClient
from postroom.models.delivery import Delivery
from postroom.models.platform import Event
from postroom.models.providers import FeedbackProvider
from postroom.security.rotation import ENCRYPTED_COLUMNS, rotate_stored_secrets
from postroom.security.secret_box import SecretBox
from tests.conftest import EPOCH, TEST_SECRET, MakeWorkspace, WorkspaceHandle
from tests.support.feedback import (
    Sent,
    contact_row,
    delivery_row,
    sent_delivery,
    subscription_statuses,
    suppression_reasons,
)

REGION = "eu-west-1"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:postroom-ses-events"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-abc123.pem"
SUBSCRIBE_URL = (
    f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=t0k"
)
MAILGUN_KEY = "key-" + "3" * 32
POSTMARK_USER = "postmark-hooks"
POSTMARK_PASSWORD = "correct horse battery staple"


# --- the provider side: keys and signers the test holds ----------------------------------


def _rsa_certificate() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sns.{REGION}.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(EPOCH - timedelta(days=1))
        .not_valid_after(EPOCH + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


SNS_KEY, SNS_CERT = _rsa_certificate()


class FakeSns:
    """Serves the certificate at CERT_URL and answers SubscribeURL; records every GET."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages
        self.calls: list[str] = []

    async def get(self, url: str) -> bytes:
        self.calls.append(url)
        if url not in self.pages:
            raise FetchFailed(f"{url} is not served here")
        return self.pages[url]


def _sns_canonical(message: dict[str, Any]) -> bytes:
    """The canonical string as AWS documents it (written out again here on purpose)."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{n}\n{message[n]}\n" for n in names if n in message).encode()


def sns_message(
    kind: str,
    message: str,
    *,
    version: str = "1",
    topic: str = TOPIC,
    cert_url: str = CERT_URL,
    key: rsa.RSAPrivateKey = SNS_KEY,
    **extra: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": message,
        "Timestamp": "2026-03-02T09:00:00.000Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
        **extra,
    }
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(_sns_canonical(body), padding.PKCS1v15(), algorithm)
    body["Signature"] = base64.b64encode(signature).decode()
    return body


def ses_event(sent: Sent, kind: str, **fields: Any) -> str:
    mail = {
        "timestamp": "2026-03-02T08:59:00.000Z",
        "messageId": "0102018f-ses-id",
        "destination": [sent.email],
        "headersTruncated": False,
        "headers": [
            {"name": "Message-ID", "value": sent.message_id},
            {"name": "X-Postroom-Delivery", "value": str(sent.delivery_id)},
        ],
        "commonHeaders": {"messageId": sent.message_id},
    }
    return json.dumps({"eventType": kind, "mail": mail, **fields})


SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def sendgrid_headers(body: bytes, at: datetime = EPOCH) -> dict[str, str]:
    timestamp = str(int(at.timestamp()))
    signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def mailgun_body(
    event_data: dict[str, Any], *, key: str = MAILGUN_KEY, at: datetime = EPOCH, token: str = ""
) -> dict[str, Any]:
    timestamp = str(int(at.timestamp()))
    token = token or uuid.uuid4().hex * 2
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": event_data,
    }


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- fixtures and readers --------------------------------------------------------------------


@pytest.fixture
def sns(app: FastAPI) -> FakeSns:
    fake = FakeSns({CERT_URL: SNS_CERT, SUBSCRIBE_URL: b"<ConfirmSubscriptionResponse/>"})
    app.state.sns_client = SnsClient(fake)
    return fake


async def configure(
    client: httpx.AsyncClient, ws: WorkspaceHandle, provider: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.put(f"/v1/feedback-providers/{provider}", headers=ws.headers, json=body)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


CREDENTIALS: dict[str, dict[str, Any]] = {
    "ses": {"topic_arns": [TOPIC]},
    "sendgrid": {"public_key": SENDGRID_PUBLIC},
    "mailgun": {"signing_key": MAILGUN_KEY},
    "postmark": {"username": POSTMARK_USER, "password": POSTMARK_PASSWORD},
}


def hook(provider: str, ws: WorkspaceHandle) -> str:
    return f"/webhooks/{provider}/{ws.id}"


async def state(ctx: AppContext, sent: Sent) -> tuple[str, str | None, set[str], int]:
    """Delivery status, contact status, suppression reasons, number of events."""
    delivery = await delivery_row(ctx, sent.delivery_id)
    contact = await contact_row(ctx, sent.contact_id) if sent.contact_id else None
    async with ctx.db.transaction() as session:
        count = len(
            list(
                (
                    await session.execute(
                        select(Event.id).where(Event.workspace_id == sent.workspace_id)
                    )
                ).scalars()
            )
        )
    return (
        delivery.status,
        contact.status if contact else None,
        await suppression_reasons(ctx, sent.workspace_id, sent.email),
        count,
    )


async def event_types(ctx: AppContext, delivery_id: uuid.UUID) -> list[str]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(
            select(Event.type).where(Event.resource_id == delivery_id).order_by(Event.seq)
        )
        return list(rows.scalars())


async def provider_row(ctx: AppContext, ws: WorkspaceHandle, provider: str) -> FeedbackProvider:
    async with ctx.db.transaction() as session:
        return (
            await session.execute(
                select(FeedbackProvider).where(
                    FeedbackProvider.workspace_id == ws.id, FeedbackProvider.provider == provider
                )
            )
        ).scalar_one()


def assert_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == status


# --- Amazon SES via SNS ----------------------------------------------------------------------


async def test_ses_permanent_bounce_bounces_and_suppresses(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, sns: FakeSns
) -> None:
    await configure(client, workspace, "ses", CREDENTIALS["ses"])
    sent = await sent_delivery(ctx, workspace.id)
    bounce = {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "timestamp": "2026-03-02T09:00:01.000Z",
        "bouncedRecipients": [
            {
                "emailAddress": sent.email,
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
    }
    body = sns_message("Notification", ses_event(sent, "Bounce", bounce=bounce))
    response = await client.post(
        hook("ses", workspace),
        content=json.dumps(body),
        headers={"x-amz-sns-message-type": "Notification", "content-type": "text/plain"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "received": 1,
        "applied": 1,
        "unchanged": 0,
        "unmatched": 0,
    }
    status, contact_status, reasons, _ = await state(ctx, sent)
    assert (status, contact_status, reasons) == ("bounced", "bounced", {"bounce"})
    bounced = [e for e in await event_types(ctx, sent.delivery_id) if e == "email.bounced"]
    assert bounced == ["email.bounced"]

    # A complaint about the same message (SignatureVersion 2 this time): the certificate
    # comes from the cache, not from another fetch.
    complaint = {
        "complainedRecipients": [{"emailAddress": sent.email}],
        "complaintFeedbackType": "abuse",
        "timestamp": "2026-03-02T09:05:00.000Z",
    }
    body = sns_message(
        "Notification", ses_event(sent, "Complaint", complaint=complaint), version="2"
    )
    response = await client.post(hook("ses", workspace), content=json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1
    assert (await contact_row(ctx, sent.contact_id)).status == "complained"  # type: ignore[arg-type]
    assert "complaint" in await suppression_reasons(ctx, sent.workspace_id, sent.email)
    assert sns.calls == [CERT_URL]

    # SNS may deliver the same message twice: the second is a 200 that changes nothing.
    again = await client.post(hook("ses", workspace), content=json.dumps(body))
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    row = await provider_row(ctx, workspace, "ses")
    assert (row.events_received, row.events_applied, row.events_unmatched) == (2, 2, 0)


async def test_ses_transient_bounce_delivery_open_and_click(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, sns: FakeSns
) -> None:
    await configure(client, workspace, "ses", CREDENTIALS["ses"])
    sent = await sent_delivery(ctx, workspace.id)

    async def post(kind: str, **fields: Any) -> dict[str, Any]:
        body = sns_message("Notification", ses_event(sent, kind, **fields))
        response = await client.post(hook("ses", workspace), content=json.dumps(body))
        assert response.status_code == 200, response.text
        return dict(response.json())

    delivered = {"timestamp": "2026-03-02T09:00:02Z", "recipients": [sent.email]}
    assert (await post("Delivery", delivery=delivered))["applied"] == 1
    opened = {"timestamp": "2026-03-02T09:10:00Z", "userAgent": "Mail", "ipAddress": "192.0.2.1"}
    assert (await post("Open", open=opened))["applied"] == 1
    click = {"timestamp": "2026-03-02T09:11:00Z", "link": "https://brand.example/offer"}
    assert (await post("Click", click=click))["applied"] == 1
    transient = {
        "bounceType": "Transient",
        "bounceSubType": "MailboxFull",
        "bouncedRecipients": [{"emailAddress": sent.email, "status": "4.2.2"}],
    }
    assert (await post("Bounce", bounce=transient))["applied"] == 1
    types = await event_types(ctx, sent.delivery_id)
    assert {"email.delivered", "email.opened", "email.clicked", "email.failed"} <= set(types)
    status, contact_status, reasons, _ = await state(ctx, sent)
    # One soft bounce is counted, not suppressed.
    assert (status, contact_status, reasons) == ("failed", "subscribed", set())
    async with ctx.db.transaction() as session:
        click_data = (
            await session.execute(select(Event.data).where(Event.type == "email.clicked"))
        ).scalar_one()
    assert click_data["url"] == "https://brand.example/offer"
    assert click_data["source"] == "ses"


async def test_sns_subscription_confirmation(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, sns: FakeSns
) -> None:
    await configure(client, workspace, "ses", CREDENTIALS["ses"])
    body = sns_message(
        "SubscriptionConfirmation",
        "You have chosen to subscribe to the topic …",
        SubscribeURL=SUBSCRIBE_URL,
        Token="t0k",
    )
    response = await client.post(
        hook("ses", workspace),
        content=json.dumps(body),
        headers={"x-amz-sns-message-type": "SubscriptionConfirmation"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "subscription_confirmed"
    assert sns.calls == [CERT_URL, SUBSCRIBE_URL]
    listed = (await client.get("/v1/feedback-providers/ses", headers=workspace.headers)).json()
    assert listed["subscription_confirmed_at"] is not None

    # A SubscribeURL off SNS is never fetched, even correctly signed.
    evil = sns_message(
        "SubscriptionConfirmation",
        "subscribe",
        SubscribeURL="https://attacker.example/?Action=ConfirmSubscription",
        Token="t0k",
    )
    refused = await client.post(hook("ses", workspace), content=json.dumps(evil))
    assert_problem(refused, 403)
    assert sns.calls == [CERT_URL, SUBSCRIBE_URL]

    # An UnsubscribeConfirmation is verified and acknowledged; nothing is fetched.
    goodbye = sns_message(
        "UnsubscribeConfirmation",
        "You have chosen to deactivate subscription …",
        SubscribeURL=SUBSCRIBE_URL,
        Token="t0k",
    )
    acknowledged = await client.post(hook("ses", workspace), content=json.dumps(goodbye))
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["status"] == "ignored"
    assert sns.calls == [CERT_URL, SUBSCRIBE_URL]

    # SNS cannot be reached: 502, so SNS retries later; nothing is marked.
    unreachable = sns_message(
        "SubscriptionConfirmation",
        "subscribe",
        SubscribeURL=f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&Token=zz",
        Token="zz",
    )
    failed = await client.post(hook("ses", workspace), content=json.dumps(unreachable))
    assert_problem(failed, 502)


async def test_sns_refusals_change_nothing(
    client: httpx.AsyncClient, ctx: AppContext, make_workspace: MakeWorkspace, sns: FakeSns
) -> None:
    ws = await make_workspace("ses-refusals")
    await configure(client, ws, "ses", CREDENTIALS["ses"])
    sent = await sent_delivery(ctx, ws.id)
    before = await state(ctx, sent)
    bounce = {
        "bounceType": "Permanent",
        "bouncedRecipients": [{"emailAddress": sent.email, "status": "5.1.1"}],
    }
    good = sns_message("Notification", ses_event(sent, "Bounce", bounce=bounce))

    tampered = {**good, "Message": good["Message"].replace("Permanent", "Transient")}
    unsigned = {k: v for k, v in good.items() if k != "Signature"}
    other_key, _ = _rsa_certificate()
    wrong_key = sns_message("Notification", good["Message"], key=other_key)
    foreign_topic = sns_message(
        "Notification", good["Message"], topic=f"arn:aws:sns:{REGION}:999999999999:theirs"
    )
    evil_cert = sns_message(
        "Notification",
        good["Message"],
        cert_url="https://sns.eu-west-1.amazonaws.com.evil.example/c.pem",
    )
    http_cert = sns_message(
        "Notification", good["Message"], cert_url=CERT_URL.replace("https", "http")
    )
    other_region = sns_message(
        "Notification",
        good["Message"],
        cert_url="https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc123.pem",
    )
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("tampered message", tampered, 403),
        ("unsigned", unsigned, 401),
        ("signed by another key", wrong_key, 403),
        ("topic not allowed", foreign_topic, 403),
        ("certificate off SNS", evil_cert, 403),
        ("certificate over http", http_cert, 403),
        ("certificate of another region", other_region, 403),
        ("unknown version", {**good, "SignatureVersion": "3"}, 403),
    ]
    for label, body, status in cases:
        response = await client.post(hook("ses", ws), content=json.dumps(body))
        assert response.status_code == status, (label, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), label
    assert await state(ctx, sent) == before
    # Only the genuine certificate URL was ever fetched (for the tampered and unsigned-by-
    # us cases); the hosts off SNS were refused before any request.
    assert set(sns.calls) <= {CERT_URL}

    for label, raw in [
        ("not JSON", b"{nope"),
        ("not an object", b"[1, 2]"),
        ("no type", json.dumps({"TopicArn": TOPIC}).encode()),
    ]:
        response = await client.post(hook("ses", ws), content=raw)
        assert_problem(response, 400)
        assert label
    bad_event = sns_message("Notification", json.dumps({"eventType": "Bounce"}))
    assert_problem(await client.post(hook("ses", ws), content=json.dumps(bad_event)), 400)
    assert await state(ctx, sent) == before

    # The genuine message still works after all that.
    response = await client.post(hook("ses", ws), content=json.dumps(good))
    assert response.status_code == 200, response.text
    assert (await state(ctx, sent))[0] == "bounced"


# --- SendGrid ----------------------------------------------------------------------------------


async def test_sendgrid_signed_batch(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await configure(client, workspace, "sendgrid", CREDENTIALS["sendgrid"])
    bounced = await sent_delivery(ctx, workspace.id, email="gone@example.com")
    delivered = await sent_delivery(ctx, workspace.id, email="here@example.com")
    complained = await sent_delivery(ctx, workspace.id, email="angry@example.com")
    ts = int(EPOCH.timestamp())
    events = [
        {
            "email": "gone@example.com",
            "timestamp": ts,
            "event": "bounce",
            "type": "bounce",
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account does not exist",
            "sg_event_id": "ev-1",
            "postroom_delivery": str(bounced.delivery_id),
        },
        # Matched by the Message-ID SendGrid reports as smtp-id.
        {
            "email": "here@example.com",
            "timestamp": ts,
            "event": "delivered",
            "smtp-id": delivered.message_id,
            "sg_event_id": "ev-2",
        },
        {
            "email": "angry@example.com",
            "timestamp": ts,
            "event": "spamreport",
            "postroom_delivery": str(complained.delivery_id),
        },
        {
            "email": "nobody@example.com",
            "timestamp": ts,
            "event": "delivered",
            "postroom_delivery": str(uuid.uuid4()),
        },
        {"email": "here@example.com", "timestamp": ts, "event": "processed"},
    ]
    body = json.dumps(events).encode()
    headers = sendgrid_headers(body)
    response = await client.post(hook("sendgrid", workspace), content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "received": 4,
        "applied": 3,
        "unchanged": 0,
        "unmatched": 1,
    }
    assert (await state(ctx, bounced))[:3] == ("bounced", "bounced", {"bounce"})
    assert "email.delivered" in await event_types(ctx, delivered.delivery_id)
    assert (await state(ctx, complained))[1:3] == ("complained", {"complaint"})
    stats = (await client.get("/v1/feedback-providers/sendgrid", headers=workspace.headers)).json()[
        "stats"
    ]
    assert (stats["received"], stats["applied"], stats["unmatched"]) == (4, 3, 1)

    # The very same signed call again is a replay; so is the same call with the
    # signature altered into its other valid form (s → n - s), which needs no key.
    replay = await client.post(hook("sendgrid", workspace), content=body, headers=headers)
    assert_problem(replay, 403)
    assert replay.json()["code"] == "webhook_replayed"
    r, s = decode_dss_signature(base64.b64decode(headers["X-Twilio-Email-Event-Webhook-Signature"]))
    malleated = {
        **headers,
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(
            encode_dss_signature(r, P256_ORDER - s)
        ).decode(),
    }
    replay = await client.post(hook("sendgrid", workspace), content=body, headers=malleated)
    assert_problem(replay, 403)
    assert replay.json()["code"] == "webhook_replayed"


async def test_sendgrid_refusals_change_nothing(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await configure(client, workspace, "sendgrid", CREDENTIALS["sendgrid"])
    sent = await sent_delivery(ctx, workspace.id)
    before = await state(ctx, sent)
    events = [
        {
            "email": sent.email,
            "timestamp": 1,
            "event": "bounce",
            "type": "bounce",
            "postroom_delivery": str(sent.delivery_id),
        }
    ]
    body = json.dumps(events).encode()
    headers = sendgrid_headers(body)

    unsigned = await client.post(hook("sendgrid", workspace), content=body)
    assert_problem(unsigned, 401)
    altered = body.replace(b"bounce", b"bounce ", 1)
    assert_problem(
        await client.post(hook("sendgrid", workspace), content=altered, headers=headers), 403
    )
    other = ec.generate_private_key(ec.SECP256R1())
    forged = {
        **headers,
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(
            other.sign(
                headers["X-Twilio-Email-Event-Webhook-Timestamp"].encode() + body,
                ec.ECDSA(hashes.SHA256()),
            )
        ).decode(),
    }
    assert_problem(
        await client.post(hook("sendgrid", workspace), content=body, headers=forged), 403
    )
    stale = sendgrid_headers(body, at=EPOCH - timedelta(hours=1))
    response = await client.post(hook("sendgrid", workspace), content=body, headers=stale)
    assert_problem(response, 403)
    assert response.json()["code"] == "webhook_stale"
    garbage = {**headers, "X-Twilio-Email-Event-Webhook-Signature": "%%%"}
    assert_problem(
        await client.post(hook("sendgrid", workspace), content=body, headers=garbage), 403
    )
    assert await state(ctx, sent) == before

    # Correctly signed but not SendGrid's shape: 400, never 500.
    for raw in (b"{not json", b'{"event": "bounce"}', b"[1]"):
        assert_problem(
            await client.post(
                hook("sendgrid", workspace), content=raw, headers=sendgrid_headers(raw)
            ),
            400,
        )
    assert await state(ctx, sent) == before


# --- Mailgun -----------------------------------------------------------------------------------


def mailgun_event(sent: Sent, event: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "event": event,
        "timestamp": EPOCH.timestamp(),
        "recipient": sent.email,
        "message": {"headers": {"message-id": sent.message_id.strip("<>")}},
        "user-variables": {"postroom_delivery": str(sent.delivery_id)},
        **fields,
    }


async def test_mailgun_failed_and_complained(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await configure(client, workspace, "mailgun", CREDENTIALS["mailgun"])
    bounced = await sent_delivery(ctx, workspace.id, email="gone@example.com")
    complained = await sent_delivery(ctx, workspace.id, email="angry@example.com")
    failed = mailgun_event(
        bounced,
        "failed",
        severity="permanent",
        reason="bounce",
        **{
            "delivery-status": {
                "code": 550,
                "message": "5.1.1 no such user",
                "enhanced-code": "5.1.1",
            }
        },
    )
    response = await client.post(hook("mailgun", workspace), json=mailgun_body(failed))
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1
    assert (await state(ctx, bounced))[:3] == ("bounced", "bounced", {"bounce"})

    # Matched by Message-ID alone (no user variables).
    complaint = mailgun_event(complained, "complained")
    complaint.pop("user-variables")
    response = await client.post(hook("mailgun", workspace), json=mailgun_body(complaint))
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1
    assert (await state(ctx, complained))[1:3] == ("complained", {"complaint"})
    statuses = await subscription_statuses(ctx, complained.contact_id)  # type: ignore[arg-type]
    assert set(statuses.values()) == {"unsubscribed"}

    # An event type that changes nothing is acknowledged.
    accepted = mailgun_event(bounced, "accepted")
    response = await client.post(hook("mailgun", workspace), json=mailgun_body(accepted))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"


async def test_mailgun_refusals_and_replay(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await configure(client, workspace, "mailgun", CREDENTIALS["mailgun"])
    sent = await sent_delivery(ctx, workspace.id)
    before = await state(ctx, sent)
    event = mailgun_event(sent, "failed", severity="permanent")

    wrong_key = mailgun_body(event, key="key-" + "9" * 32)
    assert_problem(await client.post(hook("mailgun", workspace), json=wrong_key), 403)
    stale = mailgun_body(event, at=EPOCH - timedelta(minutes=20))
    response = await client.post(hook("mailgun", workspace), json=stale)
    assert_problem(response, 403)
    assert response.json()["code"] == "webhook_stale"
    unsigned = {"event-data": event}
    assert_problem(await client.post(hook("mailgun", workspace), json=unsigned), 401)
    # A signature copied onto other event data still verifies (Mailgun signs only the
    # timestamp and token) — which is why each token is accepted once.
    assert_problem(await client.post(hook("mailgun", workspace), content=b"{]"), 400)
    assert await state(ctx, sent) == before

    good = mailgun_body(mailgun_event(sent, "delivered"), token="a" * 50)
    first = await client.post(hook("mailgun", workspace), json=good)
    assert first.status_code == 200, first.text
    swapped = {**good, "event-data": event}
    replay = await client.post(hook("mailgun", workspace), json=swapped)
    assert_problem(replay, 403)
    assert replay.json()["code"] == "webhook_replayed"
    assert (await state(ctx, sent))[0] == "sent"

    # Past the tolerance the kept token is purged; the old call is then refused as stale.
    ctx.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    late = await client.post(hook("mailgun", workspace), json=good)
    assert_problem(late, 403)
    assert late.json()["code"] == "webhook_stale"


# --- Postmark ----------------------------------------------------------------------------------


async def test_postmark_basic_auth(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await configure(client, workspace, "postmark", CREDENTIALS["postmark"])
    sent = await sent_delivery(ctx, workspace.id)
    before = await state(ctx, sent)
    bounce = {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": sent.email,
        "BouncedAt": "2026-03-02T09:00:01Z",
        "Metadata": {"postroom_delivery": str(sent.delivery_id)},
    }
    url = hook("postmark", workspace)
    assert_problem(await client.post(url, json=bounce), 401)
    assert_problem(
        await client.post(url, json=bounce, headers=basic(POSTMARK_USER, "wrong password!")), 403
    )
    assert_problem(
        await client.post(url, json=bounce, headers=basic("someone", POSTMARK_PASSWORD)), 403
    )
    assert_problem(
        await client.post(url, json=bounce, headers={"Authorization": "Basic !!notbase64"}), 403
    )
    assert_problem(
        await client.post(url, json=bounce, headers={"Authorization": "Bearer sk_x"}), 401
    )
    assert await state(ctx, sent) == before

    auth = basic(POSTMARK_USER, POSTMARK_PASSWORD)
    response = await client.post(url, json=bounce, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1
    assert (await state(ctx, sent))[:3] == ("bounced", "bounced", {"bounce"})
    # The same record again changes nothing more.
    response = await client.post(url, json=bounce, headers=auth)
    assert response.json()["unchanged"] == 1

    opened = {
        "RecordType": "Open",
        "Recipient": sent.email,
        "ReceivedAt": "2026-03-02T09:03:00Z",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "UserAgent": "Mozilla/5.0",
        "Metadata": {"postroom_delivery": str(sent.delivery_id)},
    }
    response = await client.post(url, json=opened, headers=auth)
    assert response.json()["applied"] == 1
    assert "email.opened" in await event_types(ctx, sent.delivery_id)
    assert_problem(await client.post(url, content=b"not json", headers=auth), 400)
    assert_problem(await client.post(url, json={"no": "record type"}, headers=auth), 400)


async def test_postmark_unsubscribe_and_wrong_address(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await configure(client, workspace, "postmark", CREDENTIALS["postmark"])
    sent = await sent_delivery(ctx, workspace.id)
    auth = basic(POSTMARK_USER, POSTMARK_PASSWORD)
    change = {
        "RecordType": "SubscriptionChange",
        "Recipient": "someone-else@example.com",
        "ChangedAt": "2026-03-02T09:03:00Z",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "Metadata": {"postroom_delivery": str(sent.delivery_id)},
    }
    # The event names another address than the delivery's: not applied to ours.
    response = await client.post(hook("postmark", workspace), json=change, headers=auth)
    assert response.json()["unmatched"] == 1
    assert set((await subscription_statuses(ctx, sent.contact_id)).values()) == {"subscribed"}  # type: ignore[arg-type]

    change["Recipient"] = sent.email
    response = await client.post(hook("postmark", workspace), json=change, headers=auth)
    assert response.json()["applied"] == 1, response.text
    statuses = await subscription_statuses(ctx, sent.contact_id)  # type: ignore[arg-type]
    assert statuses[sent.list_ids[0]] == "unsubscribed"
    assert statuses[sent.list_ids[1]] == "subscribed"


# --- credentials resource and workspace identification ----------------------------------------


async def test_credentials_resource(
    client: httpx.AsyncClient,
    ctx: AppContext,
    make_workspace: MakeWorkspace,
    make_key: Any,
) -> None:
    a = await make_workspace("creds-a")
    b = await make_workspace("creds-b")
    created = await client.put(
        "/v1/feedback-providers/mailgun", headers=a.headers, json=CREDENTIALS["mailgun"]
    )
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["secret_set"] is True
    assert out["webhook_url"] == f"https://postroom.test/webhooks/mailgun/{a.id}"
    assert MAILGUN_KEY not in created.text
    postmark = await configure(client, a, "postmark", CREDENTIALS["postmark"])
    assert postmark["username"] == POSTMARK_USER
    assert POSTMARK_PASSWORD not in json.dumps(postmark)
    listing = await client.get("/v1/feedback-providers", headers=a.headers)
    assert [row["provider"] for row in listing.json()["data"]] == ["mailgun", "postmark"]
    assert MAILGUN_KEY not in listing.text and POSTMARK_PASSWORD not in listing.text

    # Stored encrypted, and registered for `postroom secrets rotate`.
    row = await provider_row(ctx, a, "mailgun")
    assert row.secret and MAILGUN_KEY not in row.secret
    assert ctx.secret_box.decrypt(row.secret) == MAILGUN_KEY
    assert (FeedbackProvider, "id", "secret") in ENCRYPTED_COLUMNS

    # Replacing answers 200 and keeps the counters' row.
    replaced = await client.put(
        "/v1/feedback-providers/mailgun", headers=a.headers, json={"signing_key": "k" * 40}
    )
    assert replaced.status_code == 200, replaced.text
    assert (await provider_row(ctx, a, "mailgun")).id == row.id

    # B never sees or changes A's credentials.
    assert_problem(await client.get("/v1/feedback-providers/mailgun", headers=b.headers), 404)
    assert (await client.get("/v1/feedback-providers", headers=b.headers)).json()["data"] == []
    assert_problem(await client.delete("/v1/feedback-providers/mailgun", headers=b.headers), 404)
    mine = await client.put(
        "/v1/feedback-providers/mailgun", headers=b.headers, json={"signing_key": "z" * 40}
    )
    assert mine.status_code == 201
    assert ctx.secret_box.decrypt((await provider_row(ctx, a, "mailgun")).secret or "") == "k" * 40

    # Validation: each provider takes its own fields.
    bad = [
        ("mailgun", {"public_key": SENDGRID_PUBLIC}, "public_key"),
        ("mailgun", {"signing_key": "short"}, "signing_key"),
        ("sendgrid", {"public_key": "bm90IGEga2V5"}, "public_key"),
        ("ses", {"topic_arns": ["arn:aws:s3:::bucket"]}, "topic_arns.0"),
        ("ses", {"topic_arns": []}, "topic_arns"),
        ("postmark", {"username": "a:b", "password": "x" * 20}, "username"),
        ("postmark", {"username": "u", "password": "short"}, "password"),
        ("postmark", {"username": "u"}, "password"),
    ]
    for provider, body, field in bad:
        response = await client.put(
            f"/v1/feedback-providers/{provider}", headers=a.headers, json=body
        )
        assert_problem(response, 422)
        assert field in [e["field"] for e in response.json()["errors"]], (provider, response.text)
    assert_problem(
        await client.put("/v1/feedback-providers/sparkpost", headers=a.headers, json={}), 404
    )

    # Scopes: inbound:read may look, not change.
    reader = await make_key(a, scopes=["inbound:read"])
    headers = {"Authorization": f"Bearer {reader}"}
    assert (await client.get("/v1/feedback-providers", headers=headers)).status_code == 200
    assert_problem(
        await client.put("/v1/feedback-providers/mailgun", headers=headers, json={}), 403
    )
    outsider = await make_key(a, scopes=["contacts:read"])
    assert_problem(
        await client.get("/v1/feedback-providers", headers={"Authorization": f"Bearer {outsider}"}),
        403,
    )

    # Deleted credentials: calls are refused from then on.
    deleted = await client.delete("/v1/feedback-providers/mailgun", headers=a.headers)
    assert deleted.status_code == 204
    sent = await sent_delivery(ctx, a.id)
    call = mailgun_body(mailgun_event(sent, "failed", severity="permanent"), key="k" * 40)
    assert_problem(await client.post(f"/webhooks/mailgun/{a.id}", json=call), 401)


async def test_webhook_workspace_identification(
    client: httpx.AsyncClient, ctx: AppContext, make_workspace: MakeWorkspace
) -> None:
    a = await make_workspace("wh-a")
    b = await make_workspace("wh-b")
    await configure(client, a, "mailgun", CREDENTIALS["mailgun"])
    await configure(client, b, "mailgun", {"signing_key": "key-" + "b" * 32})
    sent_a = await sent_delivery(ctx, a.id)
    before = await state(ctx, sent_a)
    call = mailgun_body(mailgun_event(sent_a, "failed", severity="permanent"))

    # Unknown workspace, malformed id, unconfigured provider: the same 401.
    for url in (
        f"/webhooks/mailgun/{uuid.uuid4()}",
        "/webhooks/mailgun/not-a-uuid",
        f"/webhooks/postmark/{a.id}",
    ):
        assert_problem(await client.post(url, json=call), 401)
    assert_problem(await client.post(f"/webhooks/sparkpost/{a.id}", json=call), 404)
    # A's signed call sent to B's URL fails B's key.
    assert_problem(await client.post(f"/webhooks/mailgun/{b.id}", json=call), 403)
    # B, signing with its own key, cannot reach A's delivery: it is unmatched in B.
    b_call = mailgun_body(
        mailgun_event(sent_a, "failed", severity="permanent"), key="key-" + "b" * 32
    )
    response = await client.post(f"/webhooks/mailgun/{b.id}", json=b_call)
    assert response.status_code == 200, response.text
    assert response.json()["unmatched"] == 1
    assert await state(ctx, sent_a) == before

    huge = b"[" + b" " * (5 * 1024 * 1024 + 1) + b"]"
    assert_problem(await client.post(f"/webhooks/mailgun/{a.id}", content=huge), 413)


async def test_policy_refusal_reported_as_permanent_suppresses_nobody(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await configure(client, workspace, "mailgun", CREDENTIALS["mailgun"])
    sent = await sent_delivery(ctx, workspace.id)
    event = mailgun_event(
        sent,
        "failed",
        severity="permanent",
        **{
            "delivery-status": {
                "code": 550,
                "enhanced-code": "5.7.1",
                "message": "5.7.1 rejected by policy (spam content)",
            }
        },
    )
    response = await client.post(hook("mailgun", workspace), json=mailgun_body(event))
    assert response.status_code == 200, response.text
    status, contact_status, reasons, _ = await state(ctx, sent)
    assert (status, contact_status, reasons) == ("failed", "subscribed", set())


async def test_unknown_delivery_is_acknowledged_and_counted(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, sns: FakeSns
) -> None:
    await configure(client, workspace, "ses", CREDENTIALS["ses"])
    ghost = Sent(
        workspace_id=uuid.UUID(str(workspace.id)),
        send_id=uuid.uuid4(),
        delivery_id=uuid.uuid4(),
        contact_id=None,
        email="ghost@example.com",
        message_id="<ghost@brand.example>",
        list_ids=[],
    )
    bounce = {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": ghost.email}]}
    body = sns_message("Notification", ses_event(ghost, "Bounce", bounce=bounce))
    response = await client.post(hook("ses", workspace), content=json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.json()["unmatched"] == 1
    assert await suppression_reasons(ctx, ghost.workspace_id, ghost.email) == set()
    assert (await provider_row(ctx, workspace, "ses")).events_unmatched == 1
    async with ctx.db.transaction() as session:
        assert (await session.execute(select(Delivery.id))).first() is None


async def test_secrets_rotate_re_encrypts_provider_secrets(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await configure(client, workspace, "postmark", CREDENTIALS["postmark"])
    await configure(client, workspace, "sendgrid", CREDENTIALS["sendgrid"])  # no secret
    before = (await provider_row(ctx, workspace, "postmark")).secret
    new_key = b"a-brand-new-secret-key-" + b"y" * 32
    async with ctx.db.transaction() as session:
        count = await rotate_stored_secrets(
            session,
            SecretBox([new_key, TEST_SECRET.encode()]),
            [(FeedbackProvider, "id", "secret")],
        )
    assert count == 1
    after = (await provider_row(ctx, workspace, "postmark")).secret
    assert after and after != before
    assert SecretBox([new_key]).decrypt(after) == POSTMARK_PASSWORD
