"""Relay URLs: schemes, default ports, credentials, options, and clear refusals."""

from __future__ import annotations

import pytest

from postroom.delivery.relay_url import InvalidRelayUrl, RelayConfig, parse_relay_url
from postroom.errors import ConfigurationError


@pytest.mark.parametrize(
    ("url", "tls", "port"),
    [
        ("smtp://mail.example.com", "none", 25),
        ("smtp+starttls://mail.example.com", "starttls", 587),
        ("smtps://mail.example.com", "implicit", 465),
        ("SMTPS://mail.example.com:2465", "implicit", 2465),
        ("smtp://mail.example.com:2525/", "none", 2525),
    ],
)
def test_schemes_and_default_ports(url: str, tls: str, port: int) -> None:
    config = parse_relay_url(url)
    assert (config.host, config.tls, config.port) == ("mail.example.com", tls, port)
    assert (config.username, config.password) == (None, None)
    assert (config.timeout, config.verify_tls, config.helo) == (30.0, True, None)


def test_credentials_are_url_decoded() -> None:
    config = parse_relay_url("smtp+starttls://apikey%40corp:p%40ss%3Aw%2Frd@smtp.example.com")
    assert config.username == "apikey@corp"
    assert config.password == "p@ss:w/rd"


def test_empty_password_is_allowed_when_written() -> None:
    assert parse_relay_url("smtp://user:@relay.local").password == ""


def test_query_options() -> None:
    config = parse_relay_url(
        "smtps://u:p@relay.example.com?timeout=7.5&tls_verify=false&helo=mx1.sender.example"
    )
    assert config.timeout == 7.5
    assert config.verify_tls is False
    assert config.helo == "mx1.sender.example"
    assert parse_relay_url("smtp://relay.example.com?tls_verify=yes").verify_tls is True


def test_ip_hosts() -> None:
    assert parse_relay_url("smtp://127.0.0.1:1025").host == "127.0.0.1"
    assert parse_relay_url("smtp://[::1]:1025").host == "::1"


def test_repr_and_str_never_show_the_password() -> None:
    config = parse_relay_url("smtp+starttls://user:hunter2-secret@relay.example.com")
    for text in (repr(config), str(config), f"{config}", config.redacted_url):
        assert "hunter2" not in text
    assert "password='***'" in repr(config)
    assert config.redacted_url == "smtp+starttls://user:***@relay.example.com:587"
    assert parse_relay_url("smtps://[::1]").redacted_url == "smtps://[::1]:465"


def test_config_is_frozen() -> None:
    config = parse_relay_url("smtp://relay.example.com")
    with pytest.raises(AttributeError):
        config.port = 26  # type: ignore[misc]
    assert config == RelayConfig("relay.example.com", 25, "none", None, None)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://relay.example.com", "starts with one of"),
        ("relay.example.com:25", "starts with one of"),
        ("smtp://", "no host"),
        ("smtp://:25", "no host"),
        ("smtp://relay.example.com:99999", "port"),
        ("smtp://relay.example.com:abc", "port"),
        ("smtp://rel ay.example.com", "not a host name"),
        ("smtp://relay.example.com/inbox", "no path"),
        ("smtp://relay.example.com#frag", "no path"),
        ("smtp://user@relay.example.com", "no password"),
        ("smtp://:secret@relay.example.com", "no user name"),
        ("smtp://relay.example.com?timeout=soon", "timeout"),
        ("smtp://relay.example.com?timeout=0", "positive"),
        ("smtp://relay.example.com?timeout=nan", "positive"),
        ("smtp://relay.example.com?tls_verify=maybe", "true or false"),
        ("smtp://relay.example.com?helo=bad%20name", "helo"),
        ("smtp://relay.example.com?tls=true", "unknown relay URL parameter 'tls'"),
        ("smtp://relay.example.com?timeout=1&timeout=2", "given twice"),
        ("smtp://relay.example.com?timeout", "malformed"),
    ],
)
def test_invalid_urls_are_refused_with_a_reason(url: str, says: str) -> None:
    with pytest.raises(InvalidRelayUrl, match=says) as caught:
        parse_relay_url(url)
    # Usable both as a ValueError (pydantic validators) and as a domain error.
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.code == "invalid_relay_url"


@pytest.mark.parametrize(
    "url",
    [
        "smtp://user:topsecret@relay.example.com/path",
        "smtpx://user:topsecret@relay.example.com",
        "smtp://user:topsecret@relay.example.com:port",
        "smtp://user:topsecret@relay.example.com?timeout=x",
    ],
)
def test_the_error_never_echoes_a_password(url: str) -> None:
    with pytest.raises(InvalidRelayUrl) as caught:
        parse_relay_url(url)
    assert "topsecret" not in str(caught.value)
