"""The analytics consumer: reads ``events`` after a persisted cursor and adds them to the
counter tables (``postroom.models.analytics``), set-based.

One batch is a range of event seqs ``(lo, hi]``. It is applied in the caller's
transaction:

1. the batch's ``email.*`` events of deliveries are classified into ``analytics_batch``
   with one ``INSERT … SELECT`` (joined to the delivery for its send, contact, recipient
   domain and send time; test sends are left out);
2. clicks on several links of one message within the same second become machine clicks;
3. first opens/clicks per delivery go into ``analytics_firsts`` and first clicks per
   (send, link, delivery) into ``analytics_link_clickers`` with ON CONFLICT DO NOTHING /
   DO UPDATE; the rows whose ``first_seq`` lies in this batch are the new ones, and mark
   the batch rows that count towards the *unique* counters;
4. one ``INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE`` per counter table;
5. the cursor moves from ``lo`` to ``hi`` with a conditional UPDATE (``WHERE last_seq =
   lo``) and the scratch rows are deleted.

Everything commits together or not at all, so a batch is never counted twice: running the
consumer again finds nothing after the cursor, and two consumers serialize on the cursor
row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL: the second one finds it taken and does
nothing this tick; SQLite write transactions are ``BEGIN IMMEDIATE``); if
one ever found the cursor moved under it, the conditional advance fails and its
transaction rolls back.

**Why a safe lag on PostgreSQL.** ``events.seq`` comes from a sequence when the row is
inserted, but transactions commit in any order: a buffered open/click flush (or an engine
batch) can take seq 100 and commit after another took seq 101 and committed. A cursor that
jumped to 101 would never see 100. So the consumer only reads up to ``safe_seq``: the
highest seq that was visible at least ``analytics_lag_seconds`` (10 s) ago. Any seq at or
below it was handed out before that moment, and every transaction that writes events
(engine batches, the one-second engagement buffer, feedback, API calls) finishes well
within the lag, so those rows are committed (or rolled back, leaving a harmless gap).
Counters therefore trail by 10–20 s. A per-row "processed" marker was rejected: it costs
a write per event (a million for a million-recipient campaign) and an index to find the
unmarked rows. On SQLite no lag is needed: the consumer's ``BEGIN IMMEDIATE`` waits until
no other write transaction is open, so every seq up to ``max(seq)`` is committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.logging import get_logger
from postroom.models.analytics import COUNTERS

log = get_logger(__name__)

CURSOR = "counters"


class CursorMoved(RuntimeError):
    """Another consumer applied the range first; this transaction must roll back."""


# Clicks on this many different links of one message within one second: a scanner.
BURST_LINKS = 3

_METRICS = {
    "email.sent": "sent",
    "email.deferred": "deferred",
    "email.bounced": "bounced",
    "email.complained": "complained",
    "email.failed": "failed",
    "email.skipped": "skipped",
    "email.unsubscribed": "unsubscribed",
    "email.replied": "replied",
    "email.opened": "open",
    "email.clicked": "click",
}

# How each counter is summed from the classified batch rows.
_SUMS = {
    "sent": "metric = 'sent'",
    "late_bounced": "metric = 'bounced' AND late = 1",
    "deferred": "metric = 'deferred'",
    "bounced": "metric = 'bounced'",
    "complained": "metric = 'complained'",
    "failed": "metric = 'failed'",
    "skipped": "metric = 'skipped'",
    "unsubscribed": "metric = 'unsubscribed'",
    "replied": "metric = 'replied'",
    "opens": "metric = 'open'",
    "machine_opens": "metric = 'open' AND machine = 1",
    "unique_opens": "metric = 'open' AND first_any = 1",
    "unique_human_opens": "metric = 'open' AND first_human = 1",
    "clicks": "metric = 'click'",
    "machine_clicks": "metric = 'click' AND machine = 1",
    "unique_clicks": "metric = 'click' AND first_any = 1",
    "unique_human_clicks": "metric = 'click' AND first_human = 1",
}
assert set(_SUMS) == set(COUNTERS)


@dataclass(frozen=True, slots=True)
class _Dialect:
    json: str  # format with {key}
    hour: str
    day: str
    second: str
    domain: str
    fast_click: str


_PG = _Dialect(
    json="(e.data ->> '{key}')",
    hour="date_trunc('hour', e.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    day="CAST(e.occurred_at AT TIME ZONE 'UTC' AS date)",
    second="CAST(floor(extract(epoch FROM e.occurred_at)) AS bigint)",
    domain="lower(split_part(d.email, '@', 2))",
    fast_click="e.occurred_at < d.sent_at + make_interval(secs => :fast)",
)
_SQLITE = _Dialect(
    json="json_extract(e.data, '$.{key}')",
    # Bound formats: a literal "%H:00" would read as a bind parameter in text().
    hour="strftime(:hour_format, e.occurred_at)",
    day="date(e.occurred_at)",
    second="CAST(strftime('%s', e.occurred_at) AS INTEGER)",
    domain="lower(substr(d.email, instr(d.email, '@') + 1))",
    fast_click="julianday(e.occurred_at) < julianday(d.sent_at) + :fast / 86400.0",
)


def _classify_sql(d: _Dialect) -> str:
    metric = " ".join(f"WHEN '{t}' THEN '{m}'" for t, m in _METRICS.items())
    types = ", ".join(f"'{t}'" for t in _METRICS)
    machine = d.json.format(key="machine")
    return f"""
