"""What an inbound message is: a bounce, a complaint, an unsubscribe, a reply, an
auto-reply, or none of these. Pure functions over bytes; no database.

Recognised shapes, in order:

1. **ARF** (RFC 5965): ``multipart/report; report-type=feedback-report`` with a
   ``message/feedback-report`` part (``Feedback-Type``, ``Original-Mail-From``…) and the
   original message or its headers. ``not-spam`` is not a complaint; ``opt-out`` (some
   feedback loops) is an unsubscribe; every other type is a complaint.
2. **DSN** (RFC 3464): ``multipart/report; report-type=delivery-status`` with a
   ``message/delivery-status`` part: per recipient ``Final-Recipient``, ``Action``,
   ``Status``, ``Diagnostic-Code``. ``failed`` is a bounce, ``delayed`` only a warning,
   ``delivered``/``relayed``/``expanded`` a positive notice.
3. **Non-standard bounces** (a null sender, a mailer-daemon From or a bounce-like subject):
   qmail/Yahoo "failure notice", Exchange/Outlook NDR text ("Remote Server returned '550
   5.1.1 …'"), Postfix/Exim text: the status code is read from the text. ``flufl.bounce``
   is the last resort: it names failed addresses, permanent or temporary, without codes.
4. **Auto-replies** (RFC 3834 ``Auto-Submitted`` other than ``no``, ``X-Autoreply``,
   ``X-Autorespond``, ``Precedence: auto_reply``, Exchange's OOF markers, vacation
   subjects): recorded as such, never as replies and never forwarded.
5. **mailto unsubscribes**: mail to a VERP address (the ``List-Unsubscribe`` mailto is
   ``mailto:<VERP>?subject=unsubscribe``) whose subject or first body line says so.
6. **Replies**: mail to a tokenized Reply-To address.

Parsing uses the lenient ``compat32`` policy and walks MIME parts with a depth and count
limit, so hostile nesting cannot exhaust the stack.
"""

from __future__ import annotations

import contextlib
import email
import email.header
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Literal

Kind = Literal[
    "bounce", "delayed", "delivered", "complaint", "unsubscribe", "reply", "auto_reply", "unknown"
]

MAX_DEPTH = 12
MAX_PARTS = 200
_TEXT_SCAN_LIMIT = 64 * 1024
_HEADER_LIMIT = 2000

_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status notification|failure|failed|has failed)"
    r"|failure notice|mail delivery (?:failed|subsystem|system)|returned mail"
    r"|returned to sender|non-?delivery|could not be delivered|delivery problem"
    r"|mail system error|nondeliverable",
    re.IGNORECASE,
)
_DAEMON_FROM = re.compile(r"mailer-daemon|postmaster|mail delivery (?:sub)?system", re.I)
_VACATION_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[\s_-]*(?:reply|response|antwort)|autoreply|auto:|out of (?:the )?office"
    r"|vacation|away from (?:my|the) (?:office|desk)|abwesenheit|absence|r[ée]ponse automatique"
    r"|respuesta autom[áa]tica|risposta automatica|fuera de la oficina)",
    re.IGNORECASE,
)
_UNSUBSCRIBE_WORD = re.compile(r"^\s*(?:re:\s*)?unsubscribe\b", re.IGNORECASE)
# "550 5.1.1 <a@b>: Recipient address rejected" / "Remote Server returned '550 5.1.1 …'"
_TEXT_CODE = re.compile(
    r"(?<![\d.])([245]\d\d)[\s-]+(?:#?([245]\.\d{1,3}\.\d{1,3})\b)?[^\r\n]{0,300}", re.IGNORECASE
)
_TEXT_ENHANCED = re.compile(r"#?(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])[^\r\n]{0,300}")
# Yahoo's own wording for a mailbox that does not exist ("554 delivery error: dd This user
# doesn't have a yahoo.com account"): a bare 554, which the ledger rules would not
# suppress, so it is recognised here.
_YAHOO_NO_USER = re.compile(r"dd (?:This user doesn't have|Sorry your message to)", re.I)
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One per-recipient block of a DSN (or what the text of a non-standard bounce says)."""

    final_recipient: str | None
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str | None
    diagnostic: str | None


@dataclass(slots=True)
class Classified:
    kind: Kind
    reason: str
    recipients: list[RecipientReport] = field(default_factory=list)
    feedback_type: str | None = None
    # Handles on the original message (from a DSN/ARF attachment or report fields).
    original_mail_from: str | None = None
    original_return_path: str | None = None
    original_message_id: str | None = None
    original_delivery: str | None = None
    # The inbound message itself.
    subject: str = ""
    from_address: str | None = None
    message_id: str | None = None
    forwarded_by_us: bool = False
    hops: int = 0


def parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def header(msg: Message, name: str) -> str:
    """A header as text (RFC 2047 decoded when possible), unfolded, at most 2000 chars;
    ``""`` when missing or undecodable."""
    try:
        value = msg.get(name)
        if value is None:
            return ""
        text = str(value)
        # An undecodable encoded-word keeps its raw text.
        with contextlib.suppress(Exception):
            text = str(email.header.make_header(email.header.decode_header(text)))
        return " ".join(text.split())[:_HEADER_LIMIT]
    except Exception:
        return ""


def walk(msg: Message) -> Iterator[Message]:
    """Every part, depth-first, at most ``MAX_DEPTH`` deep and ``MAX_PARTS`` in all."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        if depth >= MAX_DEPTH:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            children = [p for p in payload if isinstance(p, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except Exception:
        return ""
    if isinstance(value, tuple):
        value = email.utils.collapse_rfc2231_value(value)
    return str(value or "").strip().lower()


