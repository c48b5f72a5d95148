"""SMTP relay rules: a valid URL whose password is stored encrypted and never shown,
unique names per workspace, weights and limits within their ranges.

The URL is stored with its password masked (``smtp://user:***@host``), which is also
how the API and CLI show it; the password goes into its own column, encrypted with the
instance's secret box. A PATCH whose URL carries the password ``***`` keeps the stored
password, so a client can send back the URL it read.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.delivery.relay_url import InvalidRelayUrl, RelayConfig, parse_relay_url
from postroom.errors import Conflict, NotFound, ValidationFailed
from postroom.ids import uuid7
from postroom.models.relays import Relay
from postroom.relays.repository import RelayRepository
from postroom.security.secret_box import SecretBox

MASK = "***"
_NOT_NULL = ("url", "name", "weight", "max_connections", "max_messages_per_connection", "enabled")
_LIMITS = ("per_second", "per_hour", "per_day")


@dataclass(frozen=True, slots=True)
class RelayDefaults:
    max_connections: int
    max_messages_per_connection: int


@dataclass(frozen=True, slots=True)
class SplitUrl:
    masked: str  # what is stored and shown
    password: str | None  # the plain password, None when the URL has none
    config: RelayConfig


def split_url(url: str, field: str = "url") -> SplitUrl:
    """Validate a relay URL and separate its password; a bad URL is a 422 on ``field``."""
    try:
        config = parse_relay_url(url)
    except InvalidRelayUrl as error:
        raise ValidationFailed.single(field, error.message, "invalid_relay_url") from None
    parts = urlsplit(url.strip())
    if config.password is None:
        return SplitUrl(urlunsplit(parts), None, config)
    host_port = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:{MASK}@{host_port}"  # the user name stays URL-encoded
    masked = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return SplitUrl(masked, config.password, config)


def stored_config(row: Relay) -> RelayConfig:
    """The parsed masked URL of a stored relay (its password is ``***`` here)."""
    return parse_relay_url(row.url)


class RelayService:
    def __init__(
        self,
        session: AsyncSession,
        workspace_id: uuid.UUID,
        now: datetime,
        box: SecretBox,
        defaults: RelayDefaults,
    ) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.box = box
        self.defaults = defaults
        self.relays = RelayRepository(session, workspace_id)

    async def get(self, relay_id: uuid.UUID) -> Relay:
        row = await self.relays.get(relay_id)
        if row is None:
            raise NotFound("relay", relay_id)
        return row

    async def by_name(self, name: str) -> Relay:
        row = await self.relays.by_name(name)
        if row is None:
            raise NotFound("relay", name)
        return row

    def _password(self, plain: str | None) -> str | None:
        return self.box.encrypt(plain) if plain is not None else None

    async def create(self, values: Mapping[str, Any]) -> Relay:
        """``values``: ``url`` and optionally the other fields of :class:`Relay`."""
        split = split_url(str(values["url"]))
        config = split.config
        name = values.get("name") or f"{config.host}:{config.port}"[:100]
        row = Relay(
            id=uuid7(),
            workspace_id=self.workspace_id,
            name=name,
            url=split.masked,
            password=self._password(split.password),
            weight=values.get("weight") or 1,
            max_connections=values.get("max_connections") or self.defaults.max_connections,
            max_messages_per_connection=values.get("max_messages_per_connection")
            or self.defaults.max_messages_per_connection,
            enabled=values.get("enabled", True),
            per_second=values.get("per_second"),
            per_hour=values.get("per_hour"),
            per_day=values.get("per_day"),
            created_at=self.now,
            updated_at=self.now,
        )
        await self._save(row)
        return row

    async def update(self, relay_id: uuid.UUID, changes: Mapping[str, Any]) -> Relay:
        """Apply the fields given (a PATCH); ``None`` clears a rate limit."""
        for name in _NOT_NULL:
            if name in changes and changes[name] is None:
                raise ValidationFailed.single(name, f"{name} cannot be null")
        row = await self.get(relay_id)
        if "url" in changes:
            split = split_url(str(changes["url"]))
            old = stored_config(row)
            keep = (
                split.password == MASK
                and row.password is not None
                and split.config.username == old.username
            )
            row.url = split.masked
            if not keep:
                row.password = self._password(split.password)
        for name in ("name", "weight", "max_connections", "max_messages_per_connection", "enabled"):
            if name in changes:
                setattr(row, name, changes[name])
        for name in _LIMITS:
            if name in changes:
                setattr(row, name, changes[name])
        row.updated_at = self.now
        await self._save(row, new=False)
        return row

    async def _save(self, row: Relay, *, new: bool = True) -> None:
        existing = await self.relays.by_name(row.name)
        if existing is not None and existing.id != row.id:
            raise Conflict(f"a relay named '{row.name}' already exists in this workspace")
        try:
            async with self.session.begin_nested():
                if new:
                    await self.relays.add(row)
                else:
                    await self.session.flush()
        except IntegrityError:
            raise Conflict(f"a relay named '{row.name}' already exists in this workspace") from None

    async def delete(self, relay_id: uuid.UUID) -> None:
        await self.relays.delete(await self.get(relay_id))
