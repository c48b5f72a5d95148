"""Which transport carries a workspace's mail, and when a broken relay may be tried again.

Today one transport serves the whole instance: ``POSTROOM_SMTP_URL`` set → an
:class:`SmtpRelayPool` to that relay, unset → the Maildir capture under
``<data_dir>/mail``. The engine only ever asks ``transport_for(workspace_id)``, so
per-workspace relays slot in behind the same call later.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from postroom.config import Settings
from postroom.delivery.maildir import MaildirTransport
from postroom.delivery.relay_url import parse_relay_url
from postroom.delivery.smtp_pool import SmtpRelayPool
from postroom.delivery.transport import Transport

TransportFor = Callable[[uuid.UUID], Transport]


def instance_transport(settings: Settings) -> Transport:
    """The relay of ``POSTROOM_SMTP_URL``, else the local Maildir capture."""
    if settings.smtp_url:
        return SmtpRelayPool(
            parse_relay_url(settings.smtp_url),
            max_connections=settings.smtp_max_connections,
            max_messages_per_connection=settings.smtp_messages_per_connection,
        )
    return MaildirTransport(settings.data_dir / "mail")


class SingleTransport:
    """``transport_for`` for an instance with one transport for every workspace."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def __call__(self, workspace_id: uuid.UUID) -> Transport:
        return self.transport

    async def close(self) -> None:
        await self.transport.close()


def relay_label(transport: Transport) -> str:
    """What ``deliveries.relay`` records: where the message was handed over."""
    if isinstance(transport, SmtpRelayPool):
        return f"smtp:{transport.config.host}:{transport.config.port}"[:100]
    if isinstance(transport, MaildirTransport):
        return "maildir"
    return type(transport).__name__[:100]


class RelayPauses:
    """Relays resting after failing themselves, keyed by transport object.

    Times come from the application clock, so tests move past a pause instead of
    sleeping. When a pause ends, a pool that marked itself unhealthy is told to try again.
    """

    def __init__(self, pause: timedelta) -> None:
        self.pause = pause
        self._until: dict[int, tuple[Transport, datetime]] = {}

    def paused_until(self, transport: Transport, now: datetime) -> datetime | None:
        entry = self._until.get(id(transport))
        if entry is None:
            return None
        if now < entry[1]:
            return entry[1]
        del self._until[id(transport)]
        if isinstance(transport, SmtpRelayPool):
            transport.reset_health()
        return None

    def pause_relay(self, transport: Transport, now: datetime) -> datetime:
        until = now + self.pause
        self._until[id(transport)] = (transport, until)
        return until
