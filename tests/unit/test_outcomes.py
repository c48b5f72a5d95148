"""SMTP replies and transport errors, classified into ledger outcomes."""

from __future__ import annotations

import ssl

import aiosmtplib
import pytest

from postroom.delivery.outcomes import (
    OutcomeKind,
    Stage,
    classify_exception,
    classify_reply,
    parse_enhanced,
)

SENT = OutcomeKind.SENT
DEFERRED = OutcomeKind.DEFERRED
BOUNCED = OutcomeKind.BOUNCED
FAILED = OutcomeKind.FAILED
RELAY = OutcomeKind.RELAY_ERROR

REPLIES: list[tuple[int, str, Stage, OutcomeKind]] = [
    # success
    (250, "2.0.0 Ok: queued as 4Fd1", "data", SENT),
    (251, "User not local; will forward", "rcpt", SENT),
    # enhanced codes decide before the first digit
    (550, "5.1.1 <x@example.com>: Recipient address rejected: User unknown", "rcpt", BOUNCED),
    (550, "5.1.2 bad destination system address", "rcpt", BOUNCED),
    (501, "5.1.3 Bad recipient address syntax", "rcpt", BOUNCED),
    (550, "5.1.6 mailbox has moved", "rcpt", BOUNCED),
    (556, "5.1.10 Recipient address has null MX", "rcpt", BOUNCED),
    (550, "5.2.1 The email account that you tried to reach is disabled", "rcpt", BOUNCED),
    (552, "5.2.2 The email account that you tried to reach is over quota", "rcpt", DEFERRED),
    (552, "5.2.3 Message size exceeds fixed maximum message size", "data", FAILED),
    (552, "5.3.4 Message too big for system", "data", FAILED),
    (550, "5.4.4 Unable to route", "rcpt", BOUNCED),
    (550, "5.4.1 Recipient address rejected: Access denied", "rcpt", FAILED),
    (554, "5.7.1 Message rejected due to policy", "data", FAILED),
    (550, "5.7.1 Service unavailable; client host blocked using Spamhaus", "rcpt", FAILED),
    (550, "5.7.26 Unauthenticated email is not accepted (DMARC)", "data", FAILED),
    (554, "5.6.0 Message content rejected", "data", FAILED),
    (550, "5.5.0 Requested action not taken", "rcpt", FAILED),
    (550, "5.1.7 Invalid address format for sender", "rcpt", FAILED),
    # vague enhanced codes fall back to the wording
    (550, "5.1.0 Address rejected: user unknown", "rcpt", BOUNCED),
    (550, "5.0.0 Message rejected", "rcpt", FAILED),
    # 4xx is always a deferral, even with a permanent-looking enhanced code
    (451, "4.3.0 Temporary local problem", "data", DEFERRED),
    (
        450,
        "4.2.1 The user you are trying to contact is receiving mail too quickly",
        "rcpt",
        DEFERRED,
    ),
    (452, "4.2.2 Mailbox full", "rcpt", DEFERRED),
    (450, "5.1.1 mislabelled but transient", "rcpt", DEFERRED),
    (450, "Greylisted, try again later", "rcpt", DEFERRED),
    # no enhanced code: wording for 550/551/553, otherwise failed
    (550, "<x@example.com>: User unknown in virtual mailbox table", "rcpt", BOUNCED),
    (550, "No such user here", "rcpt", BOUNCED),
    (551, "User not local; please try <y@other.example>: mailbox unavailable", "rcpt", BOUNCED),
    (553, "Sorry, that address does not exist", "rcpt", BOUNCED),
    (550, "Recipient rejected", "data", BOUNCED),
    (550, "Rejected: IP listed on a blocklist", "rcpt", FAILED),
    (550, "Recipient address rejected: Access denied", "rcpt", FAILED),
    (554, "delivery error: This user doesn't have an account", "data", FAILED),
    (554, "Transaction failed", "data", FAILED),
    (552, "Requested mail action aborted: mailbox full (quota exceeded)", "rcpt", DEFERRED),
    (552, "Requested mail action aborted: exceeded storage allocation", "data", FAILED),
    (500, "Syntax error, command unrecognised", "data", FAILED),
    # the relay itself
    (421, "4.3.2 Service not available, closing transmission channel", "rcpt", RELAY),
    (421, "Too many connections", "data", RELAY),
    (535, "5.7.8 Authentication credentials invalid", "auth", RELAY),
    (534, "5.7.9 Authentication mechanism is too weak", "auth", RELAY),
    (530, "5.7.0 Authentication required", "mail", RELAY),
    (530, "5.7.0 Authentication required", "rcpt", RELAY),
    (535, "Authentication failed", "data", RELAY),
    (504, "5.7.0 Unrecognized authentication type", "auth", RELAY),
    (454, "4.7.0 Temporary authentication failure", "auth", RELAY),
    (550, "5.7.8 credentials invalid", "rcpt", RELAY),
    (553, "5.7.1 Sender address rejected: not owned by user", "mail", RELAY),
    (550, "5.1.1 sender unknown", "mail", RELAY),
    (451, "4.3.0 try again", "mail", RELAY),
    (554, "5.7.1 Client host rejected", "connect", RELAY),
    (501, "5.5.4 Invalid EHLO argument", "ehlo", RELAY),
]


