"""SMTP relay URLs: one string that says where and how to hand mail over.

``smtp://user:pass@host:port`` is plain SMTP (no TLS at all: plain means plain),
``smtp+starttls://…`` requires STARTTLS and ``smtps://…`` is TLS from the first byte.
Default ports are 25, 587 and 465. User and password are URL-decoded, so a password
with ``@`` or ``:`` is written ``%40`` / ``%3A``. Query parameters: ``timeout`` (seconds,
default 30), ``tls_verify`` (default true) and ``helo`` (the name we greet with).
Unknown parameters are refused, so a typo does not silently fall back to a default.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from postroom.errors import ConfigurationError

TlsMode = Literal["none", "starttls", "implicit"]

DEFAULT_TIMEOUT = 30.0
_SCHEMES: dict[str, tuple[TlsMode, int]] = {
    "smtp": ("none", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("implicit", 465),
}
_QUERY_KEYS = frozenset({"timeout", "tls_verify", "helo"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|[0-9a-f:.]+")  # IPv6 without brackets
_HELO = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+|\[[0-9A-Fa-f:.]+\]")


class InvalidRelayUrl(ConfigurationError, ValueError):
    """A relay URL that cannot be used; the message says which part is wrong."""

    code = "invalid_relay_url"


@dataclass(frozen=True, slots=True)
class RelayConfig:
    host: str
    port: int
    tls: TlsMode
    username: str | None
    password: str | None = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    verify_tls: bool = True
    helo: str | None = None

    def __repr__(self) -> str:
        secret = "None" if self.password is None else "'***'"
        return (
            f"RelayConfig(host={self.host!r}, port={self.port}, tls={self.tls!r}, "
            f"username={self.username!r}, password={secret}, timeout={self.timeout}, "
            f"verify_tls={self.verify_tls}, helo={self.helo!r})"
        )

    __str__ = __repr__

    @property
    def redacted_url(self) -> str:
        """The URL for logs and the admin UI: everything but the password."""
        scheme = {"none": "smtp", "starttls": "smtp+starttls", "implicit": "smtps"}[self.tls]
        user = f"{quote(self.username, safe='')}:***@" if self.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"


def parse_relay_url(url: str) -> RelayConfig:
    """Parse a relay URL; raises :class:`InvalidRelayUrl` saying what is wrong."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise InvalidRelayUrl(f"the relay URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        allowed = ", ".join(f"{name}://" for name in _SCHEMES)
        # Never echo the URL: it may hold a password.
        got = f"{scheme}://" if scheme else "no scheme"
        raise InvalidRelayUrl(f"a relay URL starts with one of {allowed}, not {got}")
    tls, default_port = _SCHEMES[scheme]
    if not parts.hostname:
        raise InvalidRelayUrl("the relay URL names no host")
    if not _HOST.fullmatch(parts.hostname):
        raise InvalidRelayUrl(f"{parts.hostname!r} is not a host name or IP address")
    try:
        port = parts.port or default_port
    except ValueError:
        raise InvalidRelayUrl("the relay URL's port must be a number from 1 to 65535") from None
    if parts.path not in ("", "/") or parts.fragment:
        raise InvalidRelayUrl("a relay URL has no path or fragment: host, port and query only")
    username, password = _credentials(parts.username, parts.password)
    options = _query(parts.query)
    return RelayConfig(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=username,
        password=password,
        timeout=_timeout(options.get("timeout")),
        verify_tls=_flag("tls_verify", options.get("tls_verify"), default=True),
        helo=_helo(options.get("helo")),
    )


def _credentials(user: str | None, password: str | None) -> tuple[str | None, str | None]:
    if user is None and password is None:
        return None, None
    if not user:
        raise InvalidRelayUrl("the relay URL has a password but no user name")
    if password is None:
        # "user@host" is nearly always a forgotten password, not an empty one.
        raise InvalidRelayUrl("the relay URL has a user name but no password (user:password@)")
    return unquote(user), unquote(password)


def _query(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidRelayUrl(f"the relay URL's query {query!r} is malformed") from None
    for key, value in pairs:
        if key not in _QUERY_KEYS:
            known = ", ".join(sorted(_QUERY_KEYS))
            raise InvalidRelayUrl(f"unknown relay URL parameter {key!r} (known: {known})")
        if key in options:
            raise InvalidRelayUrl(f"the relay URL parameter {key!r} is given twice")
        options[key] = value
    return options


def _timeout(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRelayUrl(f"timeout must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidRelayUrl(f"timeout must be a positive number of seconds, not {raw!r}")
    return value


def _flag(name: str, raw: str | None, *, default: bool) -> bool:
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidRelayUrl(f"{name} must be true or false, not {raw!r}")


def _helo(raw: str | None) -> str | None:
    if raw is None:
        return None
    if len(raw) > 253 or not _HELO.fullmatch(raw):
        raise InvalidRelayUrl(f"helo must be a host name or an address literal, not {raw!r}")
    return raw
