"""What an SMTP reply or a transport error means for one delivery.

The ledger needs one of six answers per recipient, and the choice decides whether the
address is suppressed, retried, or whether the relay itself gets paused:

- ``sent``: the relay took responsibility for the message.
- ``deferred``: try again later (4xx, timeouts, drops before the payload went out).
- ``bounced``: the address does not exist; suppress it for everything.
- ``failed``: permanent, but not the address's fault (policy, reputation, content, size).
- ``relay_error``: the relay is broken (auth, refused connection, MAIL FROM rejected,
  421). The relay is paused and its work deferred; recipients are never failed or
  suppressed for it.
- ``uncertain``: the connection died after the payload was sent and before the final
  reply. The message may have gone out; it is retried with the same Message-ID.

Rules look at the enhanced status code (RFC 3463) before the basic code, because the
first digit alone says nothing about whose fault a 5xx is. Deliberate choices:

- 5.2.2 (mailbox full) and a bare ``552`` that talks about quota are ``deferred``: full
  mailboxes empty again. The engine turns a deferral into ``failed`` once the delivery's
  lifetime runs out, so a mailbox that stays full is never suppressed.
- A bare ``552`` with no quota wording is ``failed``: RFC 1870 also uses it for "message
  too big", and retrying an oversized message never helps.
- A bare ``554`` is ``failed`` even when it sounds like "no such user": too many relays
  use 554 for blocklisting, and a wrong suppression is worse than a wasted send.
- ``421`` at any stage is ``relay_error``: the server is closing the channel.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import aiosmtplib

Stage = Literal["connect", "ehlo", "auth", "mail", "rcpt", "data"]

_DETAIL_LIMIT = 1000
_SESSION_STAGES: frozenset[str] = frozenset({"connect", "ehlo", "auth"})


class OutcomeKind(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"
    RELAY_ERROR = "relay_error"
    UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    code: int | None  # the basic SMTP reply code; None for transport errors
    enhanced: str | None  # "5.1.1", when the reply carried one
    detail: str  # what the server said (or what broke), at most 1000 characters
    suppress: bool  # True only for hard bounces: the address must not be mailed again


# The enhanced codes (subject.detail, class ignored) that say the address itself is bad.
_ADDRESS_IS_BAD: frozenset[str] = frozenset(
    {
        "1.1",  # bad destination mailbox address
        "1.2",  # bad destination system address (the domain does not exist)
        "1.3",  # bad destination mailbox address syntax
        "1.6",  # destination mailbox has moved, no forwarding address
        "1.10",  # recipient address has a null MX (RFC 7505)
        "2.1",  # mailbox disabled, not accepting messages
        "4.4",  # unable to route: no MX, no A for the domain
    }
)
_MAILBOX_FULL = "2.2"
# Enhanced codes whose meaning is "your credentials/session are wrong", not the message.
_AUTH_ENHANCED: frozenset[str] = frozenset({"7.8", "7.9", "7.11", "7.12", "7.13", "7.14"})
# Basic codes that mean authentication is required or failed, whatever the stage.
_AUTH_CODES: frozenset[int] = frozenset({530, 534, 535, 538})
# Enhanced codes that leave the verdict to the wording (providers use them loosely).
_VAGUE_ENHANCED: frozenset[str] = frozenset({"0.0", "1.0"})

_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?![.\d])")
_UNKNOWN_USER = re.compile(
    r"user unknown|unknown user|no such user|no such (?:mailbox|recipient|address)"
    r"|mailbox (?:unavailable|not found|does not exist)|does not exist|doesn'?t exist"
    r"|recipient (?:rejected|unknown|not found)|unknown recipient|invalid recipient"
    r"|not a valid mailbox|account (?:disabled|has been disabled)",
    re.IGNORECASE,
)
_QUOTA = re.compile(r"quota|mailbox (?:is )?full|over ?quota|insufficient storage", re.I)


def parse_enhanced(message: str) -> str | None:
    """The RFC 3463 code at the start of a reply's text (``"5.1.1"``), or None."""
    match = _ENHANCED.match(message)
    if match is None:
        return None
    return ".".join(match.groups())