def text_of(part: Message, limit: int = _TEXT_SCAN_LIMIT) -> str:
    """A leaf part's text, decoded leniently; ``""`` for anything that is not text."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = "utf-8"
    with contextlib.suppress(Exception):  # a broken charset parameter means "try UTF-8"
        charset = part.get_content_charset() or "utf-8"
    try:
        return payload[:limit].decode(charset, errors="replace")
    except (LookupError, ValueError):
        return payload[:limit].decode("utf-8", errors="replace")


def _headers_of(part: Message) -> Message | None:
    """The original message's headers in a report: a message/rfc822 part's message, or a
    text/rfc822-headers part parsed as headers."""
    kind = content_type(part)
    if kind in ("message/rfc822", "message/global"):
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        return None
    if kind in ("text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers"):
        text = text_of(part)
        try:
            return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)
        except Exception:
            return None
    return None


def _report_blocks(part: Message) -> list[Message]:
    """The header blocks of a ``message/delivery-status`` (or feedback-report) part: the
    parser gives a list of messages; a part parsed as text is split on blank lines."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)][:MAX_PARTS]
    text = text_of(part)
    blocks: list[Message] = []
    for chunk in re.split(r"\r?\n\s*\r?\n", text)[:MAX_PARTS]:
        if chunk.strip():
            try:
                blocks.append(
                    email.parser.HeaderParser(policy=email.policy.compat32).parsestr(chunk)
                )
            except Exception:  # noqa: S112 - a broken block is skipped, the rest still count
                continue
    return blocks


def _typed_value(value: str) -> str:
    """``rfc822; a@b`` → ``a@b``; ``smtp; 550 …`` → ``550 …``."""
    kind, semicolon, rest = value.partition(";")
    return rest.strip() if semicolon and " " not in kind.strip() else value.strip()


def classify(
    data: bytes, *, mail_from: str, verp_recipient: bool, reply_recipient: bool
) -> Classified:
    """Classify one inbound message. ``verp_recipient``: it was sent to a VERP address;
    ``reply_recipient``: to a tokenized Reply-To address. Never raises: a message that
    cannot be parsed at all (hostile nesting deeper than the parser's recursion) is
    ``unknown``, and kept."""
    try:
        return _classify(
            data,
            mail_from=mail_from,
            verp_recipient=verp_recipient,
            reply_recipient=reply_recipient,
        )
    except Exception as exc:
        return Classified(kind="unknown", reason=f"could not be parsed: {type(exc).__name__}")


