"""The hand-written message builder, checked by parsing its output with the stdlib parser."""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
import re
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.delivery import mime
from postroom.delivery.message import (
    HeaderInjectionError,
    MessageBuildError,
    OutgoingMessage,
    build_message,
)
from postroom.delivery.mime import WireReady
from postroom.delivery.smtp_pool import wire_payload

DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
DELIVERY_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def outgoing(**overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "from_email": "news@example.com",
        "from_name": "Example News",
        "to_email": "bob@example.org",
        "to_name": "Bob Smith",
        "subject": "Hello Bob",
        "delivery_id": DELIVERY_ID,
        "date": DATE,
        "text": "Hello Bob\n",
        "html": "<p>Hello Bob</p>\n",
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def mailbox(raw: bytes, header: str) -> tuple[str, str]:
    """(display name, address) of a From/To header, decoded per RFC 2047.

    CPython's address parser keeps the whitespace between adjacent encoded words of a
    display name, against RFC 2047 6.2 (names its own generator splits across encoded
    words do not round-trip either), so an encoded name is decoded with the stdlib's
    ``email.header.decode_header``, which follows 6.2 like mail clients do.
    """
    message = parse(raw)
    address = message[header].addresses[0]
    phrase = dict(message.raw_items())[header].rpartition("<")[0].strip()
    if phrase.startswith("=?"):
        return str(make_header(decode_header(phrase))), address.addr_spec
    return address.display_name, address.addr_spec


def header_block(raw: bytes) -> bytes:
    return raw.partition(b"\r\n\r\n")[0]


def assert_wire_format(raw: bytes) -> None:
    """CRLF only, nothing over 998 columns, 7-bit clean (RFC 5322 2.1.1, 2.3), and no
    whitespace at the end of a body line, which transports may strip."""
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None, "bare CR or LF"
    assert raw.endswith(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert raw.isascii()
    assert re.search(rb"[ \t]\r\n", raw.partition(b"\r\n\r\n")[2]) is None
    # No line starts with a dot, so SMTP sends the bytes as they are (no dot-stuffing).
    assert isinstance(raw, WireReady)
    assert not raw.startswith(b".") and b"\n." not in raw
    assert wire_payload(raw) == wire_payload(bytes(raw))
    # RFC 2047 5: each encoded word holds whole characters and is at most 75 long.
    for word in re.finditer(rb"=\?UTF-8\?B\?([A-Za-z0-9+/=]*)\?=", header_block(raw)):
        assert len(word.group()) <= 75
        base64.b64decode(word.group(1)).decode("utf-8")


def body_text(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def transfer_encoding(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    return str(part["Content-Transfer-Encoding"])


def test_both_parts_make_multipart_alternative_with_text_first() -> None:
    raw = build_message(outgoing())
    assert_wire_format(raw)
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert body_text(message, "plain") == "Hello Bob\n"
    assert body_text(message, "html") == "<p>Hello Bob</p>\n"
    assert message.defects == []
    assert all(part.defects == [] for part in parts)


@pytest.mark.parametrize(
    ("text", "html", "content_type"),
    [
        ("Just text, no newline at the end", None, "text/plain"),
        (None, "<p>Only HTML</p>", "text/html"),
        ("", "<p>Empty text counts as none</p>", "text/html"),
    ],
)
def test_single_part_messages(text: str | None, html: str | None, content_type: str) -> None:
    raw = build_message(outgoing(text=text, html=html))
    assert_wire_format(raw)
    message = parse(raw)
    assert message.get_content_type() == content_type
    assert not message.is_multipart()
    content = message.get_content().replace("\r\n", "\n")
    assert content == (html if content_type == "text/html" else text)


def test_a_message_needs_a_body() -> None:
    with pytest.raises(MessageBuildError):
        build_message(outgoing(text=None, html=""))


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Plain ASCII with short lines.\n", "7bit"),
        ("Café au lait, crème brûlée, naïve façade; mostly ASCII otherwise.\n", "quoted-printable"),
        ("Здравствуйте! Это письмо почти целиком на русском языке.\n", "base64"),
        ("ASCII but one line is far too long: " + "word " * 300 + "\n", "quoted-printable"),
        (
            "Trailing spaces at a line end would be stripped in transit   \nnext\n",
            "quoted-printable",
        ),
        ("Control characters \x0b\x0c are not 7bit-safe\n", "quoted-printable"),
    ],
)
def test_transfer_encoding_fits_the_content(text: str, encoding: str) -> None:
    for html in (None, "<p>x</p>"):
        message = parse(build_message(outgoing(text=text, html=html)))
        assert transfer_encoding(message, "plain") == encoding
        assert body_text(message, "plain") == text


def test_quoted_printable_keeps_lines_short_and_never_splits_an_escape() -> None:
    # Escapes at every offset relative to the 76-column limit, on one very long line.
    html = "".join("é=" + "x" * (i % 23 + 10) for i in range(300)) + " \n" + "y" * 500
    raw = build_message(outgoing(html=html, text=None))
    assert_wire_format(raw)
    assert transfer_encoding(parse(raw), "html") == "quoted-printable"
    body = raw.partition(b"\r\n\r\n")[2]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert re.search(rb"=[0-9A-F]?=\r\n", body) is None
    assert parse(raw).get_content() == html.replace("\n", "\r\n")


def test_quoted_printable_is_strict_about_equals_signs() -> None:
    # Literal "=" must be escaped even where a lenient decoder would guess right.
    text = "x=41 y=3D z=\nq= é end=\n=="
    raw = build_message(outgoing(text=text, html=None))
    message = parse(raw)
    assert transfer_encoding(message, "plain") == "quoted-printable"
    body = raw.partition(b"\r\n\r\n")[2]
    assert re.search(rb"=(?![0-9A-F]{2}|\r\n)", body) is None
    assert body_text(message, "plain") == text


def test_line_endings_in_bodies_are_normalised_to_crlf() -> None:
    text = "one\r\ntwo\rthree\nfour"
    raw = build_message(outgoing(text=text, html=None))
    assert_wire_format(raw)
    assert parse(raw).get_content().replace("\r\n", "\n") == "one\ntwo\nthree\nfour"


def test_headers_carry_every_field() -> None:
    raw = build_message(
        outgoing(
            reply_to="replies@example.com",
            list_unsubscribe_url="https://t.example.com/u/TOKEN",
            list_unsubscribe_mailto="unsubscribe@example.com?subject=unsubscribe",
            list_id="Weekly News <weekly.example.com>",
            feedback_id="camp1:ws1:marketing:postroom",
            headers={"X-Campaign": "spring-sale"},
        )
    )
    message = parse(raw)
    assert message["From"].addresses[0].display_name == "Example News"
    assert message["From"].addresses[0].addr_spec == "news@example.com"
    assert message["To"].addresses[0].addr_spec == "bob@example.org"
    assert message["Reply-To"].addresses[0].addr_spec == "replies@example.com"
    assert message["Date"].datetime == DATE
    assert message["Message-ID"] == f"<{DELIVERY_ID}@example.com>"
    assert message["X-Postroom-Delivery"] == DELIVERY_ID
    assert message["List-Unsubscribe"] == (
        "<https://t.example.com/u/TOKEN>, <mailto:unsubscribe@example.com?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Weekly News <weekly.example.com>"
    assert message["Feedback-ID"] == "camp1:ws1:marketing:postroom"
    assert message["X-Campaign"] == "spring-sale"
    assert message["MIME-Version"] == "1.0"
    # Every header occurs once.
    names = [name.lower() for name in message]
    assert len(names) == len(set(names))


def test_one_click_needs_an_https_unsubscribe_url() -> None:
    plain_http = parse(build_message(outgoing(list_unsubscribe_url="http://t.example.com/u/T")))
    assert plain_http["List-Unsubscribe"] == "<http://t.example.com/u/T>"
    assert plain_http["List-Unsubscribe-Post"] is None
    mail_only = parse(build_message(outgoing(list_unsubscribe_mailto="mailto:u@example.com")))
    assert mail_only["List-Unsubscribe"] == "<mailto:u@example.com>"
    assert mail_only["List-Unsubscribe-Post"] is None


def test_date_keeps_the_given_offset_and_naive_means_utc() -> None:
    plus_two = DATE.astimezone(timezone(timedelta(hours=2)))
    header = header_block(build_message(outgoing(date=plus_two)))
    assert b"\r\nDate: Mon, 06 May 2024 09:08:09 +0200\r\n" in header
    minus = datetime(2023, 12, 31, 23, 59, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    assert b"Date: Sun, 31 Dec 2023 23:59:01 -0530\r\n" in header_block(
        build_message(outgoing(date=minus))
    )
    naive = build_message(outgoing(date=DATE.replace(tzinfo=None)))
    assert parse(naive)["Date"].datetime == DATE


def test_message_id_given_or_derived() -> None:
    given = parse(build_message(outgoing(message_id="abc.123@mail.example.com")))
    assert given["Message-ID"] == "<abc.123@mail.example.com>"
    with pytest.raises(MessageBuildError):
        build_message(outgoing(message_id="no at sign"))
    odd_id = parse(build_message(outgoing(delivery_id="weird/id+1")))
    generated = str(odd_id["Message-ID"])
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.com>", generated)


def test_same_input_gives_the_same_bytes() -> None:
    assert build_message(outgoing()) == build_message(outgoing())


def test_non_ascii_names_and_subject_use_folded_encoded_words() -> None:
    subject = "Ünïcödé — " + "long subject with emoji 🎉 and more words " * 4
    raw = build_message(outgoing(subject=subject, from_name="Zoë, Ltd.", to_name="Пётр Ильич"))
    assert_wire_format(raw)
    head = header_block(raw).decode("ascii")
    assert "=?UTF-8?B?" in head
    assert max(len(line) for line in head.split("\r\n")) <= 78
    encoded_words = re.findall(r"=\?[^?]+\?[BbQq]\?[^?]*\?=", head)
    assert encoded_words
    assert max(len(word) for word in encoded_words) <= 75
    assert parse(raw)["Subject"] == subject
    assert mailbox(raw, "From") == ("Zoë, Ltd.", "news@example.com")
    assert mailbox(raw, "To") == ("Пётр Ильич", "bob@example.org")


def test_long_ascii_subject_folds_at_spaces() -> None:
    subject = " ".join(f"word{i}" for i in range(60))
    head = header_block(build_message(outgoing(subject=subject))).decode("ascii")
    assert "=?" not in head
    assert max(len(line) for line in head.split("\r\n")) <= 78
    assert parse(build_message(outgoing(subject=subject)))["Subject"] == subject


def test_subject_that_could_be_misread_is_encoded() -> None:
    for subject in (
        "=?utf-8?q?not_an_encoded_word?=",
        "  leading",
        "trailing  ",
        "a\tb",
        "x" * 1200,
    ):
        raw = build_message(outgoing(subject=subject))
        assert_wire_format(raw)
        assert parse(raw)["Subject"] == subject


@pytest.mark.parametrize(
    "name",
    ["Smith, Bob", 'Bob "The Builder" Smith', "Back\\slash", "O'Brien", "two  spaces", "x" * 120],
)
def test_ascii_display_names_round_trip(name: str) -> None:
    raw = build_message(outgoing(to_name=name))
    head = header_block(raw).decode("ascii")
    assert max(len(line) for line in head.split("\r\n")) <= 78
    assert mailbox(raw, "To") == (name, "bob@example.org")


def test_idn_domains_are_idna_encoded() -> None:
    raw = build_message(outgoing(to_email="juergen@bücher.example"))
    assert b"<juergen@xn--bcher-kva.example>" in header_block(raw)
    assert parse(raw)["To"].addresses[0].addr_spec == "juergen@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "address",
    ["no-at-sign", "two@@example.com", "spaces in@example.com", "a@-bad-.com", "ü@example.com"],
)
def test_unusable_addresses_are_rejected(address: str) -> None:
    with pytest.raises(MessageBuildError):
        build_message(outgoing(to_email=address))


INJECTABLE_FIELDS = [
    "from_email",
    "from_name",
    "to_email",
    "to_name",
    "subject",
    "delivery_id",
    "reply_to",
    "message_id",
    "list_unsubscribe_url",
    "list_unsubscribe_mailto",
    "list_id",
    "feedback_id",
]


@pytest.mark.parametrize("field", INJECTABLE_FIELDS)
@pytest.mark.parametrize("line_break", ["\r\n", "\n", "\r"])
def test_line_breaks_in_any_header_field_are_rejected(field: str, line_break: str) -> None:
    value = f"x@example.com{line_break}Bcc: victim@example.net"
    with pytest.raises(HeaderInjectionError) as caught:
        build_message(outgoing(**{field: value}))
    assert isinstance(caught.value, ValueError)
    assert field in str(caught.value)


def test_line_breaks_in_extra_headers_are_rejected() -> None:
    with pytest.raises(HeaderInjectionError):
        build_message(outgoing(headers={"X-Note": "fine\r\nBcc: victim@example.net"}))
    with pytest.raises(HeaderInjectionError):
        build_message(outgoing(headers={"X-Note\r\nBcc": "victim@example.net"}))


@pytest.mark.parametrize("name", ["Subject", "bcc", "DKIM-Signature", "X Spaced", "Colon:Name", ""])
def test_extra_headers_cannot_replace_ours_or_be_malformed(name: str) -> None:
    with pytest.raises(MessageBuildError):
        build_message(outgoing(headers={name: "value"}))


def test_non_ascii_extra_header_values_are_encoded() -> None:
    message = parse(build_message(outgoing(headers={"X-Tag": "Frühling 🌷"})))
    assert message["X-Tag"] == "Frühling 🌷"


any_character = st.characters(codec="utf-8")  # any code point but surrogates
header_text = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00")),
    # Mostly the characters that are special in headers, to hit quoting and folding.
    st.text(alphabet=st.sampled_from(' "\\()<>@,;:.[]=?_\tabcXYZ0é€𐀀'), max_size=150),
)
body_strategy = st.one_of(
    st.text(alphabet=any_character, max_size=600),
    # Long lines, "=", spaces at line ends, bare CR: the quoted-printable edge cases.
    st.text(alphabet=st.sampled_from("ab =\n\r\t.é€3DF"), max_size=2500),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=header_text,
    from_name=header_text,
    to_name=header_text,
    text=body_strategy,
    html=body_strategy,
)
def test_any_unicode_round_trips(
    subject: str, from_name: str, to_name: str, text: str, html: str
) -> None:
    message_input = outgoing(
        subject=subject, from_name=from_name, to_name=to_name, text=text, html=html
    )
    if not text and not html:
        with pytest.raises(MessageBuildError):
            build_message(message_input)
        return
    raw = build_message(message_input)
    assert_wire_format(raw)
    message = parse(raw)
    assert message["Subject"] == subject
    assert mailbox(raw, "From") == (from_name, "news@example.com")
    assert mailbox(raw, "To") == (to_name, "bob@example.org")

    def normalised(value: str) -> str:
        return value.replace("\r\n", "\n").replace("\r", "\n")

    if text:
        assert body_text(message, "plain") == normalised(text)
    if html:
        assert body_text(message, "html") == normalised(html)


# --- the quoted-printable line table (mime._QP_LINES) ---------------------------------

QP_LINE_POOL = [
    "",
    " ",
    "plain words",
    "trailing space ",
    "trailing tab\t",
    "=",
    "a=b",
    "é",
    "Grüße aus Zürich — “quoted” €5",
    "x" * 75,
    "x" * 76,
    "x" * 77,
    "y" * 73 + "é",
    "z" * 74 + "=" + "z" * 80,
    ".leading dot",
    "é=" * 60,
    '<a href="https://example.com/?a=1&amp;b=2">link</a> ' * 4,
]


def _qp_cold(data: bytes) -> bytes:
    """The encoding with an empty line table (everything computed afresh)."""
    saved = dict(mime._QP_LINES)
    mime._QP_LINES.clear()
    try:
        return mime.quoted_printable(data)
    finally:
        mime._QP_LINES.clear()
        mime._QP_LINES.update(saved)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(QP_LINE_POOL), max_size=12), min_size=1, max_size=6))
