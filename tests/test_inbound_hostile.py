"""Malformed and hostile mail never crashes the inbound receiver: hypothesis generates
random bytes, broken MIME, huge headers and deeply nested multiparts; the classifier never
raises, and the real SMTP receiver answers every message and then still handles a valid
bounce."""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from postroom.config import Settings
from postroom.context import AppContext
from postroom.feedback.classify import classify
from postroom.feedback.smtp import InboundServer
from tests.conftest import WorkspaceHandle, make_settings
from tests.support.feedback import delivery_row, sent_delivery
from tests.support.smtp_server import TestSmtpServer
from tests.test_inbound import BOUNCE_DOMAIN, REPLY_DOMAIN, Client, counters, sample, verp_of


@pytest.fixture
def settings(db_url: str, tmp_path: Path, smtp_server: TestSmtpServer) -> Settings:
    return make_settings(
        db_url,
        tmp_path,
        bounce_domain=BOUNCE_DOMAIN,
        reply_domain=REPLY_DOMAIN,
        smtp_url=smtp_server.url,
        inbound_max_message_bytes=512 * 1024,
        inbound_keep_bytes=2048,
    )


@pytest.fixture
async def inbound(ctx: AppContext) -> AsyncIterator[InboundServer]:
    server = InboundServer(ctx, host="127.0.0.1", port=0)
    await server.start()
    yield server
    await server.stop()


_header_name = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
    min_size=1,
    max_size=30,
)
_header_value = st.text(max_size=200)
_CONTENT_TYPES = [
    "multipart/report; report-type=delivery-status",
    "multipart/report; report-type=feedback-report",
    "multipart/mixed",
    "message/delivery-status",
    "message/feedback-report",
    "message/rfc822",
    "text/rfc822-headers",
    "text/plain; charset=no-such-charset",
    "multipart/alternative; boundary=",
    "text/plain; charset*=utf-8''%FF%FE",
]


@st.composite
def broken_mime(draw: st.DrawFn) -> bytes:
    """A message shaped like a report, with its structure broken in random places."""
    boundary = draw(st.sampled_from(["b", "", "=_x", "--", "a" * 80]))
    lines = [f'Content-Type: {draw(st.sampled_from(_CONTENT_TYPES))}; boundary="{boundary}"']
    for name, value in draw(st.lists(st.tuples(_header_name, _header_value), max_size=8)):
        lines.append(f"{name}: {value}")
    lines.append("")
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            lines.append(f"--{boundary}")
        lines.append(f"Content-Type: {draw(st.sampled_from(_CONTENT_TYPES))}")
        if draw(st.booleans()):
            lines.append(
                f"Content-Transfer-Encoding: {draw(st.sampled_from(['base64', 'quoted-printable', 'x-bogus']))}"
            )
        lines.append("")
        lines.append(draw(st.text(max_size=300)))
        lines.append(
            draw(
                st.sampled_from(
                    [
                        "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1",
                        "Action: failed\nStatus: 9.9.9.9\nDiagnostic-Code: smtp; 550",
                        "Feedback-Type: abuse\nOriginal-Mail-From: <b-aaaa@x>",
                        "Action:\nStatus:",
                        "=?utf-8?b?!!!?=",
                        "",
                    ]
                )
            )
        )
    if draw(st.booleans()):
        lines.append(f"--{boundary}--")
    text = "\r\n".join(lines)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def huge_headers(draw: st.DrawFn) -> bytes:
    size = draw(st.integers(1_000, 60_000))
    folded = draw(st.booleans())
    value = "x" * size
    if folded:
        value = "\r\n ".join(value[i : i + 900] for i in range(0, size, 900))
    count = draw(st.integers(1, 5))
    head = "".join(f"X-Big-{i}: {value}\r\n" for i in range(count))
    return (head + "Subject: Undeliverable\r\n\r\nbody\r\n").encode()


@st.composite
def nested_multiparts(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 400))
    report = draw(st.booleans())
    parts = []
    for level in range(depth):
        kind = "multipart/report; report-type=delivery-status" if report else "multipart/mixed"
        parts.append(f'Content-Type: {kind}; boundary="l{level}"\r\n\r\n--l{level}\r\n')
    closing = "".join(f"\r\n--l{level}--\r\n" for level in reversed(range(depth)))
    body = "Content-Type: message/delivery-status\r\n\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    return ("".join(parts) + body + closing).encode()


hostile = st.one_of(
    st.binary(max_size=4096),
    broken_mime(),
    huge_headers(),
    nested_multiparts(),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(data=hostile, null_sender=st.booleans(), verp=st.booleans(), reply=st.booleans())
def test_classifier_never_raises(data: bytes, null_sender: bool, verp: bool, reply: bool) -> None:
    result = classify(
        data,
        mail_from="" if null_sender else "x@example.com",
        verp_recipient=verp,
        reply_recipient=reply,
    )
    assert result.kind in (
        "bounce", "delayed", "delivered", "complaint", "unsubscribe", "reply", "auto_reply",
        "unknown",
    )  # fmt: skip


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=hostile, null_sender=st.booleans())
async def test_receiver_survives_hostile_mail(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    inbound: InboundServer,
    data: bytes,
    null_sender: bool,
) -> None:
    sent = await sent_delivery(ctx, workspace.id, email="target@example.net")
    client = Client(inbound)
    verp = verp_of(ctx, sent.delivery_id)
    code = 250
    try:
        await client.send("" if null_sender else "x@example.org", [verp], data)
    except smtplib.SMTPDataError as refused:
        code = refused.smtp_code
    # Lines past the limit (500) or a message past the size limit (552); never a
    # temporary failure (that would mean the message could not even be kept).
    assert code in (250, 500, 552)
    # The receiver is still up and still works.
    valid = sample("rfc3464_hard.eml", ctx, sent)
    assert await client.send("", [verp], valid) == {}
    assert (await delivery_row(ctx, sent.delivery_id)).status == "bounced"
    # Nothing hostile got as far as an exception in the handling (kind "error").
    assert "error" not in await counters(ctx)
