"""Analytics counters against a hand-counted scenario, on both databases.

Mail goes out through the real engine to the aiosmtpd server; opens, clicks and the
unsubscribe come through the real public endpoints (signed tokens built like the composer
builds them), with an Apple Mail Privacy Protection open, a scanner click right after
delivery, a burst on every link, a HEAD request, and repeated human opens. After the
consumer runs, the routes must give exactly the hand counts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from postroom.analytics import consumer
from postroom.analytics.consumer import CursorMoved, consume
from postroom.clock import FrozenClock
from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.relay_url import parse_relay_url
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.delivery.smtp_pool import SmtpRelayPool
from postroom.delivery.transports import SingleTransport
from postroom.events.service import record
from postroom.ids import uuid7
from postroom.models.analytics import AnalyticsFirst, AnalyticsLinkClicker, AnalyticsSendStats
from postroom.models.campaigns import Campaign
from postroom.models.contacts import Contact
from postroom.models.delivery import Delivery, Send
from postroom.tracking.links import link_id
from postroom.tracking.tokens import DeliveryRef, TrackingLinks
from tests.conftest import MakeWorkspace, WorkspaceHandle
from tests.support.smtp_server import TestSmtpServer

LINKS = ("https://shop.example/a", "https://shop.example/b", "https://shop.example/c")
HTML = "<p>Hi</p>" + "".join(f'<a href="{u}">{u}</a>' for u in LINKS)
APPLE_MPP = "Mozilla/5.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
EMAILS = (
    "a1@alpha.test",
    "a2@alpha.test",
    "a3@alpha.test",
    "b1@beta.test",
    "b2@beta.test",
    "gone@beta.test",
    "slow@beta.test",
    "policy@beta.test",
)


async def add_contacts(ctx: AppContext, workspace_id: Any) -> dict[str, uuid.UUID]:
    now = ctx.clock.now()
    ids: dict[str, uuid.UUID] = {}
    async with ctx.db.transaction() as session:
        for address in EMAILS:
            contact = Contact(
                id=uuid7(),
                workspace_id=workspace_id,
                email=address,
                email_key=address.lower(),
                created_at=now,
                updated_at=now,
            )
            session.add(contact)
            ids[address] = contact.id
    return ids


async def add_campaign(ctx: AppContext, workspace_id: Any) -> uuid.UUID:
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        campaign = Campaign(
            id=uuid7(),
            workspace_id=workspace_id,
            name="Spring sale",
            status="sending",
            content={"inline": {"subject": "Sale", "html": HTML, "text": None}},
            from_email="news@brand.example",
            audience={},
            tags=[],
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
    return campaign.id


async def queue(
    ctx: AppContext,
    workspace_id: Any,
    recipients: list[Recipient],
    *,
    campaign_id: uuid.UUID | None,
    kind: str = "campaign",
) -> tuple[Send, dict[str, uuid.UUID]]:
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        send = await create_send(
            session,
            workspace_id,
            SendSpec(
                kind=kind,
                content={"inline": {"subject": "Sale", "html": HTML, "text": None}},
                from_email="news@brand.example",
                campaign_id=campaign_id,
            ),
            now,
        )
        ids = await enqueue(session, send, recipients, now)
    return send, {r.email: i for r, i in zip(recipients, ids, strict=True)}


@pytest.fixture
async def sender(ctx: AppContext, smtp_server: TestSmtpServer) -> AsyncIterator[DeliveryEngine]:
    pool = SmtpRelayPool(
        parse_relay_url(smtp_server.url + "?timeout=5"),
        max_connections=2,
        max_messages_per_connection=100,
    )
    engine = DeliveryEngine(ctx, SingleTransport(pool), owner="analytics-test", batch_size=50)
    yield engine
    await engine.close()


async def catch_up(ctx: AppContext, clock: FrozenClock) -> int:
    """Run the consumer until it has read everything: on PostgreSQL it first waits out the
    safe lag (the clock is moved past it)."""
    total = 0
    for _ in range(3):
        async with ctx.db.transaction() as session:
            total += await consume(session, ctx)
        clock.advance(ctx.settings.analytics_lag_seconds + 1)
    return total


class Scenario:
    def __init__(
        self,
        ctx: AppContext,
        client: httpx.AsyncClient,
        ws: WorkspaceHandle,
        clock: FrozenClock,
        send: Send,
        deliveries: dict[str, uuid.UUID],
        contacts: dict[str, uuid.UUID],
        campaign_id: uuid.UUID,
    ) -> None:
        self.campaign_id = campaign_id
        self.ctx, self.client, self.ws, self.clock = ctx, client, ws, clock
        self.send, self.deliveries, self.contacts = send, deliveries, contacts
        self.links = TrackingLinks(ctx)

    def ref(
        self, email: str, send: Send | None = None, delivery: uuid.UUID | None = None
    ) -> DeliveryRef:
        send = send or self.send
        return DeliveryRef(
            send.workspace_id, send.id, delivery or self.deliveries[email], self.contacts[email]
        )

    def at(self, hh: int, mm: int, ss: int = 0) -> None:
        self.clock.set(datetime(2026, 3, 2, hh, mm, ss, tzinfo=UTC))

    async def open(self, email: str, agent: str, **kw: Any) -> None:
        url = self.links.open_url(self.ref(email, **kw))
        response = await self.client.get(url, headers={"user-agent": agent})
        assert response.status_code == 200 and response.headers["content-type"] == "image/gif"

    async def click(self, email: str, n: int, agent: str, method: str = "GET") -> None:
        url = self.links.click_url(self.ref(email), LINKS[n])
        response = await self.client.request(method, url, headers={"user-agent": agent})
        assert response.status_code == 302 and response.headers["location"] == LINKS[n]


@pytest.fixture
async def scenario(
    ctx: AppContext,
    client: httpx.AsyncClient,
    workspace: WorkspaceHandle,
    clock: FrozenClock,
    smtp_server: TestSmtpServer,
    sender: DeliveryEngine,
) -> Scenario:
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    contacts = await add_contacts(ctx, workspace.id)
    campaign_id = await add_campaign(ctx, workspace.id)
    smtp_server.behaviour.rcpt_replies["gone@beta.test"] = "550 5.1.1 no such user"
    smtp_server.behaviour.rcpt_replies["slow@beta.test"] = "451 4.7.1 greylisted, try later"
    smtp_server.behaviour.rcpt_replies["policy@beta.test"] = "550 5.7.1 rejected by policy"
    send, deliveries = await queue(
        ctx,
        workspace.id,
        [Recipient(e, contacts[e]) for e in EMAILS],
        campaign_id=campaign_id,
    )
    assert (await sender.run_until_idle()) == {"sent": 5, "bounced": 1, "deferred": 1, "failed": 1}
    s = Scenario(ctx, client, workspace, clock, send, deliveries, contacts, campaign_id)

    # A test send of the same campaign, opened and clicked: never counted.
    test_send, test_ids = await queue(
        ctx,
        workspace.id,
        [Recipient("a1@alpha.test", contacts["a1@alpha.test"])],
        campaign_id=campaign_id,
        kind="test",
    )
    assert (await sender.run_until_idle()) == {"sent": 1}
    await s.open("a1@alpha.test", IPHONE, send=test_send, delivery=test_ids["a1@alpha.test"])

    s.at(9, 0, 2)
    await s.click("a1@alpha.test", 0, DESKTOP)  # 2 s after sending: a link scanner
    s.at(9, 0, 30)
    await s.open("a1@alpha.test", APPLE_MPP)  # Apple MPP prefetch
    s.at(9, 1)
    await s.open("a3@alpha.test", APPLE_MPP)  # a3 only ever "opens" through Apple's proxy
    s.at(9, 10)
    await s.open("a1@alpha.test", IPHONE)
    s.at(9, 20)
    await s.open("a2@alpha.test", DESKTOP)
    s.at(9, 21)
    await s.click("a2@alpha.test", 1, DESKTOP)
    s.at(9, 30)
    await s.click("a2@alpha.test", 1, DESKTOP)  # the same link again
    s.at(9, 40)
    for n in range(3):  # every link within one second: a scanner
        await s.click("b1@beta.test", n, DESKTOP)
    await ctx.engagement.flush()  # mid-way flush: a later batch must still dedupe
    s.at(10, 5)
    await s.open("a1@alpha.test", IPHONE)  # a repeated open
    s.at(10, 6)
    await s.click("a1@alpha.test", 0, IPHONE)
    s.at(11, 15)
    await s.open("b1@beta.test", IPHONE)
    s.at(11, 16)
    await s.click("b1@beta.test", 2, IPHONE, method="HEAD")  # a pre-fetcher's HEAD
    s.at(11, 30)
    unsubscribe = s.links.unsubscribe_url(s.ref("b2@beta.test"))
    response = await client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    await ctx.engagement.flush()

    # A DSN for a2 after it was sent, and a complaint from b1 (as feedback records them).
    s.at(12, 5)
    async with ctx.db.transaction() as session:
        a2 = deliveries["a2@alpha.test"]
        await session.execute(update(Delivery).where(Delivery.id == a2).values(status="bounced"))
        for email, kind in (
            ("a2@alpha.test", "email.bounced"),
            ("b1@beta.test", "email.complained"),
        ):
            await record(
                session,
                workspace_id=workspace.id,  # type: ignore[arg-type]
                type=kind,
                occurred_at=clock.now(),
                contact_id=contacts[email],
                resource_type="delivery",
                resource_id=deliveries[email],
                data={"send_id": str(send.id), "source": "dsn"},
            )
    return s


def counters(
    sent: int = 0,
    delivered: int = 0,
    deferred: int = 0,
    failed: int = 0,
    bounced: int = 0,
    late_bounced: int = 0,
    complained: int = 0,
    unsubscribed: int = 0,
    opens: tuple[int, int, int, int] = (0, 0, 0, 0),
    clicks: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> dict[str, Any]:
    """opens/clicks: (total, machine, unique, unique_human)."""

    def engagement(v: tuple[int, int, int, int]) -> dict[str, int]:
        total, machine, unique, unique_human = v
        return {
            "total": total,
            "human": total - machine,
            "machine": machine,
            "unique": unique,
            "unique_human": unique_human,
        }

    return {
        "sent": sent,
        "delivered": delivered,
        "deferred": deferred,
        "bounced": bounced,
        "late_bounced": late_bounced,
        "complained": complained,
        "failed": failed,
        "skipped": 0,
        "unsubscribed": unsubscribed,
        "replied": 0,
        "opens": engagement(opens),
        "clicks": engagement(clicks),
    }


def without(row: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != key}


async def stats(s: Scenario) -> dict[str, Any]:
    response = await s.client.get(
        f"/v1/campaigns/{s.campaign_id}/stats",
        headers=s.ws.headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_stats_match_the_hand_counts(scenario: Scenario) -> None:
    s = scenario
    assert await catch_up(s.ctx, s.clock) > 0
    body = await stats(s)

    # sent 5 (gone bounced at the relay, slow deferred, policy failed); a2 bounced later
    # by DSN → delivered 4.
    # opens: a1 MPP + 2 human, a2 1, a3 MPP, b1 1 → 6, 2 machine; unique a1 a2 a3 b1,
    # human a1 a2 b1. clicks: a1 scanner + human, a2 2, b1 burst 3 + HEAD → 8, 5 machine;
    # unique a1 a2 b1, human a1 a2.
    assert body["totals"] == counters(
        sent=5,
        delivered=4,
        deferred=1,
        failed=1,
        bounced=2,
        late_bounced=1,
        complained=1,
        unsubscribed=1,
        opens=(6, 2, 4, 3),
        clicks=(8, 5, 3, 2),
    )
    assert body["rates"] == {
        "open": 1.0,
        "human_open": 0.75,
        "click": 0.75,
        "human_click": 0.5,
        "click_to_open": 0.75,
        "unsubscribe": 0.25,
        "complaint": 0.25,
        "bounce": round(2 / 6, 4),
    }

    hourly = {row["hour"]: without(row, "hour") for row in body["hourly"]}
    assert hourly == {
        "2026-03-02T09:00:00Z": counters(
            sent=5,
            delivered=5,
            deferred=1,
            failed=1,
            bounced=1,
            opens=(4, 2, 3, 2),
            clicks=(6, 4, 3, 1),
        ),
        "2026-03-02T10:00:00Z": counters(opens=(1, 0, 0, 0), clicks=(1, 0, 0, 1)),
        "2026-03-02T11:00:00Z": counters(unsubscribed=1, opens=(1, 0, 1, 1), clicks=(1, 1, 0, 0)),
        "2026-03-02T12:00:00Z": counters(delivered=-1, bounced=1, late_bounced=1, complained=1),
    }

    domains = {row["domain"]: without(row, "domain") for row in body["domains"]}
    assert domains == {
        "alpha.test": counters(
            sent=3,
            delivered=2,
            bounced=1,
            late_bounced=1,
            opens=(5, 2, 3, 2),
            clicks=(4, 1, 2, 2),
        ),
        "beta.test": counters(
            sent=2,
            delivered=2,
            deferred=1,
            failed=1,
            bounced=1,
            complained=1,
            unsubscribed=1,
            opens=(1, 0, 1, 1),
            clicks=(4, 4, 1, 0),
        ),
    }
    assert [row["domain"] for row in body["domains"]] == ["alpha.test", "beta.test"]

    links = await s.client.get(
        f"/v1/campaigns/{s.campaign_id}/links",
        headers=s.ws.headers,
    )
    assert links.status_code == 200, links.text
    by_url = {row["url"]: without(row, "url") for row in links.json()["data"]}
    assert by_url == {
        LINKS[0]: {
            "link_id": link_id(LINKS[0]),
            "clicks": 3,
            "human_clicks": 1,
            "machine_clicks": 2,
            "unique_clicks": 2,
        },
        LINKS[1]: {
            "link_id": link_id(LINKS[1]),
            "clicks": 3,
            "human_clicks": 2,
            "machine_clicks": 1,
            "unique_clicks": 2,
        },
        LINKS[2]: {
            "link_id": link_id(LINKS[2]),
            "clicks": 2,
            "human_clicks": 0,
            "machine_clicks": 2,
            "unique_clicks": 1,
        },
    }


async def test_small_batches_count_each_recipient_once(scenario: Scenario) -> None:
    """Batches of 4 events: a recipient's first open/click lands in one batch and their
    repeats in later ones; unique counters and per-link clickers must not count them
    again. (A scanner's burst split across two batches is not recognised as one, so the
    machine split of clicks is not compared here.)"""
    s = scenario
    s.clock.advance(s.ctx.settings.analytics_lag_seconds + 1)
    for _ in range(3):
        async with s.ctx.db.transaction() as session:
            await consume(session, s.ctx, batch_size=4, max_batches=1000)
        s.clock.advance(s.ctx.settings.analytics_lag_seconds + 1)
    totals = (await stats(s))["totals"]
    assert totals["opens"] == {"total": 6, "human": 4, "machine": 2, "unique": 4, "unique_human": 3}
    assert (totals["clicks"]["total"], totals["clicks"]["unique"]) == (8, 3)
    assert (totals["sent"], totals["delivered"], totals["unsubscribed"]) == (5, 4, 1)
    links = await s.client.get(f"/v1/campaigns/{s.campaign_id}/links", headers=s.ws.headers)
    unique = {row["url"]: row["unique_clicks"] for row in links.json()["data"]}
    assert unique == {LINKS[0]: 2, LINKS[1]: 2, LINKS[2]: 1}


async def test_who_clicked_a_link_is_paginated(scenario: Scenario) -> None:
    s = scenario
    await catch_up(s.ctx, s.clock)
    path = f"/v1/campaigns/{s.campaign_id}/links"
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(3):
        params: dict[str, Any] = {"url": LINKS[0], "limit": 1}
        if cursor:
            params["cursor"] = cursor
        response = await s.client.get(path, headers=s.ws.headers, params=params)
        assert response.status_code == 200, response.text
        seen.extend(response.json()["data"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert {(r["email"], r["clicks"], r["machine_clicks"]) for r in seen} == {
        ("a1@alpha.test", 2, 1),
        ("b1@beta.test", 1, 1),
    }
    a1 = next(r for r in seen if r["email"] == "a1@alpha.test")
    assert a1["contact_id"] == str(s.contacts["a1@alpha.test"])
    assert a1["first_clicked_at"] == "2026-03-02T09:00:02Z"
    assert a1["last_clicked_at"] == "2026-03-02T10:06:00Z"

    bad = await s.client.get(path, headers=s.ws.headers, params={"url": LINKS[0], "cursor": "!!"})
    assert bad.status_code == 422


async def test_running_again_or_racing_never_double_counts(scenario: Scenario) -> None:
    s = scenario
    ctx = s.ctx
    s.clock.advance(ctx.settings.analytics_lag_seconds + 1)

    async def one() -> int:
        async with ctx.db.transaction() as session:
            return await consume(session, ctx)

    # On PostgreSQL the first run only records the horizon (the safe lag).
    if ctx.db.dialect == "postgresql":
        assert await one() == 0
        s.clock.advance(ctx.settings.analytics_lag_seconds + 1)
    # Two consumers at once: they serialize on the cursor row; one applies, one finds
    # nothing left.
    results = await asyncio.gather(one(), one())
    assert sorted(r > 0 for r in results) == [False, True]
    first = await stats(s)
    assert await catch_up(ctx, s.clock) == 0  # nothing new: a rerun changes nothing
    assert await stats(s) == first
    assert first["totals"]["opens"]["total"] == 6
    assert first["totals"]["clicks"]["unique"] == 3


async def test_a_moved_cursor_rolls_the_batch_back(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scenario
    ctx = s.ctx
    real = consumer.apply_batch

    async def racing(session: Any, lo: int, hi: int, **kw: Any) -> int:
        counted = await real(session, lo, hi, **kw)
        # Another consumer got there first (as seen after our read of the cursor).
        from sqlalchemy import text

        await session.execute(text("UPDATE analytics_cursor SET last_seq = last_seq + 1"))
        return counted

    monkeypatch.setattr(consumer, "apply_batch", racing)
    s.clock.advance(ctx.settings.analytics_lag_seconds + 1)

    async def run() -> None:
        for _ in range(3):
            async with ctx.db.transaction() as session:
                await consume(session, ctx)
            s.clock.advance(ctx.settings.analytics_lag_seconds + 1)

    with pytest.raises(CursorMoved):
        await run()
    async with ctx.db.transaction() as session:
        assert (
            await session.execute(select(func.count()).select_from(AnalyticsSendStats))
        ).scalar_one() == 0
        assert (
            await session.execute(select(func.count()).select_from(AnalyticsFirst))
        ).scalar_one() == 0
    monkeypatch.setattr(consumer, "apply_batch", real)
    await catch_up(ctx, s.clock)
    assert (await stats(s))["totals"]["opens"]["total"] == 6


async def test_postgresql_waits_out_the_safe_lag(scenario: Scenario) -> None:
    s = scenario
    ctx = s.ctx
    async with ctx.db.transaction() as session:
        first = await consume(session, ctx)
    if ctx.db.dialect == "postgresql":
        # Only the horizon is recorded: a seq handed out now may still commit later.
        assert first == 0
        s.clock.advance(ctx.settings.analytics_lag_seconds - 1)
        async with ctx.db.transaction() as session:
            assert await consume(session, ctx) == 0
        s.clock.advance(2)
        async with ctx.db.transaction() as session:
            assert await consume(session, ctx) > 0
    else:
        # SQLite: BEGIN IMMEDIATE waited for every writer, so all of it is committed.
        assert first > 0
    assert (await stats(s))["totals"]["sent"] == 5


async def test_erase_removes_the_contacts_engagement_rows(scenario: Scenario) -> None:
    s = scenario
    await catch_up(s.ctx, s.clock)
    a1 = s.contacts["a1@alpha.test"]

    async def rows() -> tuple[int, int]:
        async with s.ctx.db.transaction() as session:
            firsts = await session.execute(
                select(func.count())
                .select_from(AnalyticsFirst)
                .where(AnalyticsFirst.contact_id == a1)
            )
            clickers = await session.execute(
                select(func.count())
                .select_from(AnalyticsLinkClicker)
                .where(AnalyticsLinkClicker.contact_id == a1)
            )
            return firsts.scalar_one(), clickers.scalar_one()

    assert await rows() == (4, 1)  # open, open_h, click, click_h; link 0
    engagement = await s.client.get(f"/v1/contacts/{a1}/engagement", headers=s.ws.headers)
    assert engagement.status_code == 200
    response = await s.client.post(f"/v1/contacts/{a1}/erase", headers=s.ws.headers)
    assert response.status_code == 204, response.text
    assert await rows() == (0, 0)
    gone = await s.client.get(f"/v1/contacts/{a1}/engagement", headers=s.ws.headers)
    assert gone.status_code == 404
    # The anonymous counters stay.
    assert (await stats(s))["totals"]["opens"]["total"] == 6


async def test_contact_engagement_history_and_summary(scenario: Scenario) -> None:
    s = scenario
    await catch_up(s.ctx, s.clock)
    a1 = s.contacts["a1@alpha.test"]
    path = f"/v1/contacts/{a1}/engagement"
    response = await s.client.get(path, headers=s.ws.headers, params={"limit": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] == {
        "sent": 2,  # the campaign and the test send
        "bounced": 0,
        "complained": 0,
        "unsubscribed": 0,
        "replied": 0,
        "opens": 4,
        "clicks": 2,
        "messages_opened": 1,  # the test send is not counted
        "messages_opened_by_person": 1,
        "messages_clicked": 1,
        "messages_clicked_by_person": 1,
        "last_opened_at": "2026-03-02T10:05:00Z",
        "last_clicked_at": "2026-03-02T10:06:00Z",
    }
    history = list(body["data"])
    assert [e["type"] for e in history] == ["email.clicked", "email.opened", "email.opened"]
    assert history[0]["send_id"] == str(s.send.id)
    while body["next_cursor"]:
        body = (
            await s.client.get(
                path, headers=s.ws.headers, params={"limit": 3, "cursor": body["next_cursor"]}
            )
        ).json()
        history.extend(body["data"])
    assert [e["type"] for e in history].count("email.opened") == 4
    assert len(history) == 8  # 2 sent, 4 opened, 2 clicked


async def test_workspace_summary_over_a_date_range(
    scenario: Scenario, make_workspace: MakeWorkspace
) -> None:
    s = scenario
    await catch_up(s.ctx, s.clock)
    response = await s.client.get(
        "/v1/analytics/summary",
        headers=s.ws.headers,
        params={"from": "2026-03-01", "to": "2026-03-02"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["from"] == "2026-03-01" and body["to"] == "2026-03-02"
    assert body["totals"]["sent"] == 5 and body["totals"]["opens"]["unique_human"] == 3
    assert [d["day"] for d in body["days"]] == ["2026-03-02"]
    empty = await s.client.get(
        "/v1/analytics/summary",
        headers=s.ws.headers,
        params={"from": "2026-03-03", "to": "2026-03-04"},
    )
    assert empty.json()["totals"]["sent"] == 0 and empty.json()["days"] == []
    # Another workspace sees none of it.
    other = await make_workspace("other")
    theirs = await s.client.get(
        "/v1/analytics/summary",
        headers=other.headers,
        params={"from": "2026-03-01", "to": "2026-03-02"},
    )
    assert theirs.json()["totals"]["sent"] == 0 and theirs.json()["days"] == []
    bad = await s.client.get(
        "/v1/analytics/summary",
        headers=s.ws.headers,
        params={"from": "2026-03-05", "to": "2026-03-04"},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "from"


async def test_analytics_routes_need_the_analytics_scope(
    scenario: Scenario, make_key: Callable[..., Any]
) -> None:
    s = scenario
    key = await make_key(s.ws, scopes=["contacts:read"])
    response = await s.client.get(
        f"/v1/campaigns/{s.campaign_id}/stats",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 403
    reader = await make_key(s.ws, scopes=["analytics:read"])
    response = await s.client.get(
        "/v1/analytics/summary", headers={"Authorization": f"Bearer {reader}"}
    )
    assert response.status_code == 200


async def test_a_campaign_with_no_events_has_zero_stats(
    ctx: AppContext, client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    campaign_id = await add_campaign(ctx, workspace.id)
    response = await client.get(f"/v1/campaigns/{campaign_id}/stats", headers=workspace.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["totals"] == counters()
    assert body["hourly"] == [] and body["domains"] == []
    assert body["rates"]["open"] == 0.0
