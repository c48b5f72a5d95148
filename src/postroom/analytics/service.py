"""Analytics rules: what a campaign's, a contact's and a workspace's numbers are.

All numbers come from the counters the consumer maintains (``consumer.py``); the routes
never scan ``events`` per request, except a contact's own (short) event history.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from postroom.analytics.repository import AnalyticsRepository
from postroom.analytics.schemas import (
    CampaignStats,
    ContactEngagement,
    ContactEngagementSummary,
    Counters,
    DaySummary,
    DomainRow,
    EngagementEvent,
    HourBucket,
    LinkClicker,
    LinkStats,
    Rates,
    WorkspaceSummary,
)
from postroom.errors import ValidationFailed
from postroom.http.pagination import encode_cursor
from postroom.tracking.links import link_id

DOMAIN_ROWS = 50
MAX_RANGE_DAYS = 366


class AnalyticsService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.repo = AnalyticsRepository(session, workspace_id)

    async def campaign_stats(self, campaign_id: uuid.UUID) -> CampaignStats:
        totals = await self.repo.totals(campaign_id)
        hourly = await self.repo.hourly(campaign_id)
        domains = await self.repo.domains(campaign_id, DOMAIN_ROWS)
        return CampaignStats(
            campaign_id=campaign_id,
            totals=Counters.of(totals),
            rates=Rates.of(totals),
            hourly=[HourBucket(hour=hour, **Counters.of(c).model_dump()) for hour, c in hourly],
            domains=[
                DomainRow(domain=domain, **Counters.of(c).model_dump()) for domain, c in domains
            ],
        )

    async def campaign_links(self, campaign_id: uuid.UUID) -> list[LinkStats]:
        return [
            LinkStats(
                link_id=row.link_id,
                url=row.url,
                clicks=int(row.clicks),
                human_clicks=int(row.clicks) - int(row.machine_clicks),
                machine_clicks=int(row.machine_clicks),
                unique_clicks=int(row.unique_clicks),
            )
            for row in await self.repo.links(campaign_id)
        ]

    async def link_clickers(
        self, campaign_id: uuid.UUID, url: str, after: uuid.UUID | None, limit: int
    ) -> tuple[list[LinkClicker], str | None]:
        rows = await self.repo.clickers(campaign_id, link_id(url), after, limit)
        next_cursor = encode_cursor(str(rows[limit - 1].delivery_id)) if len(rows) > limit else None
        return [
            LinkClicker(
                contact_id=row.contact_id,
                email=row.email,
                clicks=int(row.clicks),
                machine_clicks=int(row.machine_clicks),
                first_clicked_at=row.first_at,
                last_clicked_at=row.last_at,
            )
            for row in rows[:limit]
        ], next_cursor

    async def workspace_summary(
        self, start: date | None, end: date | None, today: date
    ) -> WorkspaceSummary:
        end = end or today
        start = start or end - timedelta(days=29)
        if start > end:
            raise ValidationFailed.single("from", "must not be after `to`")
        if (end - start).days >= MAX_RANGE_DAYS:
            raise ValidationFailed.single(
                "from", f"the range may span at most {MAX_RANGE_DAYS} days"
            )
        totals, days = await self.repo.daily(start, end)
        return WorkspaceSummary(
            start=start,
            end=end,
            totals=Counters.of(totals),
            rates=Rates.of(totals),
            days=[DaySummary(day=day, **Counters.of(c).model_dump()) for day, c in days],
        )

    async def contact_engagement(
        self, contact_id: uuid.UUID, before_seq: int | None, limit: int
    ) -> ContactEngagement:
        counts = await self.repo.contact_event_counts(contact_id)
        firsts = await self.repo.contact_firsts(contact_id)
        events = await self.repo.contact_history(contact_id, before_seq, limit)
        next_cursor = encode_cursor(str(events[limit - 1].seq)) if len(events) > limit else None

        def count(kind: str) -> int:
            return counts.get(f"email.{kind}", (0, None))[0]

        summary = ContactEngagementSummary(
            sent=count("sent"),
            bounced=count("bounced"),
            complained=count("complained"),
            unsubscribed=count("unsubscribed"),
            replied=count("replied"),
            opens=count("opened"),
            clicks=count("clicked"),
            messages_opened=firsts.get("open", 0),
            messages_opened_by_person=firsts.get("open_h", 0),
            messages_clicked=firsts.get("click", 0),
            messages_clicked_by_person=firsts.get("click_h", 0),
            last_opened_at=counts.get("email.opened", (0, None))[1],
            last_clicked_at=counts.get("email.clicked", (0, None))[1],
        )
        data = [
            EngagementEvent(
                id=event.id,
                type=event.type,
                occurred_at=event.occurred_at,
                send_id=str(event.data.get("send_id")) if event.data.get("send_id") else None,
                data=event.data,
            )
            for event in events[:limit]
        ]
        return ContactEngagement(
            contact_id=contact_id, summary=summary, data=data, next_cursor=next_cursor
        )
