"""Rate limits per relay and per sending domain, shared by every worker process through
the database, and the warm-up ramp of a sending domain.

**Counters.** A limit is a key (``relay:<id>:s``, ``domain:<id>:h``, ``warmup:<id>``…),
an allowance and a window. Time is cut into slots; ``rate_limit_slots`` holds, per
(key, slot), how many messages were granted in that slot. A limit counts the current slot
and the ``span - 1`` before it:

========== ============ ====== ===========================================
window     slot         span   counted
========== ============ ====== ===========================================
second     25 ms        45     the last 1.100–1.125 s
pace       25 ms        8      the last 175–200 ms (a fifth of the second's)
hour       1 min        61     the last 60–61 min
day        15 min       97     the last 24 h–24 h 15 min
warm-up    UTC day      1      today (the plan's cap is per calendar day)
========== ============ ====== ===========================================

Counting more than the window holds makes the sliding limits strict: any window of the
nominal length (any second, any hour, any 24 hours) sees at most the allowance. The
second keeps a 100 ms margin, since the relay sees a granted burst a little later and
spread out; the price is throughput: 20/s lets 20 through per 1.1–1.125 s.

**Reserving** is set-based and shared: one transaction per batch takes a transaction
lock per key (PostgreSQL advisory locks, in key order so two workers never deadlock;
SQLite's ``BEGIN IMMEDIATE`` already serialises writers), reads the counted slots of every
key of the batch in one query, grants each lane (rows of one relay and one From domain)
the minimum left under all its keys, writes the grants back in one multi-row upsert and
deletes slots that no longer count. Tokens are computed before they are written, so
nothing has to be handed back when a tighter key grants less than a looser one.

**Rows over the allowance** go back to ``queued`` in the same transaction, with
``next_attempt_at`` at the moment their window reopens (later rows a window further
each, so they do not all come back at once), their attempt not counted and no event
written: waiting for a rate limit is not a delivery attempt.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from sqlalchemy import BigInteger, Table, and_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.models.delivery import Delivery
from postroom.models.domains import SendingDomain
from postroom.models.relays import RateLimitSlot

if TYPE_CHECKING:
    # Only for annotations: the domains package imports this module for WarmupPlan, and
    # the engine's modules import the domains package.
    from postroom.context import AppContext
    from postroom.delivery.batch_loader import BatchData
    from postroom.delivery.ledger import Claimed
    from postroom.delivery.transport import Transport
    from postroom.delivery.transports import RelayPauses, TransportFor

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_DELIVERIES = cast(Table, Delivery.__table__)
_SLOTS = cast(Table, RateLimitSlot.__table__)


# --- windows and limits ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    code: str  # the key suffix
    slot_us: int  # slot length in microseconds
    span: int  # slots counted, the current one included
    length: timedelta  # the nominal window

    def slot(self, now: datetime) -> int:
        return ((now - _EPOCH) // _MICRO) // self.slot_us

    def slot_start(self, slot: int) -> datetime:
        return _EPOCH + timedelta(microseconds=slot * self.slot_us)

    @property
    def counted(self) -> timedelta:
        """How long a grant keeps counting (the window plus one slot)."""
        return timedelta(microseconds=self.slot_us * self.span)

    def expires_at(self, slot: int) -> datetime:
        """When a grant in ``slot`` stops counting."""
        return self.slot_start(slot + self.span)


# The second's window keeps a 100 ms margin (44 full slots of 25 ms, plus the current):
# bursts granted at least 1.1 s apart still reach the relay at most ``allowed`` to any
# second when composing, the network and the relay's clock add jitter.
PER_SECOND = Window("s", 25_000, 45, timedelta(seconds=1))
PER_HOUR = Window("h", 60_000_000, 61, timedelta(hours=1))
PER_DAY = Window("d", 900_000_000, 97, timedelta(days=1))
CALENDAR_DAY = Window("w", 86_400_000_000, 1, timedelta(days=1))


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    window: Window
    allowed: int


# A per-second limit is also paced: at most a fifth of it per 175–200 ms, so a second's
# allowance leaves in five small bursts, not one. A burst that reaches the relay late
# then overlaps the next second by a fifth at most. (Five paced bursts take 0.9–1.0 s:
# the second's window, not the pace, bounds the throughput.)
PACE = Window("p", 25_000, 8, timedelta(milliseconds=175))
PACE_PARTS = 5


def _limits(
    prefix: str, per_second: int | None, per_hour: int | None, per_day: int | None
) -> list[Limit]:
    pairs = ((PER_SECOND, per_second), (PER_HOUR, per_hour), (PER_DAY, per_day))
    found = [
        Limit(f"{prefix}:{window.code}", window, allowed)
        for window, allowed in pairs
        if allowed is not None
    ]
    if per_second is not None:
        found.append(Limit(f"{prefix}:{PACE.code}", PACE, math.ceil(per_second / PACE_PARTS)))
    return found


def relay_limits(transport: Transport) -> list[Limit]:
    """The limits of a workspace relay (the instance default relay has none)."""
    from postroom.delivery.transports import RelayTransport

    if not isinstance(transport, RelayTransport):
        return []
    relay = transport.relay
    return _limits(f"relay:{relay.id}", relay.per_second, relay.per_hour, relay.per_day)


# --- warm-up ---------------------------------------------------------------------------------

WARMUP_MAX_DAYS = 365


@dataclass(frozen=True, slots=True)
class WarmupPlan:
    """A daily cap that starts at ``initial_per_day`` on ``start_date`` and grows by
    ``growth_factor`` each day until ``max_per_day``. Before the start date the first
    day's cap applies: a domain with a plan never sends unramped."""

    start_date: date
    initial_per_day: int
    growth_factor: float
    max_per_day: int

    def day_index(self, day: date) -> int:
        return max((day - self.start_date).days, 0)

    def cap_on(self, day: date) -> int:
        index = self.day_index(day)
        try:
            grown = self.initial_per_day * self.growth_factor**index
        except OverflowError:
            return self.max_per_day
        if not math.isfinite(grown):
            return self.max_per_day
        return max(1, min(self.max_per_day, math.floor(grown)))

    def completed_on(self, day: date) -> bool:
        return self.cap_on(day) >= self.max_per_day

    def schedule(self, first: date, days: int) -> list[tuple[date, int]]:
        return [
            (first + timedelta(days=i), self.cap_on(first + timedelta(days=i))) for i in range(days)
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "start_date": self.start_date.isoformat(),
            "initial_per_day": self.initial_per_day,
            "growth_factor": self.growth_factor,
            "max_per_day": self.max_per_day,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WarmupPlan:
        return cls(
            start_date=date.fromisoformat(str(data["start_date"])),
            initial_per_day=int(data["initial_per_day"]),
            growth_factor=float(data["growth_factor"]),
            max_per_day=int(data["max_per_day"]),
        )


def warmup_key(domain_id: uuid.UUID) -> str:
    return f"warmup:{domain_id}"


@dataclass(frozen=True, slots=True)
class DomainLimits:
    id: uuid.UUID
    per_second: int | None
    per_hour: int | None
    per_day: int | None
    warmup: WarmupPlan | None

    def limits(self, today: date) -> list[Limit]:
        found = _limits(f"domain:{self.id}", self.per_second, self.per_hour, self.per_day)
        if self.warmup is not None:
            found.append(Limit(warmup_key(self.id), CALENDAR_DAY, self.warmup.cap_on(today)))
        return found


async def used_today(session: AsyncSession, domain_id: uuid.UUID, now: datetime) -> int:
    """Messages the warm-up counter has granted today (UTC)."""
    query = select(RateLimitSlot.used).where(
        RateLimitSlot.key == warmup_key(domain_id), RateLimitSlot.slot == CALENDAR_DAY.slot(now)
    )
    return int((await session.execute(query)).scalar() or 0)


# --- reserving ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Lane:
    """Rows that share every limit (one relay, one From domain) and how many want to go."""

    limits: list[Limit]
    wanted: int
    granted: int = 0
    retry_at: datetime | None = None  # when the binding window lets more through
    binding: Limit | None = None

    def retry_time(self, index: int) -> datetime:
        """When the ``index``-th row over the allowance should come back: later rows one
        counted window further each for sliding windows. A warm-up day's cap grows, so all of
        its rows come back at the next day's start (those over it wait one more day)."""
        assert self.retry_at is not None and self.binding is not None
        window = self.binding.window
        if window.span == 1:
            return self.retry_at
        return self.retry_at + window.counted * (index // self.binding.allowed)


def _lock_id(key: str) -> int:
    """A stable signed 64-bit advisory lock id for a limit key."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _reopens(limit: Limit, counts: Mapping[int, int], current: int) -> datetime:
    """The start of the first slot in which the counted total drops below the allowance."""
    window = limit.window
    for step in range(1, window.span + 1):
        oldest = current + step - window.span + 1
        if sum(used for slot, used in counts.items() if slot >= oldest) < limit.allowed:
            return window.slot_start(current + step)
    return window.slot_start(current + window.span)


async def reserve(
    session: AsyncSession, dialect: str, lanes: Sequence[Lane], now: datetime
) -> None:
    """Grant each lane what every one of its limits still allows (see the module doc).
    Runs inside the caller's transaction; the grants are held once it commits."""
    by_key: dict[str, Limit] = {}
    for lane in lanes:
        for limit in lane.limits:
            known = by_key.get(limit.key)
            # Two caches may disagree for a moment after a change: the tighter one wins.
            if known is None or limit.allowed < known.allowed:
                by_key[limit.key] = limit
    if not by_key:
        for lane in lanes:
            lane.granted = lane.wanted
        return
    keys = sorted(by_key)
    if dialect == "postgresql":
        for key in keys:  # in key order: two reservers never wait on each other in a cycle
            lock = bindparam("lock_id", _lock_id(key), type_=BigInteger)
            await session.execute(select(func.pg_advisory_xact_lock(lock)))
    rows = await session.execute(
        select(RateLimitSlot.key, RateLimitSlot.slot, RateLimitSlot.used).where(
            RateLimitSlot.key.in_(keys), RateLimitSlot.expires_at > now
        )
    )
    current = {key: limit.window.slot(now) for key, limit in by_key.items()}
    counts: dict[str, dict[int, int]] = {key: {} for key in keys}
    for key, slot, used in rows.all():
        oldest = current[key] - by_key[key].window.span + 1
        if oldest <= slot <= current[key]:
            counts[key][slot] = counts[key].get(slot, 0) + int(used)
    remaining = {key: max(0, by_key[key].allowed - sum(counts[key].values())) for key in keys}
    added = dict.fromkeys(keys, 0)
    for lane in lanes:
        lane_keys = sorted({limit.key for limit in lane.limits})
        grant = min([lane.wanted, *(remaining[key] for key in lane_keys)])
        lane.granted = grant
        for key in lane_keys:
            remaining[key] -= grant
            added[key] += grant
            slots = counts[key]
            slots[current[key]] = slots.get(current[key], 0) + grant
        if grant < lane.wanted:
            exhausted = [key for key in lane_keys if remaining[key] == 0]
            reopen = {key: _reopens(by_key[key], counts[key], current[key]) for key in exhausted}
            latest = max(exhausted, key=lambda key: reopen[key])
            lane.retry_at, lane.binding = reopen[latest], by_key[latest]
    grants = [
        {
            "key": key,
            "slot": current[key],
            "used": added[key],
            "expires_at": by_key[key].window.expires_at(current[key]),
        }
        for key in keys
        if added[key] > 0
    ]
    if grants:
        insert = (pg_insert if dialect == "postgresql" else sqlite_insert)(RateLimitSlot)
        upsert = insert.values(grants)
        await session.execute(
            upsert.on_conflict_do_update(
                index_elements=[RateLimitSlot.key, RateLimitSlot.slot],
                set_={"used": RateLimitSlot.used + upsert.excluded.used},
            )
        )
    await session.execute(
        delete(RateLimitSlot)
        .where(RateLimitSlot.key.in_(keys), RateLimitSlot.expires_at <= now)
        .execution_options(synchronize_session=False)
    )


async def prune_rate_limit_slots(session: AsyncSession, ctx: AppContext) -> int:
    """Scheduler task: delete counters that no longer count (reservations prune their own
    keys; this catches keys nobody reserves any more, such as deleted relays')."""
    result = await session.execute(
        delete(RateLimitSlot)
        .where(RateLimitSlot.expires_at <= ctx.clock.now())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def postpone(
    session: AsyncSession, owner: str, rows: Sequence[tuple[uuid.UUID, datetime]], now: datetime
) -> int:
    """Hand claimed rows back until ``next_attempt_at``: queued, attempt not counted."""
    if not rows:
        return 0
    statement = (
        update(_DELIVERIES)
        .where(
            and_(
                _DELIVERIES.c.id == bindparam("_id"),
                _DELIVERIES.c.status == "sending",
                _DELIVERIES.c.lease_owner == owner,
            )
        )
        .values(
            status="queued",
            lease_owner=None,
            lease_expires_at=None,
            attempts=_DELIVERIES.c.attempts - 1,
            next_attempt_at=bindparam("v_at"),
            updated_at=now,
        )
    )
    result = await session.execute(statement, [{"_id": row_id, "v_at": at} for row_id, at in rows])
    return int(getattr(result, "rowcount", 0) or 0)


# --- the engine's gate -------------------------------------------------------------------------


class Outgoing(Protocol):
    @property
    def row(self) -> Claimed: ...


T = TypeVar("T", bound=Outgoing)


@dataclass(slots=True)
class _Group(Generic[T]):
    transport: Transport
    items: list[T] = field(default_factory=list)
    workspaces: set[uuid.UUID] = field(default_factory=set)


class DomainLimitCache:
    """Sending domains' limits per workspace, re-read at most every few seconds."""

    def __init__(self, ctx: AppContext, refresh_seconds: float) -> None:
        self.ctx = ctx
        self.refresh_seconds = refresh_seconds
        self._cache: dict[uuid.UUID, tuple[float, dict[str, DomainLimits]]] = {}

    async def load(self, workspace_ids: Sequence[uuid.UUID]) -> None:
        moment = time.monotonic()
        stale = [
            workspace_id
            for workspace_id in workspace_ids
            if workspace_id not in self._cache
            or moment - self._cache[workspace_id][0] >= self.refresh_seconds
        ]
        if not stale:
            return
        query = select(
            SendingDomain.id,
            SendingDomain.workspace_id,
            SendingDomain.domain,
            SendingDomain.rate_per_second,
            SendingDomain.rate_per_hour,
            SendingDomain.rate_per_day,
            SendingDomain.warmup,
        ).where(SendingDomain.workspace_id.in_(stale))
        found: dict[uuid.UUID, dict[str, DomainLimits]] = {w: {} for w in stale}
        async with self.ctx.db.read_sessions() as session:
            for row in (await session.execute(query)).all():
                plan = WarmupPlan.from_json(row.warmup) if row.warmup else None
                rates = (row.rate_per_second, row.rate_per_hour, row.rate_per_day)
                if plan is None and all(rate is None for rate in rates):
                    continue
                found[row.workspace_id][row.domain] = DomainLimits(
                    row.id, row.rate_per_second, row.rate_per_hour, row.rate_per_day, plan
                )
        for workspace_id, domains in found.items():
            self._cache[workspace_id] = (moment, domains)

    def limited(self, workspace_id: uuid.UUID) -> bool:
        """Whether any sending domain of the workspace has a limit or a warm-up plan."""
        entry = self._cache.get(workspace_id)
        return bool(entry and entry[1])

    def limits(self, workspace_id: uuid.UUID, domain: str, today: date) -> list[Limit]:
        entry = self._cache.get(workspace_id)
        found = entry[1].get(domain) if entry else None
        return found.limits(today) if found else []


def from_domain(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(">").lower()


class SendGate:
    """Between building messages and SMTP: which transport carries each workspace's rows
    (``transport_for``, prepared first when it can read relays) and how many of them the
    rate limits let through now. The rest is postponed (see the module doc)."""

    def __init__(self, ctx: AppContext, transport_for: TransportFor, pauses: RelayPauses) -> None:
        self.ctx = ctx
        self.transport_for = transport_for
        self.pauses = pauses
        self.domains = DomainLimitCache(ctx, ctx.settings.relay_refresh_seconds)
        self.postponed = 0  # rows handed back by this process, for metrics and tests

    async def route(
        self, outgoing: Mapping[uuid.UUID, Sequence[T]], batch: BatchData, owner: str
    ) -> list[tuple[Transport, list[T]]]:
        workspace_ids = list(outgoing)
        prepare = getattr(self.transport_for, "prepare", None)
        if prepare is not None:
            await prepare(workspace_ids)
        groups: dict[int, _Group[T]] = {}
        for workspace_id, items in outgoing.items():
            transport = self.transport_for(workspace_id)
            group = groups.setdefault(id(transport), _Group(transport))
            group.items.extend(items)
            group.workspaces.add(workspace_id)
        await self.domains.load(workspace_ids)
        now = self.ctx.clock.now()
        lanes: list[tuple[Lane, list[T]]] = []
        for group in groups.values():
            if self.pauses.paused_until(group.transport, now) is not None:
                continue  # not attempted anyway: no tokens spent on it
            relay = relay_limits(group.transport)
            if not relay and not any(self.domains.limited(w) for w in group.workspaces):
                continue  # the common case: nothing limits these rows
            by_domain: dict[tuple[uuid.UUID, str], list[T]] = {}
            for item in group.items:
                bundle = batch.bundles.get(item.row.send_id)
                domain = from_domain(bundle.send.from_email) if bundle else ""
                by_domain.setdefault((item.row.workspace_id, domain), []).append(item)
            for (workspace_id, domain), items in by_domain.items():
                limits = relay + self.domains.limits(workspace_id, domain, now.date())
                if limits:
                    lanes.append((Lane(limits, len(items)), items))
        if not lanes:
            return [(group.transport, group.items) for group in groups.values()]
        held: set[int] = set()
        async with self.ctx.db.transaction() as session:
            await reserve(session, self.ctx.db.dialect, [lane for lane, _ in lanes], now)
            later: list[tuple[uuid.UUID, datetime]] = []
            for lane, items in lanes:
                for index, item in enumerate(items[lane.granted :]):
                    held.add(id(item))
                    later.append((item.row.id, lane.retry_time(index)))
            await postpone(session, owner, later, now)
        self.postponed += len(held)
        routed = []
        for group in groups.values():
            items = [item for item in group.items if id(item) not in held]
            if items:
                routed.append((group.transport, items))
        return routed