@pytest.mark.parametrize(("code", "message", "stage", "expected"), REPLIES)
def test_classify_reply(code: int, message: str, stage: Stage, expected: OutcomeKind) -> None:
    outcome = classify_reply(code, message, stage=stage)
    assert outcome.kind is expected
    assert outcome.code == code
    assert outcome.suppress is (expected is BOUNCED)


def test_the_outcome_keeps_the_code_and_the_reply_text() -> None:
    outcome = classify_reply(550, "5.1.1 <x@example.com>: user unknown", stage="rcpt")
    assert outcome.enhanced == "5.1.1"
    assert outcome.detail == "550 5.1.1 <x@example.com>: user unknown"


def test_multi_line_replies_are_flattened_and_long_ones_trimmed() -> None:
    multi = classify_reply(550, "5.1.1 The account does not exist.\n5.1.1 Try again", stage="rcpt")
    assert multi.detail == "550 5.1.1 The account does not exist. 5.1.1 Try again"
    long = classify_reply(554, "5.7.1 " + "x" * 5000, stage="data")
    assert len(long.detail) == 1000
    assert long.detail.startswith("554 5.7.1 xxx")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("5.1.1 user unknown", "5.1.1"),
        ("  4.7.0 try later", "4.7.0"),
        ("5.1.10 null MX", "5.1.10"),
        ("2.0.0 Ok", "2.0.0"),
        ("user unknown 5.1.1", None),  # only at the start of the text
        ("1.2.3.4 is blocked", None),  # an IP address, not a status code
        ("5.1.1.1 nonsense", None),
        ("3.1.1 not a class", None),
        ("", None),
    ],
)
def test_parse_enhanced(message: str, expected: str | None) -> None:
    assert parse_enhanced(message) == expected


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


EXCEPTIONS: list[tuple[BaseException, Stage, bool, OutcomeKind]] = [
    (
        aiosmtplib.SMTPConnectError("Error connecting: [Errno 111] Connection refused"),
        "connect",
        False,
        RELAY,
    ),
    (ConnectionRefusedError(111, "Connection refused"), "connect", False, RELAY),
    (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), "connect", False, RELAY),
    (aiosmtplib.SMTPConnectResponseError(554, "5.7.1 go away"), "connect", False, RELAY),
    (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"), "auth", False, RELAY),
    (aiosmtplib.SMTPException("STARTTLS extension not supported by server"), "ehlo", False, RELAY),
    (
        _caused(
            aiosmtplib.SMTPConnectError("TLS handshake"), ssl.SSLCertVerificationError("bad cert")
        ),
        "connect",
        False,
        RELAY,
    ),
    (ssl.SSLError("wrong version number"), "ehlo", False, RELAY),
    (aiosmtplib.SMTPSenderRefused(553, "5.7.1 sender rejected", "a@x"), "mail", False, RELAY),
    (aiosmtplib.SMTPRecipientRefused(550, "5.1.1 no such user", "b@x"), "rcpt", False, BOUNCED),
    (aiosmtplib.SMTPRecipientRefused(451, "4.3.0 later", "b@x"), "rcpt", False, DEFERRED),
    (aiosmtplib.SMTPDataError(554, "5.7.1 spam"), "data", True, FAILED),
    (aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"), "mail", False, DEFERRED),
    (aiosmtplib.SMTPServerDisconnected("Connection lost"), "rcpt", False, DEFERRED),
    (
        aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"),
        "rcpt",
        False,
        DEFERRED,
    ),
    (aiosmtplib.SMTPServerDisconnected("Connection lost"), "data", False, DEFERRED),
    (aiosmtplib.SMTPServerDisconnected("Connection lost"), "data", True, OutcomeKind.UNCERTAIN),
    (aiosmtplib.SMTPReadTimeoutError("Timed out"), "data", True, OutcomeKind.UNCERTAIN),
    (ConnectionResetError(104, "reset by peer"), "data", True, OutcomeKind.UNCERTAIN),
    (ssl.SSLError("bad record mac"), "data", True, OutcomeKind.UNCERTAIN),
    (UnicodeEncodeError("ascii", "ü", 0, 1, "ordinal not in range"), "rcpt", False, FAILED),
    (RuntimeError("something odd"), "rcpt", False, DEFERRED),
]


@pytest.mark.parametrize(("exc", "stage", "data_sent", "expected"), EXCEPTIONS)
def test_classify_exception(
    exc: BaseException, stage: Stage, data_sent: bool, expected: OutcomeKind
) -> None:
    outcome = classify_exception(exc, stage=stage, data_sent=data_sent)
    assert outcome.kind is expected
    assert outcome.suppress is (expected is BOUNCED)
    assert outcome.detail


def test_transport_errors_name_what_broke() -> None:
    refused = classify_exception(
        _caused(aiosmtplib.SMTPConnectError("Error connecting"), ConnectionRefusedError("refused")),
        stage="connect",
        data_sent=False,
    )
    assert refused.code is None
    assert refused.enhanced is None
    assert refused.detail == "connect: Error connecting (refused)"
    tls = classify_exception(ssl.SSLError("handshake failure"), stage="connect", data_sent=False)
    assert tls.detail.startswith("TLS failure:")
    auth = classify_exception(
        aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Authentication credentials invalid"),
        stage="auth",
        data_sent=False,
    )
    assert (auth.code, auth.enhanced) == (535, "5.7.8")
