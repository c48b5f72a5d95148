"""Reads of the analytics counters (all SQL of the analytics routes).

Every read is a few primary-key or small-index lookups on the counter tables, never a
scan of ``events`` or ``deliveries``: a campaign's sends are found through
``analytics_send_stats.campaign_id``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.models.analytics import (
    COUNTERS,
    AnalyticsDaily,
    AnalyticsDomain,
    AnalyticsFirst,
    AnalyticsHourly,
    AnalyticsLink,
    AnalyticsLinkClicker,
    AnalyticsSendStats,
)
from postroom.models.delivery import Delivery
from postroom.models.platform import Event

Counts = dict[str, int]


def _sums(model: Any) -> list[ColumnElement[Any]]:
    return [func.coalesce(func.sum(getattr(model, c)), 0).label(c) for c in COUNTERS]


def _aware(value: Any) -> datetime | None:
    # max() of a UTCDateTime column comes back untyped on SQLite (a naive string).
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _counts(row: Any) -> Counts:
    return {c: int(getattr(row, c) or 0) for c in COUNTERS}


class AnalyticsRepository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    def _sends_of(self, campaign_id: uuid.UUID) -> Select[uuid.UUID]:
        return select(AnalyticsSendStats.send_id).where(
            AnalyticsSendStats.workspace_id == self.workspace_id,
            AnalyticsSendStats.campaign_id == campaign_id,
        )

    async def totals(self, campaign_id: uuid.UUID) -> Counts:
        row = (
            await self.session.execute(
                select(*_sums(AnalyticsSendStats)).where(
                    AnalyticsSendStats.workspace_id == self.workspace_id,
                    AnalyticsSendStats.campaign_id == campaign_id,
                )
            )
        ).one()
        return _counts(row)

    async def hourly(self, campaign_id: uuid.UUID) -> list[tuple[Any, Counts]]:
        rows = await self.session.execute(
            select(AnalyticsHourly.hour, *_sums(AnalyticsHourly))
            .where(AnalyticsHourly.send_id.in_(self._sends_of(campaign_id)))
            .group_by(AnalyticsHourly.hour)
            .order_by(AnalyticsHourly.hour)
        )
        return [(row.hour, _counts(row)) for row in rows]

    async def domains(self, campaign_id: uuid.UUID, limit: int) -> list[tuple[str, Counts]]:
        sent = func.sum(AnalyticsDomain.sent)
        rows = await self.session.execute(
            select(AnalyticsDomain.domain, *_sums(AnalyticsDomain))
            .where(AnalyticsDomain.send_id.in_(self._sends_of(campaign_id)))
            .group_by(AnalyticsDomain.domain)
            .order_by(sent.desc(), AnalyticsDomain.domain)
            .limit(limit)
        )
        return [(row.domain, _counts(row)) for row in rows]

    async def links(self, campaign_id: uuid.UUID) -> list[Any]:
        rows = await self.session.execute(
            select(
                AnalyticsLink.link_id,
                func.max(AnalyticsLink.url).label("url"),
                func.sum(AnalyticsLink.clicks).label("clicks"),
                func.sum(AnalyticsLink.machine_clicks).label("machine_clicks"),
                func.sum(AnalyticsLink.unique_clicks).label("unique_clicks"),
            )
            .where(AnalyticsLink.send_id.in_(self._sends_of(campaign_id)))
            .group_by(AnalyticsLink.link_id)
            .order_by(func.sum(AnalyticsLink.clicks).desc(), AnalyticsLink.link_id)
        )
        return list(rows)

    async def clickers(
        self, campaign_id: uuid.UUID, link_id: str, after: uuid.UUID | None, limit: int
    ) -> list[Any]:
        query = (
            select(
                AnalyticsLinkClicker.delivery_id,
                AnalyticsLinkClicker.contact_id,
                Delivery.email,
                AnalyticsLinkClicker.clicks,
                AnalyticsLinkClicker.machine_clicks,
                AnalyticsLinkClicker.first_at,
                AnalyticsLinkClicker.last_at,
            )
            .join(Delivery, Delivery.id == AnalyticsLinkClicker.delivery_id)
            .where(
                AnalyticsLinkClicker.send_id.in_(self._sends_of(campaign_id)),
                AnalyticsLinkClicker.link_id == link_id,
            )
            .order_by(AnalyticsLinkClicker.delivery_id)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(AnalyticsLinkClicker.delivery_id > after)
        return list(await self.session.execute(query))

    async def daily(self, start: date, end: date) -> tuple[Counts, list[tuple[date, Counts]]]:
        where = (
            AnalyticsDaily.workspace_id == self.workspace_id,
            AnalyticsDaily.day >= start,
            AnalyticsDaily.day <= end,
        )
        total = (await self.session.execute(select(*_sums(AnalyticsDaily)).where(*where))).one()
        rows = await self.session.execute(
            select(AnalyticsDaily.day, *_sums(AnalyticsDaily))
            .where(*where)
            .group_by(AnalyticsDaily.day)
            .order_by(AnalyticsDaily.day)
        )
        return _counts(total), [(row.day, _counts(row)) for row in rows]

    # -- per contact ------------------------------------------------------------------

    async def contact_history(
        self, contact_id: uuid.UUID, before_seq: int | None, limit: int
    ) -> list[Event]:
        """The contact's ``email.*`` events, newest first (the index on
        ``(contact_id, occurred_at)`` keeps this a short range read)."""
        query = (
            select(Event)
            .where(
                Event.workspace_id == self.workspace_id,
                Event.contact_id == contact_id,
                Event.type.like("email.%"),
            )
            .order_by(Event.seq.desc())
            .limit(limit + 1)
        )
        if before_seq is not None:
            query = query.where(Event.seq < before_seq)
        return list((await self.session.execute(query)).scalars())

    async def contact_event_counts(
        self, contact_id: uuid.UUID
    ) -> dict[str, tuple[int, datetime | None]]:
        """Per ``email.*`` type: how many, and the latest."""
        rows = await self.session.execute(
            select(Event.type, func.count(), func.max(Event.occurred_at))
            .where(
                Event.workspace_id == self.workspace_id,
                Event.contact_id == contact_id,
                Event.type.like("email.%"),
            )
            .group_by(Event.type)
        )
        return {str(kind): (int(n), _aware(last)) for kind, n, last in rows}

    async def contact_firsts(self, contact_id: uuid.UUID) -> dict[str, int]:
        """How many messages the contact opened/clicked (any, and as a person)."""
        rows = await self.session.execute(
            select(AnalyticsFirst.kind, func.count())
            .join(Delivery, Delivery.id == AnalyticsFirst.delivery_id)
            .where(
                AnalyticsFirst.contact_id == contact_id,
                Delivery.workspace_id == self.workspace_id,
            )
            .group_by(AnalyticsFirst.kind)
        )
        return {str(kind): int(n) for kind, n in rows}


async def erase_contact(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, _email_key: str
) -> None:
    """Erase hook: the contact's per-recipient analytics rows go (the counters keep only
    anonymous sums). The rows also cascade with the deliveries; deleting them here does
    not depend on the order in which erasure removes the rest."""
    from sqlalchemy import delete

    deliveries = select(Delivery.id).where(
        Delivery.workspace_id == workspace_id, Delivery.contact_id == contact_id
    )
    await session.execute(
        delete(AnalyticsFirst).where(
            AnalyticsFirst.contact_id == contact_id, AnalyticsFirst.delivery_id.in_(deliveries)
        )
    )
    await session.execute(
        delete(AnalyticsLinkClicker).where(
            AnalyticsLinkClicker.contact_id == contact_id,
            AnalyticsLinkClicker.delivery_id.in_(deliveries),
        )
    )
