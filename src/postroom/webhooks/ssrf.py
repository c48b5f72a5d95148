"""Keeping webhook targets off private networks (SSRF).

A target is refused when any address its host resolves to is loopback, private,
link-local, multicast, reserved, unspecified or otherwise not globally routable — IPv4 and
IPv6, with IPv4 carried inside IPv6 (v4-mapped, 6to4, Teredo, NAT64) judged as IPv4.
``POSTROOM_WEBHOOKS_ALLOW_PRIVATE=true`` lifts the rule.

The check runs when an endpoint is created or changed (a 422) and again at every
connection: the HTTP client's network backend resolves the host itself, checks every
address and connects to the checked address, so a DNS answer that changes between the
two (DNS rebinding) cannot reach an internal service. TLS still verifies the certificate
against the host name. Redirects are never followed (the client is built with
``follow_redirects=False``; a 3xx is a failed attempt).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_SECONDS = 5.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(httpcore.ConnectError):
    """The target resolves to an address webhooks may not reach."""


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be a webhook target, or ``None`` when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = refusal(embedded)
            return f"{reason} (inside {address})" if reason else None
    for flag, label in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(address, flag):
            return f"{address} is a {label} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    literal = host.strip("[]")
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(literal, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
    )
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # Strip an IPv6 zone ("fe80::1%eth0"): the address alone is what is judged.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


async def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """The addresses to connect to; raises ``TargetRefused`` if any is forbidden (a host
    with one public and one private address is refused as a whole)."""
    try:
        addresses = await resolve(host, port)
    except (OSError, TimeoutError) as exc:
        raise TargetRefused(f"{host} does not resolve: {exc}") from exc
    if not addresses:
        raise TargetRefused(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason:
                raise TargetRefused(f"refused target {host}: {reason}")
    return addresses


async def check_url(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` cannot be a webhook target, or ``None`` when it can."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username or parts.password:
        return "must not carry credentials; use the signature to authenticate Postroom"
    try:
        await checked_addresses(
            parts.hostname,
            port or (443 if parts.scheme == "https" else 80),
            allow_private=allow_private,
        )
    except TargetRefused as exc:
        return str(exc)
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's backend with the address check in ``connect_tcp``."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await checked_addresses(host, port, allow_private=self.allow_private)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def build_client(
    *,
    allow_private: bool,
    timeout: float,
    max_connections: int,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The webhook HTTP client: guarded connections, a timeout, no redirects, no proxy
    from the environment (a proxy would connect on our behalf, past the check)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    # httpx has no parameter for httpcore's network backend; its pool is rebuilt with the
    # same settings plus the guarded backend.
    transport._pool = httpcore.AsyncConnectionPool(
        # Loading the CA bundle costs ~0.1 s of CPU: callers share one context.
        ssl_context=ssl_context or httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(allow_private=allow_private),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )
