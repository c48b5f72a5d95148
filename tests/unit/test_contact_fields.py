"""Validation and normalisation of contact fields."""

from __future__ import annotations

import math

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from postroom.contacts.contact_fields import (
    ContactInput,
    FieldError,
    canonical_key,
    contact_from_mapping,
    convert_attribute,
    normalize_email,
    normalize_locale,
    normalize_phone,
    parse_bool,
    split_type_hint,
    validate_timezone,
)

# --- email ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_address", "normalized"),
    [
        ("John.Smith@Example.COM", "John.Smith@example.com"),
        ("  a+tag@sub.example.org\t", "a+tag@sub.example.org"),
        ("Postmaster@Example.com", "postmaster@example.com"),  # RFC 2142 role name
        ("jöhn@bücher.de", "jöhn@bücher.de"),
        ("a@xn--bcher-kva.de", "a@bücher.de"),  # Punycode comes back as Unicode
        ("o'hara@x-y.co.uk", "o'hara@x-y.co.uk"),
        ("=cmd@example.com", "=cmd@example.com"),
    ],
)
def test_normalize_email(given_address: str, normalized: str) -> None:
    assert normalize_email(given_address) == (normalized, normalized.lower())


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ("", "required"),
        ("   ", "required"),
        ("plainaddress", "invalid_email"),
        ("a@b", "invalid_email"),
        ("a@localhost", "invalid_email"),
        ("a@example.test", "invalid_email"),
        ("a..b@example.com", "invalid_email"),
        ("a@-example.com", "invalid_email"),
        ("a@exa_mple.com", "invalid_email"),
        ('"quoted"@example.com', "invalid_email"),
        ("Ann <a@example.com>", "invalid_email"),
        ("a@[127.0.0.1]", "invalid_email"),
        ("a" * 250 + "@example.com", "invalid_email"),
    ],
)
def test_normalize_email_refuses(bad: str, code: str) -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email(bad)
    assert (caught.value.field, caught.value.code) == ("email", code)


def reference_normalized(address: str) -> str | None:
    try:
        return validate_email(
            address,
            check_deliverability=False,
            test_environment=False,
            globally_deliverable=True,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
            strict=False,
        ).normalized
    except EmailNotValidError:
        return None


# Mostly near-valid parts with edge cases mixed in, so that both the fast path and
# email-validator's own path are exercised, and their borders probed.
_LOCAL_ALPHABET = "aZ09.!#$%&'*+/=?^_`{|}~-" + 'é @"\u0301<'
_labels = st.one_of(
    st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,4}[a-zA-Z0-9])?", fullmatch=True),
    st.text("abXY09-é_", max_size=66),
    st.sampled_from(["xn--bcher-kva", "xn--", "ab--cd", "a--b", "-a", "a-", "INFO", "a" * 63]),
    st.sampled_from(["b" * 64]),
)
_tlds = st.one_of(
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,3}", fullmatch=True),
    st.sampled_from(["com", "COM", "c0m", "a1", "99", "x", "co-uk", "test", "Local", "arpa"]),
    st.sampled_from(["localhost", "onion", "invalid", "xn--p1ai", "рф", "io", "é"]),
    _labels,
)
_locals = st.one_of(
    st.from_regex(r"[a-zA-Z0-9+_'=-]{1,8}(\.[a-zA-Z0-9!#$%&*/?^`{|}~-]{1,4}){0,2}", fullmatch=True),
    st.text(_LOCAL_ALPHABET, max_size=70),
    st.sampled_from(["info", "Postmaster", "WWW", "abuse", "x" * 64, "y" * 65, "Sales", ".a"]),
)
_addresses = st.one_of(
    st.builds(
        lambda local, labels, tld: local + "@" + ".".join([*labels, tld]),
        _locals,
        st.lists(_labels, max_size=4),
        _tlds,
    ),
    st.emails(),
    st.text(max_size=40),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_addresses)