def _detail(code: int | None, message: str) -> str:
    text = " ".join(message.split())
    if code is not None:
        text = f"{code} {text}" if text else str(code)
    return text[:_DETAIL_LIMIT]


def _outcome(kind: OutcomeKind, code: int | None, enhanced: str | None, text: str) -> Outcome:
    return Outcome(kind, code, enhanced, _detail(code, text), kind is OutcomeKind.BOUNCED)


def classify_reply(code: int, message: str, *, stage: Stage) -> Outcome:
    """Classify one SMTP reply received at ``stage``.

    A positive reply (2xx/3xx) is ``sent``; it only means that at the final DATA reply.
    """
    enhanced = parse_enhanced(message)
    kind = _kind_for_reply(code, enhanced, message, stage)
    return _outcome(kind, code, enhanced, message)


def _kind_for_reply(code: int, enhanced: str | None, message: str, stage: Stage) -> OutcomeKind:
    if code < 400:
        return OutcomeKind.SENT
    # Anything but success while setting up the session, or for the envelope sender,
    # is about the relay or our account on it, never about a recipient.
    if stage in _SESSION_STAGES or stage == "mail":
        return OutcomeKind.RELAY_ERROR
    subject_detail = enhanced.split(".", 1)[1] if enhanced else None
    if code == 421 or code in _AUTH_CODES or subject_detail in _AUTH_ENHANCED:
        return OutcomeKind.RELAY_ERROR
    if code < 500:
        # The server promises to accept a retry; the enhanced code cannot overrule that.
        return OutcomeKind.DEFERRED
    if subject_detail is not None and subject_detail not in _VAGUE_ENHANCED:
        if subject_detail in _ADDRESS_IS_BAD:
            return OutcomeKind.BOUNCED
        if subject_detail == _MAILBOX_FULL:
            return OutcomeKind.DEFERRED
        return OutcomeKind.FAILED
    return _kind_from_wording(code, message)


def _kind_from_wording(code: int, message: str) -> OutcomeKind:
    """A 5xx without a usable enhanced code: only the wording is left to go on."""
    if code in (550, 551, 553) and _UNKNOWN_USER.search(message):
        return OutcomeKind.BOUNCED
    if code == 552 and _QUOTA.search(message):
        return OutcomeKind.DEFERRED
    return OutcomeKind.FAILED


def classify_exception(exc: BaseException, *, stage: Stage, data_sent: bool) -> Outcome:
    """Classify an error raised while talking to the relay.

    ``data_sent`` is True once the message payload has been written out in full: from
    then on a lost connection may have delivered the message, so it is ``uncertain``.
    """
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPConnectResponseError):
        # A refused login or a refusing greeting: the relay, whatever the code says.
        return _outcome(OutcomeKind.RELAY_ERROR, exc.code, parse_enhanced(exc.message), exc.message)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return classify_reply(exc.code, exc.message, stage=stage)
    text = _describe(exc)
    if data_sent:
        # Even a TLS error here: the message may be delivered, which decides the row.
        return _outcome(OutcomeKind.UNCERTAIN, None, None, f"no reply after the message: {text}")
    if _caused_by_tls(exc):
        return _outcome(OutcomeKind.RELAY_ERROR, None, None, f"TLS failure: {text}")
    if stage in _SESSION_STAGES:
        # Refused, unreachable, timing out, or unable to speak TLS/AUTH: the relay is down.
        return _outcome(OutcomeKind.RELAY_ERROR, None, None, f"{stage}: {text}")
    if isinstance(exc, UnicodeError | ValueError):
        # An address that cannot be put on the wire (non-ASCII without SMTPUTF8, control
        # characters): retrying will not change it, and it is not the mailbox's fault.
        return _outcome(OutcomeKind.FAILED, None, None, f"{stage}: {text}")
    # Timeouts, drops and anything unexpected before the payload: nothing was delivered.
    return _outcome(OutcomeKind.DEFERRED, None, None, f"{stage}: {text}")


def _caused_by_tls(exc: BaseException) -> bool:
    # aiosmtplib wraps handshake errors in SMTPConnectError; the SSLError is the cause.
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in message:
        message = f"{message} ({cause})"
    return message
