"""Rate limits per relay and per sending domain, and warm-up ramps, on both databases.

Time comes from the FrozenClock: rows over an allowance wait for their window to reopen,
and the test moves the clock there instead of sleeping. (Two real worker processes
sharing a limit are in test_rate_limits_processes.py.)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from postroom.clock import FrozenClock
from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.rate_limits import (
    CALENDAR_DAY,
    PER_DAY,
    PER_HOUR,
    PER_SECOND,
    Lane,
    Limit,
    WarmupPlan,
    prune_rate_limit_slots,
    reserve,
)
from postroom.delivery.sends import Recipient
from postroom.models.delivery import Delivery, Send
from postroom.models.relays import RateLimitSlot
from postroom.wiring import build_delivery_engine, build_scheduler
from tests.conftest import WorkspaceHandle
from tests.support.smtp_server import TestSmtpServer
from tests.test_engine import addresses, deliveries, event_counts, queue_send

MakeEngine = Callable[[], DeliveryEngine]


@pytest.fixture
async def make_engine(ctx: AppContext) -> AsyncIterator[MakeEngine]:
    """The production engine (build_delivery_engine): workspace relays, else the Maildir
    capture; relay rows and domain limits re-read on every batch."""
    ctx.settings.relay_refresh_seconds = 0
    ctx.settings.worker_concurrency = 1
    engines: list[DeliveryEngine] = []

    def factory() -> DeliveryEngine:
        engine = build_delivery_engine(ctx)
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.close()


async def add_domain(client: httpx.AsyncClient, ws: WorkspaceHandle) -> str:
    response = await client.post(
        "/v1/domains", headers=ws.headers, json={"domain": "brand.example", "bits": 1024}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def pending(ctx: AppContext, send_id: Any) -> list[Delivery]:
    rows = await deliveries(ctx, send_id)
    return sorted(
        (row for row in rows.values() if row.status != "sent"), key=lambda r: r.next_attempt_at
    )


# --- the counters --------------------------------------------------------------------------


async def grant(ctx: AppContext, lanes: list[Lane]) -> list[int]:
    async with ctx.db.transaction() as session:
        await reserve(session, ctx.db.dialect, lanes, ctx.clock.now())
    return [lane.granted for lane in lanes]


async def test_a_reservation_grants_what_is_left_and_says_when_it_reopens(
    ctx: AppContext, clock: FrozenClock
) -> None:
    per_second = Limit("test:s", PER_SECOND, 5)  # (the engine adds a pace; not here)
    lane = Lane([per_second], 8)
    assert await grant(ctx, [lane]) == [5]
    slot = PER_SECOND.slot(clock.now())
    # The grant counts for 45 slots of 25 ms: it reopens 1.1-1.125 s later.
    assert lane.retry_at == PER_SECOND.slot_start(slot + 45)
    assert lane.binding == per_second
    assert timedelta(seconds=1.1) <= lane.retry_at - clock.now() <= timedelta(seconds=1.125)
    assert lane.retry_time(0) == lane.retry_at == lane.retry_time(4)
    assert lane.retry_time(5) == lane.retry_at + timedelta(seconds=1.125)

    assert await grant(ctx, [Lane([per_second], 3)]) == [0]
    clock.set(lane.retry_at - timedelta(microseconds=1))
    assert await grant(ctx, [Lane([per_second], 3)]) == [0]
    clock.set(lane.retry_at)
    assert await grant(ctx, [Lane([per_second], 9)]) == [5]

    # Lanes sharing a key share its allowance; each gets the least of its keys.
    relay, domain = Limit("relay:x:h", PER_HOUR, 6), Limit("domain:y:d", PER_DAY, 2)
    both, relay_only = Lane([relay, domain], 5), Lane([relay], 5)
    assert await grant(ctx, [both, relay_only]) == [2, 4]
    assert both.binding == domain and relay_only.binding == relay
    async with ctx.db.transaction() as session:
        used = dict(
            (
                await session.execute(
                    select(RateLimitSlot.key, func.sum(RateLimitSlot.used)).group_by(
                        RateLimitSlot.key
                    )
                )
            ).all()
        )
    # The first second's slot no longer counts and was deleted by a later reservation.
    assert used == {"test:s": 5, "relay:x:h": 6, "domain:y:d": 2}

    # Counters nobody reserves any more are deleted by a scheduler task once expired.
    assert "prune_rate_limits" in [task.name for task in build_scheduler(ctx).tasks]
    clock.advance(timedelta(hours=1, minutes=1))
    async with ctx.db.transaction() as session:
        assert await prune_rate_limit_slots(session, ctx) == 2  # the second's and the hour's
        left = (await session.execute(select(RateLimitSlot.key))).scalars().all()
    assert left == ["domain:y:d"]


async def test_no_window_of_the_nominal_length_ever_holds_more_than_the_limit(
    ctx: AppContext, clock: FrozenClock
) -> None:
    """Random demand at random moments over 6 s: every 1-second window (measured from
    each grant) holds at most the allowance, and the allowance is mostly used."""
    rng = random.Random(5)
    limit = Limit("strict:s", PER_SECOND, 7)
    grants: list[tuple[datetime, int]] = []
    start = clock.now()
    while clock.now() - start < timedelta(seconds=6):
        [granted] = await grant(ctx, [Lane([limit], rng.randint(1, 6))])
        if granted:
            grants.append((clock.now(), granted))
        clock.advance(timedelta(milliseconds=rng.randint(5, 120)))
    for moment, _ in grants:
        # Even 1.1 s (the margin the second's window keeps) hold at most the allowance.
        window = sum(n for at, n in grants if moment <= at < moment + timedelta(seconds=1.1))
        assert window <= 7, (moment, window)
    assert sum(n for _, n in grants) >= 6 / 1.125 * 7  # strict, not starved


def test_warmup_plan_grows_by_its_factor_up_to_the_maximum() -> None:
    plan = WarmupPlan(datetime(2026, 3, 2).date(), 50, 1.5, 400)
    days = plan.schedule(datetime(2026, 3, 1).date(), 8)
    assert [cap for _, cap in days] == [50, 50, 75, 112, 168, 253, 379, 400]
    assert plan.completed_on(days[-1][0]) and not plan.completed_on(days[-2][0])
    assert plan.cap_on(datetime(2036, 1, 1).date()) == 400  # no overflow years later
    assert WarmupPlan.from_json(plan.as_json()) == plan


# --- the engine -------------------------------------------------------------------------------


async def test_a_relay_limit_holds_rows_back_without_counting_attempts(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    response = await client.post(
        "/v1/relays", headers=workspace.headers, json={"url": smtp_server.url, "per_second": 10}
    )
    relay_id = response.json()["id"]
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(35)])
    engine = make_engine()
    start = clock.now()

    # 10 per second leave paced: 2 (a fifth) per 175-200 ms.
    assert await engine.run_until_idle() == Counter(sent=2)
    waiting = await pending(ctx, send.id)
    assert len(waiting) == 33
    assert {row.status for row in waiting} == {"queued"}
    assert {row.attempts for row in waiting} == {0}  # waiting is no attempt
    assert {row.lease_owner for row in waiting} == {None}
    reopen = waiting[0].next_attempt_at
    assert timedelta(milliseconds=175) <= reopen - start <= timedelta(milliseconds=200)
    # Pairs come back one pace window apart, not all at once.
    assert [row.next_attempt_at for row in waiting[:4]] == [reopen] * 2 + [
        reopen + timedelta(milliseconds=200)
    ] * 2
    counts = await event_counts(ctx)
    assert counts["email.sent"] == 2 and not counts["email.deferred"]
    assert await engine.run_until_idle() == Counter()  # nothing due yet

    # Follow the queue on the clock: each step goes to the next due row.
    sent_at: list[datetime] = [start, start]
    while waiting := await pending(ctx, send.id):
        clock.set(waiting[0].next_attempt_at)
        sent_at += [clock.now()] * (await engine.run_until_idle())["sent"]
        assert clock.now() - start < timedelta(seconds=10), "the queue must drain"
    busiest = max(
        sum(1 for at in sent_at if moment <= at < moment + timedelta(seconds=1.1))
        for moment in sent_at
    )
    assert busiest == 10  # the allowance is used, and never exceeded in any 1.1 s
    assert max(Counter(sent_at).values()) == 2  # bursts of a fifth
    # The 11th message at least 1.1 s after the 1st, the 21st after the 11th, ...
    assert sent_at[-1] - start >= timedelta(seconds=3.3)
    rows = await deliveries(ctx, send.id)
    assert {row.attempts for row in rows.values()} == {1}
    assert {row.relay for row in rows.values()} == {f"relay:{relay_id}"}
    counts = await event_counts(ctx)
    assert counts["email.sent"] == 35 and not counts["email.deferred"]
    assert smtp_server.count() == 35


async def test_a_daily_cap_waits_for_the_next_day(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_engine: MakeEngine,
) -> None:
    await client.post(
        "/v1/relays", headers=workspace.headers, json={"url": smtp_server.url, "per_day": 10}
    )
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(25)])
    engine = make_engine()
    start = clock.now()

    assert await engine.run_until_idle() == Counter(sent=10)
    clock.advance(timedelta(hours=12))
    assert await engine.run_until_idle() == Counter()
    waiting = await pending(ctx, send.id)
    # The day's window counts 15-minute slots: a grant stops counting 24 h to 24 h 15 min
    # later (any 24 hours hold at most the cap).
    first = waiting[0].next_attempt_at
    assert timedelta(days=1) <= first - start <= timedelta(days=1, minutes=15)
    clock.set(start + timedelta(days=1, minutes=15))
    assert await engine.run_until_idle() == Counter(sent=10)
    clock.advance(timedelta(days=1, minutes=15))
    assert await engine.run_until_idle() == Counter(sent=5)
    assert smtp_server.count() == 25


async def test_a_sending_domain_limit_applies_through_any_relay(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    make_engine: MakeEngine,
) -> None:
    domain_id = await add_domain(client, workspace)
    patched = await client.patch(
        f"/v1/domains/{domain_id}", headers=workspace.headers, json={"per_hour": 4}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["rate_limits"] == {"per_second": None, "per_hour": 4, "per_day": None}
    bad = await client.patch(
        f"/v1/domains/{domain_id}", headers=workspace.headers, json={"per_second": 0}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "per_second"
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(10)])
    # Mail from another domain is not held back by brand.example's limit.
    other, _ = await queue_send(ctx, workspace.id, [Recipient("x@example.com")])
    async with ctx.db.transaction() as session:
        await session.execute(
            update(Send).where(Send.id == other.id).values(from_email="a@other.example")
        )
    engine = make_engine()  # no relay: the instance default (Maildir) carries it

    assert await engine.run_until_idle() == Counter(sent=5)
    assert {row.status for row in (await deliveries(ctx, other.id)).values()} == {"sent"}
    assert len(await pending(ctx, send.id)) == 6
    clock.advance(timedelta(minutes=61))
    assert await engine.run_until_idle() == Counter(sent=4)

    cleared = await client.patch(
        f"/v1/domains/{domain_id}", headers=workspace.headers, json={"per_hour": None}
    )
    assert cleared.json()["rate_limits"]["per_hour"] is None
    waiting = await pending(ctx, send.id)
    clock.set(max(row.next_attempt_at for row in waiting))
    assert await engine.run_until_idle() == Counter(sent=2)


async def test_warm_up_caps_each_day_and_shows_its_plan(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    make_engine: MakeEngine,
) -> None:
    domain_id = await add_domain(client, workspace)
    url = f"/v1/domains/{domain_id}/warmup"
    assert (await client.get(url, headers=workspace.headers)).status_code == 404
    for body, field in [
        ({"initial_per_day": 50, "growth_factor": 2, "max_per_day": 10}, "max_per_day"),
        ({"initial_per_day": 5, "growth_factor": 0.5, "max_per_day": 10}, "growth_factor"),
        ({"initial_per_day": 0, "growth_factor": 2, "max_per_day": 10}, "initial_per_day"),
    ]:
        response = await client.put(url, headers=workspace.headers, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field

    plan = {"initial_per_day": 5, "growth_factor": 2.0, "max_per_day": 12}
    put = await client.put(url, headers=workspace.headers, json=plan)
    assert put.status_code == 200, put.text
    today = clock.now().date()
    assert put.json()["start_date"] == today.isoformat()
    assert [day["cap"] for day in put.json()["schedule"][:4]] == [5, 10, 12, 12]
    assert put.json()["cap_today"] == 5 and put.json()["sent_today"] == 0
    domain = (await client.get(f"/v1/domains/{domain_id}", headers=workspace.headers)).json()
    assert domain["warmup"]["cap_today"] == 5 and len(domain["warmup"]["schedule"]) == 14

    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(40)])
    engine = make_engine()
    sent_per_day = []
    for day in range(5):
        sent_per_day.append((await engine.run_until_idle())["sent"])
        if day == 0:
            shown = (await client.get(url, headers=workspace.headers)).json()
            assert shown["sent_today"] == 5 and shown["day"] == 0
            waiting = await pending(ctx, send.id)
            midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
            assert {row.next_attempt_at for row in waiting} == {midnight}
            assert {row.attempts for row in waiting} == {0}
        clock.set(datetime.combine(today + timedelta(days=day + 1), datetime.min.time(), UTC))
    assert sent_per_day == [5, 10, 12, 12, 1]
    counts = await event_counts(ctx)
    assert counts["email.sent"] == 40 and not counts["email.deferred"]

    deleted = await client.delete(url, headers=workspace.headers)
    assert deleted.status_code == 204
    assert (await client.get(url, headers=workspace.headers)).status_code == 404
    domain = (await client.get(f"/v1/domains/{domain_id}", headers=workspace.headers)).json()
    assert domain["warmup"] is None


def test_windows_are_the_documented_ones() -> None:
    assert PER_SECOND.slot_us * (PER_SECOND.span - 1) == 1_100_000  # a 100 ms margin
    assert PER_HOUR.slot_us * (PER_HOUR.span - 1) == 3_600_000_000
    assert PER_DAY.slot_us * (PER_DAY.span - 1) == 86_400_000_000
    assert CALENDAR_DAY.span == 1