@example("a@-b.com")
@example("a@b.-c.com")
@example("a@b.c1")
@example("Info@b.com")
@example("a@b-.c.com")
@example("a@" + "b" * 63 + ".com")
@example("a@" + "b" * 64 + ".com")
@example("x" * 67 + "@" + ".".join(["c" * 60] * 3) + ".com")  # 254 characters
@example("x" * 68 + "@" + ".".join(["c" * 60] * 3) + ".com")  # 255 characters
def test_normalize_email_matches_email_validator(address: str) -> None:
    """The regex fast path accepts a subset of email-validator and normalises identically:
    over every generated address, normalize_email and email-validator agree."""
    expected = reference_normalized(address.strip())
    if expected is None:
        with pytest.raises(FieldError):
            normalize_email(address)
    else:
        assert normalize_email(address) == (expected, expected.lower())


# --- phone, locale, timezone, booleans ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+44 20 7946 0958", None, "+442079460958"),
        ("+1 (415) 555-2671", None, "+14155552671"),
        ("+33 6 12 34 56 78", None, "+33612345678"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("tel:+44-20-7946-0958", None, "+442079460958"),
    ],
)
def test_normalize_phone(raw: str, region: str | None, e164: str) -> None:
    assert normalize_phone(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("020 7946 0958", None),  # no + and no region
        ("+44 20 7946", None),  # too short
        ("+999 1234", None),
        ("call me", None),
        ("+1 415 555 2671 ext. 7", None),
        ("+" + "1" * 80, None),
    ],
)
def test_normalize_phone_refuses(raw: str, region: str | None) -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone(raw, region)
    assert caught.value.field == "phone"


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("en", "en"),
        ("EN-us", "en-US"),
        ("pt_BR", "pt-BR"),
        ("zh_hant_tw", "zh-Hant-TW"),
        ("sr-Latn", "sr-Latn"),
        ("es-419", "es-419"),
        (" fr ", "fr"),
    ],
)
def test_normalize_locale(raw: str, normalized: str) -> None:
    assert normalize_locale(raw) == normalized


@pytest.mark.parametrize("bad", ["", "e", "english", "12", "en-USA-x", "en--US", "en US", "ü"])
def test_normalize_locale_refuses(bad: str) -> None:
    with pytest.raises(FieldError):
        normalize_locale(bad)


def test_validate_timezone() -> None:
    assert validate_timezone("Europe/London") == "Europe/London"
    assert validate_timezone(" america/NEW_york ") == "America/New_York"
    assert validate_timezone("utc") == "UTC"
    for bad in ["Mars/Olympus_Mons", "localtime", "", "+02:00"]:
        with pytest.raises(FieldError):
            validate_timezone(bad)


@pytest.mark.parametrize(
    ("raw", "value"),
    [(True, True), (0, False), ("Yes", True), (" no ", False), ("1", True), ("FALSE", False)],
)
def test_parse_bool(raw: object, value: bool) -> None:
    assert parse_bool("subscribed", raw) is value


@pytest.mark.parametrize("bad", ["maybe", 2, None, "", 1.0])
def test_parse_bool_refuses(bad: object) -> None:
    with pytest.raises(FieldError) as caught:
        parse_bool("opt_in", bad)
    assert caught.value.field == "opt_in"


# --- attributes and headers ---------------------------------------------------------------------


def test_split_type_hint() -> None:
    assert split_type_hint("age:number") == ("age", "number")
    assert split_type_hint(" vip : Boolean ") == ("vip", "boolean")
    assert split_type_hint("utm:source") == ("utm:source", None)
    assert split_type_hint("a:number:string") == ("a:number", "string")
    assert split_type_hint(":number") == (":number", None)


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("string", " 007 ", " 007 "),
        ("number", "42", 42),
        ("number", "-1.5e3", -1500.0),
        ("number", " .5 ", 0.5),
        ("boolean", "Yes", True),
        ("date", "2024-02-29", "2024-02-29"),
        ("datetime", "2024-05-01T11:30:00+02:00", "2024-05-01T09:30:00Z"),
        ("datetime", "2024-05-01 09:30", "2024-05-01T09:30:00Z"),
    ],
)
def test_convert_attribute(kind: str, text: str, value: object) -> None:
    assert convert_attribute("x", kind, text) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("number", "1_000"),
        ("number", "nan"),
        ("number", "1e999"),
        ("number", "12abc"),
        ("boolean", "si"),
        ("date", "2023-02-29"),
        ("date", "01/02/2024"),
        ("datetime", "yesterday"),
    ],
)
def test_convert_attribute_refuses(kind: str, text: str) -> None:
    with pytest.raises(FieldError) as caught:
        convert_attribute("x", kind, text)  # type: ignore[arg-type]
    assert caught.value.field == "attributes.x"


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("E-mail", "email"),
        ("Email Address", "email"),
        ("firstName", "first_name"),
        ("First Name", "first_name"),
        ("SURNAME", "last_name"),
        ("Time Zone", "timezone"),
        ("Language", "locale"),
        ("opt-in", "opt_in"),
        ("data", "attributes"),
        ("Created At", "created_at"),
        ("id", None),
        ("plan", None),
    ],
)
def test_canonical_key(key: str, field: str | None) -> None:
    assert canonical_key(key) == field