def _classify(
    data: bytes, *, mail_from: str, verp_recipient: bool, reply_recipient: bool
) -> Classified:
    msg = parse(data)
    result = Classified(kind="unknown", reason="")
    result.subject = header(msg, "Subject")[:255]
    result.message_id = header(msg, "Message-ID") or None
    from_header = header(msg, "From")
    found = _ADDRESS.search(from_header)
    result.from_address = found.group(0) if found else None
    result.forwarded_by_us = bool(header(msg, "X-Postroom-Forwarded"))
    try:
        result.hops = len(msg.get_all("Received") or [])
    except Exception:
        result.hops = 0

    main_type = content_type(msg)
    report_type = _param(msg, "report-type") if main_type == "multipart/report" else ""
    parts = list(walk(msg))

    if report_type == "feedback-report" or any(
        content_type(p) == "message/feedback-report" for p in parts
    ):
        return _arf(result, parts)
    status_parts = [
        p for p in parts if content_type(p) in ("message/delivery-status", "text/delivery-status")
    ]
    if status_parts:
        return _dsn(result, parts, status_parts)
    null_sender = mail_from.strip("<> ") == ""
    if _is_auto_reply(msg, result.subject) and not (
        null_sender and _BOUNCE_SUBJECT.search(result.subject)
    ):
        result.kind = "auto_reply"
        result.reason = "auto-reply (RFC 3834 or vacation markers)"
        return result
    if null_sender or _DAEMON_FROM.search(from_header) or _BOUNCE_SUBJECT.search(result.subject):
        bounced = _text_bounce(result, msg, parts)
        if bounced is not None:
            return bounced
    if verp_recipient and not null_sender and _asks_to_unsubscribe(result.subject, parts):
        result.kind = "unsubscribe"
        result.reason = "mailto unsubscribe"
        return result
    if reply_recipient and not null_sender:
        result.kind = "reply"
        result.reason = "reply"
        return result
    result.reason = "not a bounce, complaint, unsubscribe or reply"
    return result


def _is_auto_reply(msg: Message, subject: str) -> bool:
    auto_submitted = header(msg, "Auto-Submitted").lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return True
    if header(msg, "X-Autoreply") or header(msg, "X-Autorespond") or header(msg, "X-Autoresponse"):
        return True
    if header(msg, "Precedence").lower() in ("auto_reply", "auto-reply"):
        return True
    if header(msg, "X-Auto-Response-Suppress") and _VACATION_SUBJECT.search(subject):
        return True
    return bool(_VACATION_SUBJECT.search(subject))


def _asks_to_unsubscribe(subject: str, parts: list[Message]) -> bool:
    if _UNSUBSCRIBE_WORD.search(subject):
        return True
    for part in parts:
        if content_type(part) == "text/plain":
            first = next((line for line in text_of(part, 4096).splitlines() if line.strip()), "")
            return bool(_UNSUBSCRIBE_WORD.search(first))
    return False


def _take_original(result: Classified, parts: list[Message]) -> None:
    for part in parts:
        original = _headers_of(part)
        if original is None:
            continue
        result.original_message_id = result.original_message_id or (
            header(original, "Message-ID") or None
        )
        result.original_delivery = result.original_delivery or (
            header(original, "X-Postroom-Delivery") or None
        )
        result.original_return_path = result.original_return_path or (
            header(original, "Return-Path") or None
        )


def _arf(result: Classified, parts: list[Message]) -> Classified:
    report = next((p for p in parts if content_type(p) == "message/feedback-report"), None)
    fields: dict[str, str] = {}
    if report is not None:
        for block in _report_blocks(report):
            for name in ("Feedback-Type", "Original-Mail-From", "Original-Rcpt-To"):
                value = header(block, name)
                if value and name not in fields:
                    fields[name] = value
    _take_original(result, parts)
    feedback_type = fields.get("Feedback-Type", "").lower() or "abuse"
    result.feedback_type = feedback_type
    result.original_mail_from = fields.get("Original-Mail-From") or None
    if feedback_type == "not-spam":
        result.kind = "unknown"
        result.reason = "ARF not-spam report (not a complaint)"
    elif feedback_type == "opt-out":
        result.kind = "unsubscribe"
        result.reason = "ARF opt-out report"
    else:
        result.kind = "complaint"
        result.reason = f"ARF {feedback_type} report"
    return result


def _dsn(result: Classified, parts: list[Message], status_parts: list[Message]) -> Classified:
    _take_original(result, parts)
    reports: list[RecipientReport] = []
    for part in status_parts:
        for block in _report_blocks(part):
            action = header(block, "Action").lower().split(" ")[0]
            if not action:
                continue
            recipient = header(block, "Final-Recipient") or header(block, "Original-Recipient")
            reports.append(
                RecipientReport(
                    final_recipient=_typed_value(recipient) or None,
                    action=action,
                    status=header(block, "Status") or None,
                    diagnostic=_typed_value(header(block, "Diagnostic-Code")) or None,
                )
            )
    result.recipients = reports
    actions = {r.action for r in reports}
    if "failed" in actions:
        result.kind, result.reason = "bounce", "DSN (RFC 3464): failed"
    elif "delayed" in actions:
        result.kind, result.reason = "delayed", "DSN (RFC 3464): delayed"
    elif actions & {"delivered", "relayed", "expanded"}:
        result.kind, result.reason = "delivered", "DSN (RFC 3464): delivered"
    else:
        result.kind, result.reason = "unknown", "DSN without a per-recipient action"
    return result