INSERT INTO analytics_batch (seq, workspace_id, send_id, campaign_id, delivery_id, contact_id,
    metric, machine, late, first_any, first_human, first_link, link_id, url, domain, hour, day,
    second, occurred_at)
SELECT e.seq, e.workspace_id, d.send_id, s.campaign_id, d.id, d.contact_id,
    CASE e.type {metric} END,
    CASE
        WHEN e.type IN ('email.opened', 'email.clicked') AND {machine} IS NOT NULL THEN 1
        WHEN e.type = 'email.clicked' AND d.sent_at IS NOT NULL AND {d.fast_click} THEN 1
        ELSE 0
    END,
    CASE WHEN e.type = 'email.bounced' AND d.sent_at IS NOT NULL THEN 1 ELSE 0 END,
    0, 0, 0,
    CASE WHEN e.type = 'email.clicked' THEN coalesce({d.json.format(key="link_id")}, '-') END,
    CASE WHEN e.type = 'email.clicked' THEN {d.json.format(key="url")} END,
    {d.domain}, {d.hour}, {d.day}, {d.second}, e.occurred_at
FROM events e
JOIN deliveries d ON d.id = e.resource_id
JOIN sends s ON s.id = d.send_id
WHERE e.seq > :lo AND e.seq <= :hi
    AND e.resource_type = 'delivery'
    AND e.type IN ({types})
    AND s.kind <> 'test'
"""


_BURST = f"""
UPDATE analytics_batch SET machine = 1
WHERE metric = 'click' AND machine = 0 AND (delivery_id, second) IN (
    SELECT delivery_id, second FROM analytics_batch WHERE metric = 'click'
    GROUP BY delivery_id, second HAVING count(DISTINCT link_id) >= {BURST_LINKS}
)
"""

_FIRSTS = """
INSERT INTO analytics_firsts (send_id, delivery_id, kind, contact_id, first_seq, first_at)
SELECT send_id, delivery_id, metric, contact_id, min(seq), min(occurred_at)
FROM analytics_batch WHERE metric IN ('open', 'click')
GROUP BY send_id, delivery_id, metric, contact_id
UNION ALL
SELECT send_id, delivery_id, metric || '_h', contact_id, min(seq), min(occurred_at)
FROM analytics_batch WHERE metric IN ('open', 'click') AND machine = 0
GROUP BY send_id, delivery_id, metric, contact_id
ON CONFLICT (send_id, delivery_id, kind) DO NOTHING
"""

_MARK_FIRSTS = """
UPDATE analytics_batch SET {column} = 1 WHERE seq IN (
    SELECT first_seq FROM analytics_firsts
    WHERE first_seq > :lo AND first_seq <= :hi AND kind IN ({kinds})
)
"""

_CLICKERS = """
INSERT INTO analytics_link_clickers (send_id, link_id, delivery_id, contact_id, clicks,
    machine_clicks, first_seq, first_at, last_at)
SELECT send_id, link_id, delivery_id, contact_id, count(*), sum(machine), min(seq),
    min(occurred_at), max(occurred_at)
