"""The outbox: events become webhook deliveries, set-based, after a persisted cursor.

Events are written in the transaction of the change they tell of, so a rolled-back change
left no event row and nothing is ever sent for it. A scheduler tick reads the events after
``webhook_outbox.scanned_seq`` (a batch) and writes, with ONE ``INSERT … SELECT``, a
delivery for every (event, enabled endpoint of its workspace whose types match), copying
the payload, then moves the cursor — all in one transaction, so a crash repeats nothing
and loses nothing.

Holes. On PostgreSQL ``seq`` comes from a sequence: a transaction that has taken a number
but not yet committed is invisible while later numbers are already readable, and a
rolled-back insert burns its number for good. A missing number is therefore remembered as
a hole (``[low, high, first seen]``) and looked for again on every tick; when it appears
its events are fanned out then; after ``webhooks_outbox_hole_seconds`` it is taken as
rolled back and forgotten. On SQLite writers are serialised and commit in ``seq`` order,
so holes only come from deleted events (GDPR erase) and are harmless.

Concurrency: the cursor row is locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL — a
second scheduler just skips its turn; ``BEGIN IMMEDIATE`` on SQLite).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    exists,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.models.base import UTCDateTime
from postroom.models.contacts import Contact
from postroom.models.platform import Event
from postroom.models.webhooks import (
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookOutbox,
)

CURSOR = "events"
MAX_HOLES = 1000

# A delivery id made in SQL, UUIDv7-shaped: the event id's first 64 bits (its millisecond
# time, version and 12 random bits) and 60 fresh random bits, so the log lists in event
# order and every (event, endpoint) gets its own id. (Uuid is 32 hex digits on SQLite.)
_SQLITE_ID = "substr(events.id, 1, 16) || '8' || substr(lower(hex(randomblob(8))), 2)"
_PG_ID = (
    "CAST(substr(replace(CAST(events.id AS text), '-', ''), 1, 16) || '8' || "
    "substr(md5(random()::text || clock_timestamp()::text), 2, 15) AS uuid)"
)
_DELIVERY_COLUMNS = (
    "id",
    "workspace_id",
    "endpoint_id",
    "kind",
    "event_id",
    "event_type",
    "contact_id",
    "contact_email",
    "resource_type",
    "resource_id",
    "data",
    "occurred_at",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
)

Hole = tuple[int, int, datetime]


def type_matches() -> ColumnElement[bool]:
    """The endpoint (``webhook_endpoints`` in the query) listens to ``events.type``."""
    pattern = WebhookEventType.event_type
    prefix_match = func.substr(Event.type, 1, func.length(pattern)) == pattern
    return exists().where(
        WebhookEventType.endpoint_id == WebhookEndpoint.id,
        or_(
            and_(not_(WebhookEventType.is_prefix), pattern == Event.type),
            and_(WebhookEventType.is_prefix, prefix_match),
        ),
    )


async def fan_out(session: AsyncSession, ctx: AppContext) -> int:
    """One batch of events into deliveries; returns the number of deliveries made."""
    now = ctx.clock.now()
    dialect = session.get_bind().dialect.name
    state = await _lock_cursor(session, now, dialect)
    if state is None:
        return 0  # another scheduler holds the cursor this tick
    scanned, holes = state
    grace = timedelta(seconds=ctx.settings.webhooks_outbox_hole_seconds)

    listening = await session.scalar(
        select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True)).limit(1)
    )
    if listening is None:
        # Nobody listens: skip to the end (an endpoint made later hears only later events).
        top = max(scanned, int(await session.scalar(select(func.max(Event.seq))) or 0))
        if top != scanned or holes:
            await _save(session, top, [], now)
        return 0

    new_seqs = list(
        (
            await session.execute(
                select(Event.seq)
                .where(Event.seq > scanned)
                .order_by(Event.seq)
                .limit(ctx.settings.webhooks_outbox_batch)
            )
        ).scalars()
    )
    in_holes = [Event.seq.between(low, high) for low, high, _ in holes]
    found = (
        list((await session.execute(select(Event.seq).where(or_(*in_holes)))).scalars())
        if in_holes
        else []
    )
    high = new_seqs[-1] if new_seqs else scanned
    made = 0
    if new_seqs or found:
        condition = or_(and_(Event.seq > scanned, Event.seq <= high), *in_holes)
        made = await _insert_deliveries(session, condition, now, dialect)
    remaining = _remaining_holes(holes, found, now, grace) + _new_holes(scanned, new_seqs, now)
    if high != scanned or remaining != holes:  # an idle tick writes nothing
        await _save(session, high, remaining[-MAX_HOLES:], now)
    return made


async def _insert_deliveries(
    session: AsyncSession, condition: ColumnElement[bool], now: datetime, dialect: str
) -> int:
    stamp = literal(now, UTCDateTime())
    columns: list[Any] = [
        literal_column(_PG_ID if dialect == "postgresql" else _SQLITE_ID),
        Event.workspace_id,
        WebhookEndpoint.id,
        literal("event"),
        Event.id,
        Event.type,
        Event.contact_id,
        Contact.email,
        Event.resource_type,
        Event.resource_id,
        Event.data,
        Event.occurred_at,
        literal("pending"),
        literal(0),
        stamp,
        stamp,
        stamp,
    ]
    query = (
        select(*columns)
        .select_from(Event)
        .join(
            WebhookEndpoint,
            and_(
                WebhookEndpoint.workspace_id == Event.workspace_id,
                WebhookEndpoint.enabled.is_(True),
                WebhookEndpoint.created_at <= Event.occurred_at,
            ),
        )
        .outerjoin(Contact, Contact.id == Event.contact_id)
        .where(condition, type_matches())
    )
    table = cast(Table, WebhookDelivery.__table__)
    # RETURNING for the count: psycopg's async rowcount is -1 for INSERT … SELECT here.
    statement = insert(table).from_select(list(_DELIVERY_COLUMNS), query)
    result = await session.execute(statement.returning(table.c.id))
    return len(result.all())


async def _lock_cursor(
    session: AsyncSession, now: datetime, dialect: str
) -> tuple[int, list[Hole]] | None:
    values = {"name": CURSOR, "scanned_seq": 0, "holes": [], "updated_at": now}
    if dialect == "postgresql":
        await session.execute(pg_insert(WebhookOutbox).values(values).on_conflict_do_nothing())
    else:
        await session.execute(sqlite_insert(WebhookOutbox).values(values).on_conflict_do_nothing())
    query = select(WebhookOutbox.scanned_seq, WebhookOutbox.holes).where(
        WebhookOutbox.name == CURSOR
    )
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = (await session.execute(query)).first()
    if row is None:
        return None
    holes = [(int(h[0]), int(h[1]), datetime.fromisoformat(h[2])) for h in row.holes or []]
    return int(row.scanned_seq), holes


async def _save(session: AsyncSession, scanned: int, holes: list[Hole], now: datetime) -> None:
    stored: list[Any] = [[low, high, since.isoformat()] for low, high, since in holes]
    await session.execute(
        update(WebhookOutbox)
        .where(WebhookOutbox.name == CURSOR)
        .values(scanned_seq=scanned, holes=stored, updated_at=now)
    )


def _new_holes(scanned: int, seqs: list[int], now: datetime) -> list[Hole]:
    holes: list[Hole] = []
    previous = scanned
    for seq in seqs:
        if seq > previous + 1:
            holes.append((previous + 1, seq - 1, now))
        previous = seq
    return holes


def _remaining_holes(
    holes: list[Hole], found: list[int], now: datetime, grace: timedelta
) -> list[Hole]:
    """The holes minus the numbers that have appeared, without the ones too old to fill."""
    seen = sorted(found)
    remaining: list[Hole] = []
    for low, high, since in holes:
        if now - since > grace:
            continue
        start = low
        for seq in seen:
            if low <= seq <= high:
                if seq > start:
                    remaining.append((start, seq - 1, since))
                start = seq + 1
        if start <= high:
            remaining.append((start, high, since))
    return remaining