def test_quoted_printable_from_the_line_table_equals_a_fresh_encoding(
    bodies: list[list[str]],
) -> None:
    # Many messages sharing lines in different neighbourhoods (and at the end, where
    # trailing whitespace matters too): cached lines must give the same bytes.
    for lines in bodies:
        text = "\n".join(lines)
        data = text.encode()
        warm = mime.quoted_printable(data)
        assert warm == _qp_cold(data)
        assert quopri.decodestring(warm.replace(b"\r\n", b"\n")) == data
        assert all(len(line) <= 76 for line in warm.split(b"\r\n"))
        assert re.search(rb"[ \t]\r\n|[ \t]\Z", warm) is None


def test_same_html_for_many_recipients_round_trips_through_the_parser() -> None:
    template = "<p>Hello {name} — “welcome”</p>\n" + "<p>" + "shared é line " * 20 + "</p>\n"
    for name in ("Zoë", "Bob", "Zoë", "José  ", "Bob"):
        html = template.format(name=name)
        raw = build_message(outgoing(html=html, text=None))
        assert_wire_format(raw)
        assert parse(raw).get_content() == html.replace("\n", "\r\n")


def test_the_line_table_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mime, "_QP_LINES_MAX", 10)
    mime._QP_LINES.clear()
    for index in range(50):
        data = f"é line {index}\nanother é {index}\nthird é {index}".encode()
        assert quopri.decodestring(mime.quoted_printable(data).replace(b"\r\n", b"\n")) == data
        assert len(mime._QP_LINES) <= 10
    mime._QP_LINES.clear()