# --- whole contacts -----------------------------------------------------------------------------


def test_contact_from_mapping_normalises_every_field() -> None:
    contact = contact_from_mapping(
        {
            "email": " Ann@Example.COM ",
            "external_id": 1234,
            "first_name": " Ann ",
            "last_name": "",
            "phone": "020 7946 0958",
            "locale": "en_gb",
            "timezone": "europe/london",
            "status": "Subscribed",
            "subscribed": "yes",
            "opt_in": False,
            "consent_source": "signup form",
            "consent_version": None,
            "attributes": {"plan": "pro", "seats": 3, "tags": ["a"], "x": None},
        },
        default_region="GB",
    )
    assert contact == ContactInput(
        email="Ann@example.com",
        email_key="ann@example.com",
        external_id="1234",
        first_name="Ann",
        phone="+442079460958",
        locale="en-GB",
        timezone="Europe/London",
        status="subscribed",
        subscribed=True,
        attributes={"plan": "pro", "seats": 3, "tags": ["a"], "x": None},
        opt_in=False,
        consent_source="signup form",
    )
    assert contact.provided() == {
        "email": "Ann@example.com",
        "email_key": "ann@example.com",
        "external_id": "1234",
        "first_name": "Ann",
        "phone": "+442079460958",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "status": "subscribed",
        "subscribed": True,
        "opt_in": False,
        "consent_source": "signup form",
        "attributes": {"plan": "pro", "seats": 3, "tags": ["a"], "x": None},
    }


@pytest.mark.parametrize(
    ("row", "field", "code"),
    [
        ({"first_name": "Ann"}, "email", "required"),
        ({"email": 5}, "email", "invalid_type"),
        ({"email": "bad", "status": "nope"}, "email", "invalid_email"),
        ({"email": "a@example.com", "status": "nope"}, "status", "invalid"),
        ({"email": "a@example.com", "first_name": "x" * 256}, "first_name", "too_long"),
        ({"email": "a@example.com", "last_name": "a\x00b"}, "last_name", "invalid"),
        ({"email": "a@example.com", "last_name": "\ud800"}, "last_name", "invalid"),
        ({"email": "a@example.com", "first_name": 3}, "first_name", "invalid_type"),
        ({"email": "a@example.com", "timezone": "Nowhere"}, "timezone", "invalid_timezone"),
        ({"email": "a@example.com", "nickname": "Al"}, "nickname", "unknown_field"),
        ({"email": "a@example.com", "attributes": ["x"]}, "attributes", "invalid_type"),
        ({"email": "a@example.com", "attributes": {"n": math.nan}}, "attributes.n", "invalid"),
        ({"email": "a@example.com", "attributes": {"n": {"d": "\x00"}}}, "attributes.n", "invalid"),
        ({"email": "a@example.com", "attributes": {" ": 1}}, "attributes", "invalid"),
        ({"email": "a@example.com", "attributes": {"s": {1, 2}}}, "attributes.s", "invalid_type"),
    ],
)
def test_contact_from_mapping_names_the_bad_field(
    row: dict[str, object], field: str, code: str
) -> None:
    with pytest.raises(FieldError) as caught:
        contact_from_mapping(row)
    assert (caught.value.field, caught.value.code) == (field, code)


def test_not_provided_fields_stay_none() -> None:
    contact = contact_from_mapping({"email": "a@example.com", "phone": "", "locale": None})
    assert contact.phone is None
    assert contact.locale is None
    assert contact.attributes == {}
    assert contact.provided() == {"email": "a@example.com", "email_key": "a@example.com"}
