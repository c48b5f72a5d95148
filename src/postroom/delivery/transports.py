"""Which transport carries a workspace's mail, and when a broken relay may be tried again.

:class:`WorkspaceRelays` is the engine's ``transport_for``: a workspace with enabled
relays of its own (``/v1/relays``) gets one of them, chosen at random in proportion to
its weight among the relays that are healthy and not resting; a workspace without gets
the instance's default, ``POSTROOM_SMTP_URL`` set → an :class:`SmtpRelayPool` to that
relay, unset → the Maildir capture under ``<data_dir>/mail``.

Relay rows are read by :meth:`WorkspaceRelays.prepare` (the engine awaits it before
asking ``transport_for``), at most every ``relay_refresh_seconds`` per workspace. Pools
are cached per relay id and rebuilt only when the connection settings of the row change
(URL, password, connection limits); weight and rate limits are updated in place. A
replaced pool is closed a while later, so batches still sending through it finish.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select

from postroom.config import Settings
from postroom.context import AppContext
from postroom.delivery.maildir import MaildirTransport
from postroom.delivery.relay_url import RelayConfig, parse_relay_url
from postroom.delivery.smtp_pool import SmtpRelayPool, WeightedRelayChooser
from postroom.delivery.transport import Envelope, SendResult, Transport
from postroom.logging import get_logger
from postroom.models.relays import Relay

log = get_logger(__name__)

TransportFor = Callable[[uuid.UUID], Transport]

# A replaced pool may still carry a batch; it is closed once this long has passed.
_RETIRED_GRACE_SECONDS = 120.0


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


def relay_config(url: str, password: str | None) -> RelayConfig:
    """The connection settings of a stored relay: its masked URL with the real password."""
    config = parse_relay_url(url)
    return replace(config, password=password) if config.username is not None else config


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """What a worker needs of one ``relays`` row (the password still encrypted)."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    url: str
    password: str | None
    weight: int
    max_connections: int
    max_messages_per_connection: int
    per_second: int | None
    per_hour: int | None
    per_day: int | None

    @property
    def connection(self) -> tuple[str, str | None, int, int]:
        """The fields whose change needs a new pool."""
        return (self.url, self.password, self.max_connections, self.max_messages_per_connection)