@pytest.mark.parametrize("width", [70, 72, 73, 74, 75, 76, 77, 150])
def test_no_body_line_starts_with_a_dot(width: int) -> None:
    # Dots at the start of lines and right where soft line breaks fall.
    line = ".".join("y" * (width - 1) for _ in range(4)) + "é"
    text = ".starts with a dot\n..two\n.\n" + line + "\nend."
    for html in (None, line + "\n.x"):
        raw = build_message(outgoing(text=text, html=html))
        assert_wire_format(raw)
        message = parse(raw)
        assert body_text(message, "plain") == text
        if html:
            assert body_text(message, "html") == html


def test_ascii_text_with_a_leading_dot_goes_quoted_printable() -> None:
    raw = build_message(outgoing(text="a\n.b\n", html=None))
    assert_wire_format(raw)
    assert transfer_encoding(parse(raw), "plain") == "quoted-printable"
    assert b"\r\n=2Eb\r\n" in raw


def test_an_extra_header_name_with_a_leading_dot_is_not_marked_wire_ready() -> None:
    raw = build_message(outgoing(headers={".X-Odd": "1"}))
    assert not isinstance(raw, WireReady)
    assert wire_payload(raw).startswith(b"From:") and b"\r\n..X-Odd: 1\r\n" in wire_payload(raw)


def test_the_7bit_line_table_never_lets_a_bad_line_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mime, "_7BIT_LINES_MAX", 6)
    mime._7BIT_LINES.clear()
    good = "<p>plain ascii</p>\n<p>more</p>\n"
    for index in range(30):
        assert mime.encode_text_body(good + f"<p>{index}</p>\n", "=_b")[0] == "7bit"
        assert len(mime._7BIT_LINES) <= 6
    for bad in ("trailing space \n", ".dot\n", "x" * 999 + "\n", "tab\t\n", "bell\x07\n"):
        # Known-good lines around one bad line: the bad one still decides.
        assert mime.encode_text_body(good + bad + good, "=_b")[0] == "quoted-printable"
    mime._7BIT_LINES.clear()
