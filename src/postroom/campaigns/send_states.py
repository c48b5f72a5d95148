"""What the delivery engine asks before each SMTP transaction of a campaign: is its send
still active? Cancel and pause flip ``sends.state``; every worker sees it within
``campaign_state_cache_seconds`` (at most one second).

``SendStates`` caches each send's state on the monotonic clock (the database is asked at
most once per send per period, one query for every stale send at once), and
``ConnectionSlots`` keeps at most one checked-but-unfinished message per SMTP connection,
so after a cancel a relay receives at most one message per open connection (already past
the check) plus what the cache period lets through at the configured rate.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import select

from postroom.models.delivery import Send

if TYPE_CHECKING:
    from postroom.context import AppContext

# Sends whose state can change while their deliveries are queued.
GATED_KINDS = frozenset({"campaign", "sequence_step"})


class SendStates:
    def __init__(self, ctx: AppContext, ttl: float | None = None) -> None:
        self.ctx = ctx
        self.ttl = ctx.settings.campaign_state_cache_seconds if ttl is None else ttl
        self._cache: dict[uuid.UUID, tuple[str, float]] = {}
        self._lock = asyncio.Lock()
        self.queries = 0  # for tests and metrics

    def seed(self, states: dict[uuid.UUID, str]) -> None:
        """States just read by the batch loader: fresh, no query needed."""
        now = time.monotonic()
        for send_id, state in states.items():
            self._cache[send_id] = (state, now)

    def _fresh(self, send_id: uuid.UUID, now: float) -> str | None:
        entry = self._cache.get(send_id)
        if entry is not None and now - entry[1] <= self.ttl:
            return entry[0]
        return None

    async def state(self, send_id: uuid.UUID) -> str:
        """The send's state, at most ``ttl`` seconds old (a deleted send: cancelled)."""
        found = self._fresh(send_id, time.monotonic())
        if found is not None:
            return found
        async with self._lock:  # one refresh for every coroutine that found it stale
            now = time.monotonic()
            found = self._fresh(send_id, now)
            if found is not None:
                return found
            stale = [key for key, (_, at) in self._cache.items() if now - at > self.ttl]
            wanted = {send_id, *stale[:500]}
            async with self.ctx.db.read_sessions() as session:
                rows = await session.execute(
                    select(Send.id, Send.state).where(Send.id.in_(list(wanted)))
                )
                states = {row[0]: row[1] for row in rows.all()}
            self.queries += 1
            if len(self._cache) > 10_000:
                self._cache.clear()
            for key in wanted:
                self._cache[key] = (states.get(key, "cancelled"), now)
            return self._cache[send_id][0]


class ConnectionSlots:
    """One semaphore per transport, as wide as its connection pool."""

    def __init__(self, default: int) -> None:
        self.default = max(1, default)
        self._slots: dict[int, asyncio.Semaphore] = {}

    def of(self, transport: object) -> asyncio.Semaphore:
        slots = self._slots.get(id(transport))
        if slots is None:
            width = getattr(transport, "max_connections", None) or self.default
            slots = self._slots[id(transport)] = asyncio.Semaphore(int(width))
        return slots