FROM analytics_batch WHERE metric = 'click'
GROUP BY send_id, link_id, delivery_id, contact_id
ON CONFLICT (send_id, link_id, delivery_id) DO UPDATE SET
    clicks = analytics_link_clickers.clicks + excluded.clicks,
    machine_clicks = analytics_link_clickers.machine_clicks + excluded.machine_clicks,
    last_at = CASE WHEN excluded.last_at > analytics_link_clickers.last_at
        THEN excluded.last_at ELSE analytics_link_clickers.last_at END
"""

_MARK_LINK_FIRSTS = """
UPDATE analytics_batch SET first_link = 1 WHERE seq IN (
    SELECT first_seq FROM analytics_link_clickers WHERE first_seq > :lo AND first_seq <= :hi
)
"""

_LINKS = """
INSERT INTO analytics_links (send_id, link_id, url, clicks, machine_clicks, unique_clicks)
SELECT send_id, link_id, max(url), count(*), sum(machine), sum(first_link)
FROM analytics_batch WHERE metric = 'click'
GROUP BY send_id, link_id
ON CONFLICT (send_id, link_id) DO UPDATE SET
    clicks = analytics_links.clicks + excluded.clicks,
    machine_clicks = analytics_links.machine_clicks + excluded.machine_clicks,
    unique_clicks = analytics_links.unique_clicks + excluded.unique_clicks
