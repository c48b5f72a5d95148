"""DKIM signing, verified independently with dkimpy against the published key."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postroom.delivery.dkim import (
    DkimError,
    DkimSigner,
    canonical_body_relaxed,
    dkim_dns_name,
    dkim_dns_record,
    generate_dkim_keypair,
)
from postroom.delivery.message import OutgoingMessage, build_message

DOMAIN = "example.com"
SELECTOR = "pr2024"
DATE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    # 1024 bits keeps the suite fast; one test below signs with 2048.
    return generate_dkim_keypair(1024)


@pytest.fixture(scope="module")
def signer(keypair: tuple[str, str]) -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, keypair[0])


def dns_for(public_b64: str) -> Callable[..., bytes | None]:
    record = dkim_dns_record(public_b64).encode("ascii")

    def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
        wanted = f"{SELECTOR}._domainkey.{DOMAIN}."
        asked = name.decode() if isinstance(name, bytes) else name
        return record if asked.rstrip(".") + "." == wanted else None

    return lookup


def verifies(message: bytes, public_b64: str) -> bool:
    return bool(dkim.verify(message, dnsfunc=dns_for(public_b64)))


def outgoing(**overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "from_email": "news@example.com",
        "from_name": "Example News",
        "to_email": "bob@example.org",
        "to_name": "Bob",
        "subject": "Hello",
        "delivery_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "date": DATE,
        "text": "Hello Bob\n",
        "html": "<p>Hello Bob</p>",
        "list_unsubscribe_url": "https://t.example.com/u/TOKEN",
        "list_unsubscribe_mailto": "unsubscribe@example.com",
        "list_id": "News <news.example.com>",
        "feedback_id": "c1:w1:marketing:postroom",
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


SHAPES: dict[str, dict[str, Any]] = {
    "both parts": {},
    "text only": {"html": None},
    "html only": {"text": None},
    "non-ASCII headers": {
        "subject": "Grüße — ein sehr langer Betreff, der gefaltet werden muss 🎉 " * 3,
        "from_name": "Zoë, Ltd.",
        "to_name": "Пётр Ильич Чайковский",
        "reply_to": "replies@example.com",
    },
    "quoted-printable long lines": {"html": "<p>" + "Crème brûlée  with  spaces " * 80 + "</p>"},
    "base64 body": {"text": "Здравствуйте, это письмо на русском языке.\n" * 20},
    "trailing blank lines": {"text": "Hi\n\n\n\n", "html": None},
}


@pytest.mark.parametrize("shape", SHAPES)
def test_built_messages_verify_with_dkimpy(
    shape: str, signer: DkimSigner, keypair: tuple[str, str]
) -> None:
    raw = build_message(outgoing(**SHAPES[shape]), signer)
    assert raw.startswith(b"DKIM-Signature: ")
    assert verifies(raw, keypair[1])


def test_rsa_2048_keys_verify() -> None:
    private_pem, public_b64 = generate_dkim_keypair()
    raw = build_message(outgoing(), DkimSigner(DOMAIN, SELECTOR, private_pem))
    assert verifies(raw, public_b64)
    der = base64.b64decode(public_b64)
    public_key = serialization.load_der_public_key(der)
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048


def test_signature_field_is_folded_and_tagged(signer: DkimSigner) -> None:
    raw = build_message(outgoing(reply_to=None), signer)
    field = raw[: raw.index(b"\r\nFrom: ") + 2].decode("ascii")
    assert all(len(line) <= 78 for line in field.split("\r\n"))
    tags = dict(
        tag.strip().split("=", 1) for tag in re.sub(r"\r\n[ \t]", " ", field)[16:].split(";")
    )
    assert tags["v"] == "1"
    assert tags["a"] == "rsa-sha256"
    assert tags["c"] == "relaxed/relaxed"
    assert (tags["d"], tags["s"]) == (DOMAIN, SELECTOR)
    assert tags["t"] == str(int(DATE.timestamp()))
    signed = [name.strip().lower() for name in tags["h"].split(":")]
    # Only headers that are present: this message has no Reply-To.
    assert signed == [
        "from", "to", "subject", "date", "message-id", "list-unsubscribe",
        "list-unsubscribe-post", "list-id", "feedback-id", "mime-version", "content-type",
    ]  # fmt: skip


def test_tampering_breaks_the_signature(signer: DkimSigner, keypair: tuple[str, str]) -> None:
    raw = build_message(outgoing(), signer)
    assert not verifies(raw.replace(b"Subject: Hello", b"Subject: Hellp"), keypair[1])
    assert not verifies(raw.replace(b"Hello Bob\r\n", b"Hello Rob\r\n"), keypair[1])
    assert not verifies(raw.replace(b"To: Bob <bob@", b"To: Bob <eve@"), keypair[1])


def test_relaxed_canonicalization_tolerates_whitespace_changes(
    signer: DkimSigner, keypair: tuple[str, str]
) -> None:
    raw = build_message(outgoing(text="Hello  Bob \nbye\n", html=None), signer)
    assert b"Hello  Bob" in raw
    rewritten = (
        raw.replace(b"Subject: Hello", b"Subject:   Hello\t").replace(
            b"Hello  Bob", b"Hello \t Bob"
        )
        + b"\r\n\r\n"
    )
    assert verifies(rewritten, keypair[1])
    assert not verifies(rewritten.replace(b"Hello \t Bob", b"HelloBob"), keypair[1])


def test_signs_the_last_instance_of_a_repeated_header(keypair: tuple[str, str]) -> None:
    signer = DkimSigner(DOMAIN, SELECTOR, keypair[0], headers_to_sign=("From", "X-Tag"))
    message = b"From: a@example.com\r\nX-Tag: first\r\nX-Tag: second\r\n\r\nbody\r\n"
    signed = signer.sign_message(message)
    assert verifies(signed, keypair[1])
    assert verifies(signed.replace(b"X-Tag: first", b"X-Tag: forged"), keypair[1])
    assert not verifies(signed.replace(b"X-Tag: second", b"X-Tag: forged"), keypair[1])


def test_canonical_body_matches_rfc_6376_example() -> None:
    # RFC 6376 3.4.6: " C \r\nD \t E\r\n\r\n\r\n" becomes " C\r\nD E\r\n".
    assert canonical_body_relaxed(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert canonical_body_relaxed(b"") == b""
    assert canonical_body_relaxed(b"\r\n\r\n") == b""
    assert canonical_body_relaxed(b"no newline at end") == b"no newline at end\r\n"


def test_dns_record_and_name() -> None:
    assert dkim_dns_record("QUJD") == "v=DKIM1; k=rsa; p=QUJD"
    assert dkim_dns_name(SELECTOR, DOMAIN) == "pr2024._domainkey.example.com"


def test_unusable_keys_and_names_are_rejected(keypair: tuple[str, str]) -> None:
    with pytest.raises(DkimError):
        generate_dkim_keypair(512)
    with pytest.raises(DkimError):
        DkimSigner(DOMAIN, SELECTOR, "not a key")
    ed_pem = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(DkimError):
        DkimSigner(DOMAIN, SELECTOR, ed_pem)
    for domain, selector in (("bad domain", SELECTOR), (DOMAIN, "sel;ector"), ("", SELECTOR)):
        with pytest.raises(DkimError):
            DkimSigner(domain, selector, keypair[0])
    with pytest.raises(ValueError, match="header"):
        DkimSigner(DOMAIN, SELECTOR, keypair[0], headers_to_sign=("From", "Bad Name"))


def test_a_message_without_any_signed_header_is_refused(signer: DkimSigner) -> None:
    with pytest.raises(DkimError):
        signer.sign(b"X-Only: this\r\n\r\nbody\r\n")
