"""Every query of the campaigns domain.

State changes are conditional UPDATEs (``WHERE status IN (<the statuses the action may
leave>)``) so concurrent requests and any number of scheduler processes never both act on
one campaign; the ledger changes of cancel and retry are one set-based UPDATE each.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, and_, exists, func, not_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.models.campaigns import Campaign
from postroom.models.delivery import DELIVERY_STATUSES, Delivery, Send

# Rows still waiting for their first attempt; a relay error is not counted as an attempt,
# so a deferred row with no attempt yet has not had one.
UNSTARTED = or_(
    Delivery.status.in_(("queued", "sending")),
    and_(Delivery.status.in_(("deferred", "uncertain")), Delivery.attempts == 0),
)
REMAINING = ("queued", "sending", "deferred", "uncertain")


class CampaignRepository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    def _scoped(self) -> Select[Campaign]:
        return select(Campaign).where(Campaign.workspace_id == self.workspace_id)

    async def get(self, campaign_id: uuid.UUID, *, lock: bool = False) -> Campaign | None:
        query = self._scoped().where(Campaign.id == campaign_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def refresh(self, campaign: Campaign) -> Campaign:
        await self.session.refresh(campaign)
        return campaign

    async def page(
        self, after: uuid.UUID | None, limit: int, status: str | None = None
    ) -> list[Campaign]:
        query = self._scoped().order_by(Campaign.id).limit(limit + 1)
        if after is not None:
            query = query.where(Campaign.id > after)
        if status is not None:
            query = query.where(Campaign.status == status)
        return list((await self.session.execute(query)).scalars())

    async def add(self, campaign: Campaign) -> None:
        self.session.add(campaign)
        await self.session.flush()

    async def delete(self, campaign: Campaign) -> None:
        await self.session.delete(campaign)
        await self.session.flush()

    async def move(
        self, campaign_id: uuid.UUID, from_: Sequence[str], values: dict[str, Any]
    ) -> bool:
        """Conditional transition: true when this call moved the campaign."""
        result = await self.session.execute(
            update(Campaign)
            .where(
                Campaign.id == campaign_id,
                Campaign.workspace_id == self.workspace_id,
                Campaign.status.in_(list(from_)),
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return cast(CursorResult[Any], result).rowcount == 1

    # -- the campaign's send and its ledger rows -----------------------------------------

    async def set_send_state(self, send_id: uuid.UUID, state: str) -> None:
        await self.session.execute(
            update(Send)
            .where(Send.id == send_id, Send.workspace_id == self.workspace_id)
            .values(state=state)
            .execution_options(synchronize_session=False)
        )

    async def cancel_rows(self, send_id: uuid.UUID, now: datetime) -> int:
        """Queued, deferred and uncertain rows become cancelled (rows in flight finish)."""
        result = await self.session.execute(
            update(Delivery)
            .where(
                Delivery.send_id == send_id,
                Delivery.status.in_(("queued", "deferred", "uncertain")),
            )
            .values(
                status="cancelled",
                smtp_response="the campaign was cancelled",
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return int(cast(CursorResult[Any], result).rowcount)

    async def requeue_failed(self, send_id: uuid.UUID, now: datetime) -> int:
        """Failed and deferred rows go back to the queue, due now."""
        result = await self.session.execute(
            update(Delivery)
            .where(Delivery.send_id == send_id, Delivery.status.in_(("failed", "deferred")))
            .values(status="queued", next_attempt_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(cast(CursorResult[Any], result).rowcount)

    async def counts(self, send_id: uuid.UUID) -> dict[str, int]:
        """Deliveries per status: one GROUP BY over ``ix_deliveries_send_id_status``."""
        rows = await self.session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.send_id == send_id)
            .group_by(Delivery.status)
        )
        counts = dict.fromkeys(DELIVERY_STATUSES, 0)
        counts.update({str(status): int(n) for status, n in rows.all()})
        return counts

    async def sent_since(self, send_id: uuid.UUID, since: datetime) -> int:
        query = select(func.count()).where(
            Delivery.send_id == send_id, Delivery.status == "sent", Delivery.sent_at >= since
        )
        return int((await self.session.execute(query)).scalar_one())

    async def deliveries(
        self, send_id: uuid.UUID, status: str | None, after: uuid.UUID | None, limit: int
    ) -> list[Delivery]:
        query = (
            select(Delivery)
            .where(Delivery.send_id == send_id, Delivery.workspace_id == self.workspace_id)
            .order_by(Delivery.id)
            .limit(limit + 1)
        )
        if status is not None:
            query = query.where(Delivery.status == status)
        if after is not None:
            query = query.where(Delivery.id > after)
        return list((await self.session.execute(query)).scalars())

    async def delivery_count(self, send_id: uuid.UUID) -> int:
        query = select(func.count()).where(Delivery.send_id == send_id)
        return int((await self.session.execute(query)).scalar_one())


# -- scheduler queries (every workspace) -------------------------------------------------


async def claim_due(session: AsyncSession, now: datetime) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Scheduled campaigns whose time came, moved to ``sending`` by one conditional UPDATE:
    a campaign is returned to exactly one scheduler however many run."""
    result = await session.execute(
        update(Campaign)
        .where(Campaign.status == "scheduled", Campaign.scheduled_at <= now)
        .values(status="sending", updated_at=now)
        .returning(Campaign.id, Campaign.workspace_id)
        .execution_options(synchronize_session=False)
    )
    return [(row[0], row[1]) for row in result.all()]


async def live(session: AsyncSession, statuses: Sequence[str]) -> list[Campaign]:
    """The campaigns in ``statuses`` (few: live campaigns only, through the status index)."""
    query = select(Campaign).where(Campaign.status.in_(list(statuses))).order_by(Campaign.id)
    return list((await session.execute(query)).scalars())


async def complete_finished(
    session: AsyncSession, now: datetime
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``sending → sent`` for every campaign whose fan-out finished and whose every
    delivery has had its first attempt, in one statement."""
    campaigns = cast(Table, Campaign.__table__)
    unstarted = exists().where(Delivery.send_id == campaigns.c.send_id, UNSTARTED)
    result = await session.execute(
        update(campaigns)
        .where(
            campaigns.c.status == "sending",
            campaigns.c.fanned_out_at.is_not(None),
            not_(unstarted),
        )
        .values(status="sent", finished_at=now, updated_at=now)
        .returning(campaigns.c.id, campaigns.c.workspace_id)
    )
    return [(row[0], row[1]) for row in result.all()]


async def never_delivered(
    session: AsyncSession, send_id: uuid.UUID, started_before: datetime
) -> bool:
    """True when the send has attempted rows but not one reached a relay's verdict
    (sent, bounced, failed, uncertain): every relay stayed paused or deferring."""
    reached = exists().where(
        Delivery.send_id == send_id,
        Delivery.status.in_(("sent", "bounced", "failed", "uncertain")),
    )
    tried = exists().where(
        Delivery.send_id == send_id,
        Delivery.status == "deferred",
        Delivery.created_at <= started_before,
    )
    query = select(and_(tried, not_(reached)))
    return bool((await session.execute(query)).scalar_one())


def stale_after(hours: float) -> timedelta:
    return timedelta(hours=hours)