"""


def _counter_sql(table: str, keys: tuple[str, ...], conflict: tuple[str, ...]) -> str:
    names = ", ".join(COUNTERS)
    sums = ", ".join(f"sum(CASE WHEN {_SUMS[c]} THEN 1 ELSE 0 END)" for c in COUNTERS)
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COUNTERS)
    key_list = ", ".join(keys)
    # "WHERE true": SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT.
    return (
        f"INSERT INTO {table} ({key_list}, {names}) "
        f"SELECT {key_list}, {sums} FROM analytics_batch WHERE true GROUP BY {key_list} "
        f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {updates}"
    )


_COUNTER_TABLES = (
    _counter_sql("analytics_send_stats", ("send_id", "workspace_id", "campaign_id"), ("send_id",)),
    _counter_sql("analytics_hourly", ("send_id", "hour"), ("send_id", "hour")),
    _counter_sql("analytics_domains", ("send_id", "domain"), ("send_id", "domain")),
    _counter_sql("analytics_daily", ("workspace_id", "day"), ("workspace_id", "day")),
)


@dataclass(slots=True)
class _Cursor:
    last_seq: int
    safe_seq: int
    horizon_seq: int
    horizon_at: datetime


async def _lock_cursor(session: AsyncSession, now: datetime, dialect: str) -> _Cursor | None:
    """The cursor row, locked; ``None`` when another consumer holds it (PostgreSQL:
    ``SKIP LOCKED``, so a second scheduler does not queue behind the first)."""
    params = {"name": CURSOR, "now": _db_time(now, dialect)}
    await session.execute(
        text(
            "INSERT INTO analytics_cursor (name, last_seq, safe_seq, horizon_seq, horizon_at, "
            "events_applied, updated_at) "
            "SELECT :name, 0, 0, coalesce(max(seq), 0), :now, 0, :now FROM events WHERE true "
            "ON CONFLICT (name) DO NOTHING"
        ),
        params,
    )
    lock = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    row = (
        await session.execute(
            text(
                "SELECT last_seq, safe_seq, horizon_seq, horizon_at FROM analytics_cursor "
                f"WHERE name = :name{lock}"
            ),
            params,
        )
    ).first()
    if row is None:
        return None
    return _Cursor(int(row[0]), int(row[1]), int(row[2]), _read_time(row[3]))


def _db_time(value: datetime, dialect: str) -> Any:
    # text() binds skip the UTCDateTime type: store what the ORM would (naive UTC on SQLite).
    if dialect == "sqlite":
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


def _read_time(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _safe_limit(
    session: AsyncSession, cursor: _Cursor, now: datetime, lag: timedelta, dialect: str
) -> int:
    """The highest seq this run may read (see the module docstring)."""
    max_seq = int(
        (await session.execute(text("SELECT coalesce(max(seq), 0) FROM events"))).scalar_one()
    )
    if dialect != "postgresql" or lag <= timedelta(0):
        return max_seq
    safe = cursor.safe_seq
    if cursor.horizon_at <= now - lag:
        safe = max(safe, cursor.horizon_seq)
        await session.execute(
            text(
                "UPDATE analytics_cursor SET safe_seq = :safe, horizon_seq = :seq, "
                "horizon_at = :now WHERE name = :name"
            ),
            {"safe": safe, "seq": max_seq, "now": now, "name": CURSOR},
        )
    return safe


async def apply_batch(session: AsyncSession, lo: int, hi: int, *, dialect: str, fast: int) -> int:
    """Add events ``(lo, hi]`` to the counters; returns how many were counted."""
    d = _PG if dialect == "postgresql" else _SQLITE
    bounds = {"lo": lo, "hi": hi}
    classify_params: dict[str, Any] = {**bounds, "fast": fast}
    if dialect != "postgresql":
        classify_params["hour_format"] = "%Y-%m-%d %H:00:00.000000"
    await session.execute(text("DELETE FROM analytics_batch"))
    inserted = await session.execute(text(_classify_sql(d)), classify_params)
    counted = int(getattr(inserted, "rowcount", 0) or 0)
    if counted == 0:
        return 0
    if dialect == "postgresql" and counted >= 2_000:
        # The scratch table is empty whenever autovacuum looks at it; without fresh
        # statistics the planner takes nested loops over 50,000 rows (seconds, not ms).
        # Small batches (the steady state) are fine either way.
        await session.execute(text("ANALYZE analytics_batch"))
    await session.execute(text(_BURST))
    await session.execute(text(_FIRSTS))
    await session.execute(
        text(_MARK_FIRSTS.format(column="first_any", kinds="'open', 'click'")), bounds
    )
    await session.execute(
        text(_MARK_FIRSTS.format(column="first_human", kinds="'open_h', 'click_h'")), bounds
    )
    await session.execute(text(_CLICKERS))
    await session.execute(text(_MARK_LINK_FIRSTS), bounds)
    await session.execute(text(_LINKS))
    for statement in _COUNTER_TABLES:
        await session.execute(text(statement))
    await session.execute(text("DELETE FROM analytics_batch"))
    return counted


async def consume(
    session: AsyncSession,
    ctx: AppContext,
    *,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> int:
    """Apply up to ``max_batches`` batches after the cursor; returns events read."""
    settings = ctx.settings
    dialect = ctx.db.dialect
    size = batch_size or settings.analytics_batch_size
    batches = max_batches or settings.analytics_batches_per_tick
    now = ctx.clock.now()
    cursor = await _lock_cursor(session, now, dialect)
    if cursor is None:
        return 0  # another consumer is applying the next batch right now
    limit = await _safe_limit(
        session, cursor, now, timedelta(seconds=settings.analytics_lag_seconds), dialect
    )
    lo = cursor.last_seq
    total = 0
    for _ in range(batches):
        hi = (
            await session.execute(
                text(
                    "SELECT max(seq) FROM (SELECT seq FROM events WHERE seq > :lo "
                    "AND seq <= :limit ORDER BY seq LIMIT :size) AS batch"
                ),
                {"lo": lo, "limit": limit, "size": size},
            )
        ).scalar_one()
        if hi is None:
            break
        hi = int(hi)
        await apply_batch(
            session, lo, hi, dialect=dialect, fast=settings.analytics_scanner_click_seconds
        )
        moved = await session.execute(
            text(
                "UPDATE analytics_cursor SET last_seq = :hi, "
                "events_applied = events_applied + :n, updated_at = :now "
                "WHERE name = :name AND last_seq = :lo"
            ),
            {"hi": hi, "lo": lo, "n": hi - lo, "now": _db_time(now, dialect), "name": CURSOR},
        )
        if getattr(moved, "rowcount", 0) != 1:
            # Another consumer applied this range first: roll ours back entirely.
            raise CursorMoved(f"analytics cursor is no longer at {lo}")
        total += hi - lo
        lo = hi
    return total


async def consume_tick(session: AsyncSession, ctx: AppContext) -> int:
    """The scheduler task (``wiring.build_scheduler``)."""
    return await consume(session, ctx)
