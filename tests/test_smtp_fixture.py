"""The SMTP test server itself: it records mail and fails on command."""

from __future__ import annotations

import aiosmtplib
import pytest

from tests.support.smtp_server import TestSmtpServer

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <m1@x>\r\n\r\nhello\r\n"


async def _send(
    server: TestSmtpServer, rcpts: list[str]
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    return await aiosmtplib.send(
        MESSAGE, sender="a@example.com", recipients=rcpts, hostname=server.host, port=server.port
    )


async def test_records_messages(smtp_server: TestSmtpServer) -> None:
    await _send(smtp_server, ["b@example.com", "c@example.com"])
    assert smtp_server.count() == 1
    assert smtp_server.recipients() == ["b@example.com", "c@example.com"]
    assert smtp_server.messages[0].message["Subject"] == "hi"


async def test_answers_chosen_codes_per_recipient(smtp_server: TestSmtpServer) -> None:
    smtp_server.behaviour.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    smtp_server.behaviour.rcpt_replies["later@example.com"] = "451 4.2.0 try later"
    errors, _ = await _send(
        smtp_server, ["gone@example.com", "later@example.com", "ok@example.com"]
    )
    assert errors["gone@example.com"].code == 550
    assert "5.1.1" in errors["gone@example.com"].message
    assert errors["later@example.com"].code == 451
    assert smtp_server.recipients() == ["ok@example.com"]


async def test_answers_chosen_codes_per_command(smtp_server: TestSmtpServer) -> None:
    smtp_server.behaviour.mail_reply = "421 4.3.2 service shutting down"
    with pytest.raises(aiosmtplib.SMTPResponseException) as mail:
        await _send(smtp_server, ["b@example.com"])
    assert mail.value.code == 421
    smtp_server.reset()
    smtp_server.behaviour.data_reply = "554 5.7.1 rejected for policy"
    with pytest.raises(aiosmtplib.SMTPDataError) as data:
        await _send(smtp_server, ["b@example.com"])
    assert data.value.code == 554
    assert smtp_server.count() == 0


async def test_auth_failure_is_535(smtp_server: TestSmtpServer) -> None:
    smtp_server.behaviour.auth_fail = True
    client = aiosmtplib.SMTP(hostname=smtp_server.host, port=smtp_server.port, start_tls=False)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as auth:
        await client.login("user", "wrong")
    assert auth.value.code == 535
    await client.quit()


@pytest.mark.parametrize("point", ["rcpt", "data"])
async def test_drops_the_connection(smtp_server: TestSmtpServer, point: str) -> None:
    smtp_server.behaviour.drop_at = point
    with pytest.raises((aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException)):
        await _send(smtp_server, ["b@example.com"])
    assert smtp_server.count() == 0


async def test_drop_after_data_keeps_the_message(smtp_server: TestSmtpServer) -> None:
    smtp_server.behaviour.drop_at = "after_data"
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await _send(smtp_server, ["b@example.com"])
    assert smtp_server.count() == 1  # received, but the client never heard so
