"""Classification of inbound mail (``postroom.feedback.classify``), without a database:
every sample of tests/feedback_samples is recognised as what it is, with the handles
(original Message-ID, X-Postroom-Delivery, VERP) that match it to its delivery."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.feedback.classify import classify
from postroom.feedback.effects import bounce_kind

SAMPLES = Path(__file__).parent / "feedback_samples"
VALUES = {
    "verp": "b-aaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbb@bounces.postroom.test",
    "rcpt": "reader@example.net",
    "message_id": "<0190-original@brand.example>",
    "delivery": "01900000-0000-7000-8000-000000000001",
    "reply": "r-aaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbb@replies.postroom.test",
}


def _sample(name: str) -> bytes:
    text = (SAMPLES / name).read_text()
    for key, value in VALUES.items():
        text = text.replace("{" + key + "}", value)
    return text.replace("\n", "\r\n").encode()


@pytest.mark.parametrize(
    ("name", "kind", "effect"),
    [
        ("rfc3464_hard.eml", "bounce", "hard"),
        ("rfc3464_soft.eml", "bounce", "soft"),
        ("rfc3464_policy.eml", "bounce", "policy"),
        ("rfc3464_delayed.eml", "delayed", "soft"),
        ("gmail_dsn.eml", "bounce", "hard"),
        ("outlook_ndr.eml", "bounce", "hard"),
        ("outlook_text_ndr.eml", "bounce", "hard"),
        ("yahoo_failure_notice.eml", "bounce", "hard"),
        ("exim_no_code.eml", "bounce", "soft"),
    ],
)
def test_bounces(name: str, kind: str, effect: str) -> None:
    result = classify(_sample(name), mail_from="", verp_recipient=True, reply_recipient=False)
    assert result.kind == kind, result.reason
    report = next(r for r in result.recipients if r.action in ("failed", "delayed"))
    assert report.final_recipient == VALUES["rcpt"]
    assert bounce_kind(report.status, report.diagnostic) == effect
    if name != "exim_no_code.eml":
        assert result.original_message_id == VALUES["message_id"]
        assert result.original_delivery == VALUES["delivery"]


def test_rfc3464_fields_are_read() -> None:
    result = classify(
        _sample("rfc3464_hard.eml"), mail_from="", verp_recipient=True, reply_recipient=False
    )
    [report] = result.recipients
    assert report.action == "failed"
    assert report.status == "5.1.1"
    assert report.diagnostic is not None
    assert report.diagnostic.startswith("550 5.1.1 <reader@example.net>: Recipient address")
    assert "unknown in virtual mailbox table" in report.diagnostic  # the folded line
    assert result.original_return_path == f"<{VALUES['verp']}>"


@pytest.mark.parametrize(
    ("name", "mail_from", "delivery", "message_id"),
    [
        ("arf_rfc5965.eml", f"<{VALUES['verp']}>", VALUES["delivery"], VALUES["message_id"]),
        ("arf_yahoo_headers_only.eml", None, VALUES["delivery"], None),
        ("arf_message_id_only.eml", None, None, VALUES["message_id"]),
    ],
)
def test_arf_complaints(
    name: str, mail_from: str | None, delivery: str | None, message_id: str | None
) -> None:
    result = classify(
        _sample(name), mail_from="fbl@example.com", verp_recipient=False, reply_recipient=False
    )
    assert result.kind == "complaint"
    assert result.feedback_type == "abuse"
    assert result.original_mail_from == mail_from
    assert result.original_delivery == delivery
    assert result.original_message_id == message_id


def test_arf_not_spam_and_opt_out() -> None:
    data = _sample("arf_rfc5965.eml")
    not_spam = data.replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    opt_out = data.replace(b"Feedback-Type: abuse", b"Feedback-Type: opt-out")
    common = {"mail_from": "x@example.com", "verp_recipient": False, "reply_recipient": False}
    assert classify(not_spam, **common).kind == "unknown"  # type: ignore[arg-type]
    assert classify(opt_out, **common).kind == "unsubscribe"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    ["auto_reply_rfc3834.eml", "auto_reply_outlook_oof.eml", "auto_reply_vacation_precedence.eml"],
)
def test_auto_replies_are_not_replies(name: str) -> None:
    result = classify(
        _sample(name), mail_from=VALUES["rcpt"], verp_recipient=False, reply_recipient=True
    )
    assert result.kind == "auto_reply"


def test_replies_unsubscribes_and_the_rest() -> None:
    reply = classify(
        _sample("reply.eml"), mail_from=VALUES["rcpt"], verp_recipient=False, reply_recipient=True
    )
    assert reply.kind == "reply"
    assert reply.message_id == "<reply-1@example.com>"
    assert reply.from_address == VALUES["rcpt"]
    unsubscribe = classify(
        _sample("mailto_unsubscribe.eml"),
        mail_from=VALUES["rcpt"],
        verp_recipient=True,
        reply_recipient=False,
    )
    assert unsubscribe.kind == "unsubscribe"
    # "unsubscribe" only counts at the VERP address the List-Unsubscribe mailto names.
    elsewhere = classify(
        _sample("mailto_unsubscribe.eml"),
        mail_from=VALUES["rcpt"],
        verp_recipient=False,
        reply_recipient=False,
    )
    assert elsewhere.kind == "unknown"
    question = classify(
        _sample("unclassifiable.eml"),
        mail_from="someone@example.org",
        verp_recipient=False,
        reply_recipient=False,
    )
    assert question.kind == "unknown"
    assert question.subject == "Question about your newsletter"


def test_a_bounce_is_not_mistaken_for_an_auto_reply() -> None:
    """DSNs carry ``Auto-Submitted: auto-replied`` too (RFC 3464 recommends it)."""
    for name in ("rfc3464_hard.eml", "yahoo_failure_notice.eml", "exim_no_code.eml"):
        data = _sample(name)
        if b"Auto-Submitted" not in data:
            data = b"Auto-Submitted: auto-replied\r\n" + data
        result = classify(data, mail_from="", verp_recipient=True, reply_recipient=False)
        assert result.kind == "bounce", (name, result.reason)
