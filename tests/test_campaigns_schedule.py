"""Scheduling with timezones and DST, the scheduler's due-campaign claim, and the send
calendar, on both databases; time moves only through the frozen clock."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from postroom.campaigns.ticks import TICK_TASKS
from postroom.campaigns.timing import calendar_open, next_opening, resolve_instant
from postroom.clock import FrozenClock
from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.maildir import MaildirTransport
from postroom.delivery.transports import SingleTransport
from postroom.errors import ValidationFailed
from postroom.models.delivery import Send
from postroom.models.platform import Event, Job
from postroom.worker.scheduler import Scheduler
from tests.conftest import WorkspaceHandle
from tests.support.campaigns import (
    add_contacts,
    add_domain,
    campaign_row,
    create_campaign,
    run_jobs,
)

PARIS = "Europe/Paris"


@pytest.fixture
async def ready(client: httpx.AsyncClient, workspace: WorkspaceHandle) -> WorkspaceHandle:
    await add_domain(client, workspace)
    return workspace


def ticker(ctx: AppContext) -> Scheduler:
    return Scheduler(ctx, TICK_TASKS)


async def _schedule(
    client: httpx.AsyncClient, ws: WorkspaceHandle, campaign_id: str, **body: object
) -> httpx.Response:
    return await client.post(f"/v1/campaigns/{campaign_id}/schedule", headers=ws.headers, json=body)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# --- instants, local times, DST -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"scheduled_at": "2026-03-05T10:00:00+01:00"}, "2026-03-05T09:00:00Z"),
        (
            {"scheduled_at": "2026-03-05T10:00:00Z", "timezone": "Asia/Tokyo"},
            "2026-03-05T10:00:00Z",
        ),
        (
            {"scheduled_at": "2026-03-05T10:00:00", "timezone": "America/New_York"},
            "2026-03-05T15:00:00Z",
        ),
        ({"scheduled_at": "2026-03-05T10:00:00"}, "2026-03-05T09:00:00Z"),  # campaign's zone
        # DST overlap (Paris falls back at 03:00 CEST on 2026-10-25): 02:30 happens twice.
        ({"scheduled_at": "2026-10-25T02:30:00"}, "2026-10-25T00:30:00Z"),
        ({"scheduled_at": "2026-10-25T02:30:00", "fold": 1}, "2026-10-25T01:30:00Z"),
        # Just around the spring-forward gap.
        ({"scheduled_at": "2026-03-29T01:59:00"}, "2026-03-29T00:59:00Z"),
        ({"scheduled_at": "2026-03-29T03:00:00"}, "2026-03-29T01:00:00Z"),
    ],
)
async def test_schedule_is_stored_in_utc(
    client: httpx.AsyncClient,
    ready: WorkspaceHandle,
    body: dict[str, object],
    expected: str,
) -> None:
    campaign = await create_campaign(client, ready, timezone=PARIS)
    response = await _schedule(client, ready, campaign["id"], **body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "scheduled"
    assert _utc(response.json()["scheduled_at"]) == _utc(expected)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"scheduled_at": "2026-03-29T02:30:00"}, "nonexistent_local_time"),  # DST gap
        ({"scheduled_at": "2026-03-01T09:00:00Z"}, "in_the_past"),
        ({"scheduled_at": "2026-03-02T09:00:00Z"}, "in_the_past"),  # now is not future
        ({"scheduled_at": "2026-03-05T10:00:00", "timezone": "Nowhere/City"}, "invalid_timezone"),
    ],
)
async def test_impossible_schedules_are_422(
    client: httpx.AsyncClient, ready: WorkspaceHandle, body: dict[str, object], code: str
) -> None:
    campaign = await create_campaign(client, ready, timezone=PARIS)
    response = await _schedule(client, ready, campaign["id"], **body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == code
    fetched = await client.get(f"/v1/campaigns/{campaign['id']}", headers=ready.headers)
    assert fetched.json()["status"] == "draft"


def test_resolve_instant_rules() -> None:
    gap = datetime(2026, 3, 29, 2, 30)
    with pytest.raises(ValidationFailed):
        resolve_instant(gap, PARIS)
    first = resolve_instant(datetime(2026, 10, 25, 2, 30), PARIS)
    second = resolve_instant(datetime(2026, 10, 25, 2, 30), PARIS, fold=1)
    assert (second - first).total_seconds() == 3600
    assert resolve_instant(datetime(2026, 7, 1, 12, 0), "UTC") == datetime(
        2026, 7, 1, 12, tzinfo=UTC
    )


# --- the scheduler ------------------------------------------------------------------------------


async def test_a_scheduled_campaign_starts_when_its_time_comes(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, ready: WorkspaceHandle
) -> None:
    await add_contacts(ctx, ready.id, ["a@example.com", "b@example.com"])
    campaign = await create_campaign(client, ready, timezone=PARIS)
    response = await _schedule(client, ready, campaign["id"], scheduled_at="2026-03-02T11:00:00")
    assert _utc(response.json()["scheduled_at"]) == datetime(2026, 3, 2, 10, tzinfo=UTC)

    clock.set(datetime(2026, 3, 2, 9, 59, 59, tzinfo=UTC))
    assert (await ticker(ctx).tick())["campaigns_due"] == 0
    clock.set(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    # Two schedulers at once: the conditional UPDATE gives the campaign to one of them.
    first, second = await asyncio.gather(ticker(ctx).tick(), ticker(ctx).tick())
    assert first["campaigns_due"] + second["campaigns_due"] == 1

    row = await campaign_row(ctx, campaign["id"])
    assert row.status == "sending" and row.send_id is not None and row.started_at == clock.now()
    async with ctx.db.transaction() as session:
        jobs = list(
            (await session.execute(select(Job).where(Job.kind == "campaigns.fanout"))).scalars()
        )
        sends = list(
            (await session.execute(select(Send).where(Send.campaign_id == row.id))).scalars()
        )
        types = list(
            (
                await session.execute(
                    select(Event.type).where(Event.resource_id == row.id).order_by(Event.seq)
                )
            ).scalars()
        )
    assert len(jobs) == 1 and len(sends) == 1
    assert types == ["campaign.scheduled", "campaign.sending"]
    assert await run_jobs(ctx) == 1
    assert (await campaign_row(ctx, campaign["id"])).recipients == 2


async def test_unschedule_returns_to_draft_and_nothing_starts(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, ready: WorkspaceHandle
) -> None:
    campaign = await create_campaign(client, ready)
    await _schedule(client, ready, campaign["id"], scheduled_at="2026-03-02T10:00:00Z")
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/unschedule", headers=ready.headers
    )
    assert response.status_code == 200
    assert response.json()["status"] == "draft" and response.json()["scheduled_at"] is None
    clock.set(datetime(2026, 3, 3, tzinfo=UTC))
    assert (await ticker(ctx).tick())["campaigns_due"] == 0
    assert (await campaign_row(ctx, campaign["id"])).status == "draft"


# --- the send calendar ------------------------------------------------------------------------


def test_calendar_open_in_the_campaign_timezone() -> None:
    calendar = {"weekdays": [1, 2, 3, 4, 5], "start_hour": 9, "end_hour": 17}
    monday_0830_paris = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)
    assert not calendar_open(calendar, PARIS, monday_0830_paris)
    assert calendar_open(calendar, PARIS, datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    assert not calendar_open(calendar, PARIS, datetime(2026, 3, 2, 16, 0, tzinfo=UTC))
    assert calendar_open(calendar, "America/New_York", datetime(2026, 3, 2, 16, 0, tzinfo=UTC))
    assert not calendar_open(calendar, PARIS, datetime(2026, 3, 7, 12, 0, tzinfo=UTC))  # Sat
    assert calendar_open(None, PARIS, datetime(2026, 3, 7, 12, 0, tzinfo=UTC))
    saturday = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    assert next_opening(calendar, PARIS, saturday) == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)


async def test_the_calendar_holds_a_campaign_and_it_resumes_by_itself(
    client: httpx.AsyncClient, ctx: AppContext, clock: FrozenClock, ready: WorkspaceHandle
) -> None:
    await add_contacts(ctx, ready.id, [f"c{i}@example.com" for i in range(5)])
    clock.set(datetime(2026, 3, 7, 12, 0, tzinfo=UTC))  # Saturday
    campaign = await create_campaign(
        client,
        ready,
        timezone=PARIS,
        send_calendar={"weekdays": [1, 2, 3, 4, 5], "start_hour": 9, "end_hour": 17},
    )
    url = f"/v1/campaigns/{campaign['id']}"
    response = await client.post(f"{url}/send", headers=ready.headers)
    assert response.status_code == 202
    assert response.json()["status"] == "waiting"
    send_id = uuid.UUID(response.json()["send_id"])
    assert await run_jobs(ctx) == 1  # fan-out runs while waiting; the engine holds the rows

    engine = DeliveryEngine(
        ctx,
        SingleTransport(MaildirTransport(ctx.settings.data_dir / "mail")),
        owner="cal",
        batch_size=10,
    )

    async def send_state() -> str:
        async with ctx.db.transaction() as session:
            send = await session.get(Send, send_id)
            assert send is not None
            return send.state

    assert await send_state() == "paused"
    assert await engine.run_until_idle() == Counter()

    clock.set(datetime(2026, 3, 9, 7, 59, tzinfo=UTC))  # Monday 08:59 in Paris
    assert (await ticker(ctx).tick())["campaigns_calendar"] == 0
    clock.set(datetime(2026, 3, 9, 8, 0, tzinfo=UTC))  # 09:00 in Paris: the window opens
    assert (await ticker(ctx).tick())["campaigns_calendar"] == 1
    assert (await campaign_row(ctx, campaign["id"])).status == "sending"
    assert await send_state() == "active"

    clock.set(datetime(2026, 3, 9, 16, 0, tzinfo=UTC))  # 17:00 in Paris: closed again
    assert (await ticker(ctx).tick())["campaigns_calendar"] == 1
    assert (await campaign_row(ctx, campaign["id"])).status == "waiting"
    # Pausing a waiting campaign, then resuming outside the window, waits again.
    assert (await client.post(f"{url}/pause", headers=ready.headers)).json()["status"] == "paused"
    assert (await client.post(f"{url}/resume", headers=ready.headers)).json()["status"] == "waiting"
    assert await send_state() == "paused"

    clock.set(datetime(2026, 3, 10, 8, 30, tzinfo=UTC))  # Tuesday 09:30
    await ticker(ctx).tick()
    assert await engine.run_until_idle() == Counter(sent=5)
    assert (await ticker(ctx).tick())["campaigns_complete"] == 1
    async with ctx.db.transaction() as session:
        types = list(
            (
                await session.execute(
                    select(Event.type)
                    .where(Event.resource_id == uuid.UUID(campaign["id"]))
                    .order_by(Event.seq)
                )
            ).scalars()
        )
    assert types == [
        "campaign.sending",
        "campaign.waiting",
        "campaign.sending",
        "campaign.waiting",
        "campaign.paused",
        "campaign.resumed",
        "campaign.waiting",
        "campaign.sending",
        "campaign.sent",
    ]
    await engine.close()