def _text_bounce(result: Classified, msg: Message, parts: list[Message]) -> Classified | None:
    """A bounce without a machine-readable report: read the status from the text, else
    ask flufl.bounce which addresses failed."""
    _take_original(result, parts)
    texts = [text_of(part) for part in parts if content_type(part) in ("text/plain", "text/html")][
        :10
    ]
    body = "\n".join(texts)
    # The headers of the returned message are often pasted into the text, not attached.
    if result.original_delivery is None:
        found = re.search(r"^X-Postroom-Delivery:\s*(\S+)", body, re.M | re.I)
        result.original_delivery = found.group(1) if found else None
    if result.original_message_id is None:
        found = re.search(r"^Message-ID:\s*(<[^>\s]+>)", body, re.M | re.I)
        result.original_message_id = found.group(1) if found else None
    recipient_match = _ADDRESS.search(_quoted_recipient(body) or "")
    recipient = recipient_match.group(0) if recipient_match else None
    if _YAHOO_NO_USER.search(body):
        line = _YAHOO_NO_USER.search(body)
        assert line is not None
        diagnostic = body[max(0, line.start() - 40) : line.end() + 120].strip()
        result.recipients = [RecipientReport(recipient, "failed", "5.1.1", diagnostic)]
        result.kind, result.reason = "bounce", "non-standard bounce (Yahoo no such user)"
        return result
    code = _TEXT_CODE.search(body)
    enhanced = _TEXT_ENHANCED.search(body)
    if code is not None or enhanced is not None:
        status = code.group(2) if code is not None and code.group(2) else None
        if status is None and enhanced is not None:
            status = enhanced.group(1)
        diagnostic_source = code or enhanced
        assert diagnostic_source is not None
        diagnostic = " ".join(diagnostic_source.group(0).split())[:1000]
        action = "delayed" if _looks_delayed(body) else "failed"
        result.recipients = [RecipientReport(recipient, action, status, diagnostic)]
        result.kind = "bounce" if action == "failed" else "delayed"
        result.reason = "non-standard bounce (status read from the text)"
        return result
    return _flufl_fallback(result, msg)


def _quoted_recipient(body: str) -> str | None:
    """The failed address as qmail/Exchange/Gmail texts put it: ``<a@b>:`` on its own
    line, "to the following address(es)", "Your message to a@b couldn't be delivered"."""
    for pattern in (
        r"^<([^>\s]+@[^>\s]+)>:\s*$",
        r"following (?:address|recipient)(?:es|s)?[^\n]*\n+\s*<?([^\s<>]+@[^\s<>]+?)>?[\s:]",
        r"failed to these recipients[^\n]*\n+\s*<?([^\s<>]+@[^\s<>]+?)>?[\s:]",
        r"message (?:to|wasn't delivered to|couldn't be delivered to)\s+"
        r"<?([^\s<>]+@[^\s<>]+?)>?[\s.]",
        r"(?:Final-Recipient|Original-Recipient|Recipient):\s*(?:rfc822;\s*)?<?([^\s<>]+@[^\s<>]+)>?",
    ):
        found = re.search(pattern, body, re.M | re.I)
        if found:
            return found.group(1)
    return None


def _looks_delayed(body: str) -> bool:
    return bool(
        re.search(
            r"will (?:continue to )?(?:retry|try again)|has been delayed|delivery delayed"
            r"|not yet been delivered|still trying",
            body,
            re.I,
        )
    )


def _flufl_fallback(result: Classified, msg: Message) -> Classified | None:
    try:
        from flufl.bounce import all_failures

        temporary, permanent = all_failures(msg)
    except Exception:
        return None
    # No status code to go on: a permanent failure is counted like a soft bounce (it
    # suppresses only when it repeats), never suppressed on the parser's word alone.
    failures = [(a, "failed", None) for a in sorted(permanent)]
    failures += [(a, "delayed", None) for a in sorted(temporary)]
    if not failures:
        return None
    reports = []
    for address, action, status in failures[:20]:  # status stays None
        text = address.decode("utf-8", "replace") if isinstance(address, bytes) else str(address)
        reports.append(
            RecipientReport(text, action, status, f"flufl.bounce: {action} recipient {text}")
        )
    result.recipients = reports
    result.kind = "bounce" if permanent else "delayed"
    result.reason = "non-standard bounce (flufl.bounce)"
    return result