class RelayTransport:
    """A workspace relay: its SMTP pool plus what the engine and the rate limits ask."""

    def __init__(self, relay: RelaySettings, pool: SmtpRelayPool) -> None:
        self.pool = pool
        self.relay = relay
        self.label = f"relay:{relay.id}"

    @property
    def relay_id(self) -> uuid.UUID:
        return self.relay.id

    @property
    def healthy(self) -> bool:
        return self.pool.healthy

    @property
    def max_connections(self) -> int:
        return self.pool.max_connections

    async def send_many(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        return await self.pool.send_many(envelopes)

    async def close(self) -> None:
        await self.pool.close()


class WorkspaceRelays:
    """``transport_for`` that knows each workspace's own relays (see the module doc)."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        default: Transport | None = None,
        rng: random.Random | None = None,
        refresh_seconds: float | None = None,
    ) -> None:
        self.ctx = ctx
        self.default = default if default is not None else instance_transport(ctx.settings)
        # The engine's pauses, so a resting relay is not chosen while others can send.
        self.pauses: RelayPauses | None = None
        self.refresh_seconds = (
            ctx.settings.relay_refresh_seconds if refresh_seconds is None else refresh_seconds
        )
        self._rng = rng or random.Random()  # load spreading, not security
        self._pools: dict[uuid.UUID, RelayTransport] = {}
        self._by_workspace: dict[uuid.UUID, tuple[float, list[RelayTransport]]] = {}
        self._choosers: dict[uuid.UUID, WeightedRelayChooser] = {}
        self._retired: list[tuple[float, RelayTransport]] = []

    async def prepare(self, workspace_ids: Iterable[uuid.UUID]) -> None:
        """Re-read the relays of these workspaces if the cached ones are older than the
        refresh interval (one query for all of them)."""
        moment = time.monotonic()
        stale = {
            workspace_id
            for workspace_id in workspace_ids
            if workspace_id not in self._by_workspace
            or moment - self._by_workspace[workspace_id][0] >= self.refresh_seconds
        }
        if not stale:
            return
        query = (
            select(
                Relay.id,
                Relay.workspace_id,
                Relay.url,
                Relay.password,
                Relay.weight,
                Relay.max_connections,
                Relay.max_messages_per_connection,
                Relay.per_second,
                Relay.per_hour,
                Relay.per_day,
            )
            .where(Relay.workspace_id.in_(list(stale)), Relay.enabled.is_(True))
            .order_by(Relay.id)
        )
        async with self.ctx.db.read_sessions() as session:
            rows = [RelaySettings(**row._asdict()) for row in (await session.execute(query)).all()]
        found: dict[uuid.UUID, list[RelayTransport]] = {workspace_id: [] for workspace_id in stale}
        for relay in rows:
            transport = self._transport(relay)
            if transport is not None:
                found[relay.workspace_id].append(transport)
        for workspace_id, transports in found.items():
            previous = self._by_workspace.get(workspace_id, (0.0, []))[1]
            kept = {transport.relay_id for transport in transports}
            for gone in previous:
                if gone.relay_id not in kept and self._pools.get(gone.relay_id) is gone:
                    del self._pools[gone.relay_id]
                    self._retire(gone, moment)
            self._by_workspace[workspace_id] = (moment, transports)
            self._choosers[workspace_id] = WeightedRelayChooser(
                [(str(t.relay_id), t.relay.weight) for t in transports], rng=self._rng
            )
        await self._close_retired(moment)

    def _transport(self, relay: RelaySettings) -> RelayTransport | None:
        current = self._pools.get(relay.id)
        if current is not None and current.relay.connection == relay.connection:
            current.relay = relay  # weight and rate limits apply at once
            return current
        try:
            password = self.ctx.secret_box.decrypt(relay.password) if relay.password else None
            pool = SmtpRelayPool(
                relay_config(relay.url, password),
                max_connections=relay.max_connections,
                max_messages_per_connection=relay.max_messages_per_connection,
            )
        except Exception as exc:  # a row that cannot be used must not stop the others
            log.warning("relay_unusable", relay_id=str(relay.id), error=type(exc).__name__)
            return None
        if current is not None:
            self._retire(current, time.monotonic())
        transport = RelayTransport(relay, pool)
        self._pools[relay.id] = transport
        return transport

    def _retire(self, transport: RelayTransport, moment: float) -> None:
        self._retired.append((moment, transport))

    async def _close_retired(self, moment: float) -> None:
        keep: list[tuple[float, RelayTransport]] = []
        for retired_at, transport in self._retired:
            if moment - retired_at >= _RETIRED_GRACE_SECONDS:
                with contextlib.suppress(Exception):
                    await transport.close()
            else:
                keep.append((retired_at, transport))
        self._retired = keep

    def relays_of(self, workspace_id: uuid.UUID) -> list[RelayTransport]:
        """The enabled relays of a workspace as last read."""
        return list(self._by_workspace.get(workspace_id, (0.0, []))[1])

    def __call__(self, workspace_id: uuid.UUID) -> Transport:
        transports = self.relays_of(workspace_id)
        if not transports:
            return self.default
        now = self.ctx.clock.now()
        ready = [
            str(t.relay_id)
            for t in transports
            if t.healthy and (self.pauses is None or self.pauses.paused_until(t, now) is None)
        ]
        # All resting: pick among all, the engine defers the rows until the pause ends.
        chosen = self._choosers[workspace_id].choose(ready or [str(t.relay_id) for t in transports])
        by_id = {str(t.relay_id): t for t in transports}
        return by_id[chosen] if chosen is not None else transports[0]

    async def close(self) -> None:
        transports: list[Transport] = [*self._pools.values(), *(t for _, t in self._retired)]
        transports.append(self.default)
        self._pools.clear()
        self._retired.clear()
        self._by_workspace.clear()
        for transport in transports:
            with contextlib.suppress(Exception):
                await transport.close()


def relay_label(transport: Transport) -> str:
    """What ``deliveries.relay`` records: where the message was handed over."""
    if isinstance(transport, RelayTransport):
        return transport.label
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
        elif isinstance(transport, RelayTransport):
            transport.pool.reset_health()
        return None

    def pause_relay(self, transport: Transport, now: datetime) -> datetime:
        until = now + self.pause
        self._until[id(transport)] = (transport, until)
        return until
