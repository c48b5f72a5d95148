"""Webhook delivery queries for the sender: claim due rows with a lease, record attempts
in batches, keep endpoint health. Like the mail ledger, every state change is conditional
on the row's status and lease owner, so two senders never both finish one delivery."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.events.service import record
from postroom.models.webhooks import CLAIMABLE_WEBHOOK, WebhookDelivery, WebhookEndpoint

# Gaps between attempts: 8 attempts in all, then the delivery has failed.
RETRY_GAPS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_GAPS) + 1
DISABLE_AFTER_FAILING = timedelta(days=5)

_TABLE = cast(Table, WebhookDelivery.__table__)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: uuid.UUID
    workspace_id: uuid.UUID
    endpoint_id: uuid.UUID
    kind: str
    event_id: uuid.UUID | None
    event_type: str
    contact_id: uuid.UUID | None
    contact_email: str | None
    resource_type: str | None
    resource_id: uuid.UUID | None
    data: dict[str, Any]
    occurred_at: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    secrets: tuple[str, ...]  # encrypted; current first


@dataclass(slots=True)
class Attempt:
    """The outcome of one HTTP attempt."""

    delivery: ClaimedDelivery
    succeeded: bool
    response_status: int | None
    latency_ms: int
    error: str | None

    @property
    def gone(self) -> bool:
        return self.response_status == 410


def _due(now: datetime) -> Any:
    return or_(
        and_(WebhookDelivery.status.in_(CLAIMABLE_WEBHOOK), WebhookDelivery.next_attempt_at <= now),
        # A sender that died mid-request: its lease ran out, the row is due again.
        and_(WebhookDelivery.status == "sending", WebhookDelivery.lease_expires_at < now),
    )


async def claim(
    session: AsyncSession,
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    dialect: str,
) -> list[ClaimedDelivery]:
    enabled = exists().where(
        WebhookEndpoint.id == WebhookDelivery.endpoint_id, WebhookEndpoint.enabled.is_(True)
    )
    due = (
        select(WebhookDelivery.id)
        .where(_due(now), enabled)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    if dialect == "postgresql":
        due = due.with_for_update(skip_locked=True, of=WebhookDelivery)
    result = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(due.scalar_subquery()), _due(now))
        .values(
            status="sending",
            lease_owner=owner,
            lease_expires_at=now + lease,
            attempts=WebhookDelivery.attempts + 1,
            updated_at=now,
        )
        .returning(
            WebhookDelivery.id,
            WebhookDelivery.workspace_id,
            WebhookDelivery.endpoint_id,
            WebhookDelivery.kind,
            WebhookDelivery.event_id,
            WebhookDelivery.event_type,
            WebhookDelivery.contact_id,
            WebhookDelivery.contact_email,
            WebhookDelivery.resource_type,
            WebhookDelivery.resource_id,
            WebhookDelivery.data,
            WebhookDelivery.occurred_at,
            WebhookDelivery.attempts,
        )
        .execution_options(synchronize_session=False)
    )
    return [ClaimedDelivery(*tuple(row)) for row in result.all()]


async def targets(
    session: AsyncSession, endpoint_ids: Sequence[uuid.UUID], now: datetime
) -> dict[uuid.UUID, Target]:
    rows = await session.execute(
        select(
            WebhookEndpoint.id,
            WebhookEndpoint.url,
            WebhookEndpoint.secret,
            WebhookEndpoint.previous_secret,
            WebhookEndpoint.previous_secret_expires_at,
        ).where(WebhookEndpoint.id.in_(list(endpoint_ids)))
    )
    found: dict[uuid.UUID, Target] = {}
    for endpoint_id, url, secret, previous, expires in rows.all():
        kept = (
            (secret,)
            if previous is None or expires is None or expires <= now
            else (secret, previous)
        )
        found[endpoint_id] = Target(url, kept)
    return found


def outcome_values(attempt: Attempt, now: datetime) -> dict[str, Any]:
    """The new column values of a delivery after ``attempt``."""
    row = attempt.delivery
    values: dict[str, Any] = {
        "_id": row.id,
        "response_status": attempt.response_status,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "last_attempt_at": now,
        "updated_at": now,
    }
    if attempt.succeeded:
        values.update(status="succeeded", delivered_at=now, next_attempt_at=now)
    elif attempt.gone or row.kind == "test" or row.attempts >= MAX_ATTEMPTS:
        values.update(status="failed", delivered_at=None, next_attempt_at=now)
    else:
        gap = RETRY_GAPS[min(row.attempts, len(RETRY_GAPS)) - 1]
        values.update(status="retrying", delivered_at=None, next_attempt_at=now + gap)
    return values


async def finish(session: AsyncSession, owner: str, outcomes: Sequence[dict[str, Any]]) -> int:
    """Write the outcomes (one executemany) for rows this sender still holds."""
    if not outcomes:
        return 0
    names = [k for k in outcomes[0] if k != "_id"]
    values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in names}
    values.update(lease_owner=None, lease_expires_at=None)
    statement = (
        update(_TABLE)
        .where(
            and_(
                _TABLE.c.id == bindparam("_id"),
                _TABLE.c.status == "sending",
                _TABLE.c.lease_owner == owner,
            )
        )
        .values(values)
    )
    params = [{"_id": o["_id"], **{f"v_{n}": o[n] for n in names}} for o in outcomes]
    result = await session.execute(statement, params)
    return int(getattr(result, "rowcount", 0) or 0)


async def update_health(session: AsyncSession, attempts: Sequence[Attempt], now: datetime) -> None:
    """Endpoint health after a batch: a success clears ``failing_since``; failures only
    start it. An endpoint answering 410, or failing for five days, is disabled."""
    succeeded = {a.delivery.endpoint_id for a in attempts if a.succeeded}
    failed = {a.delivery.endpoint_id for a in attempts if not a.succeeded} - succeeded
    gone = {a.delivery.endpoint_id for a in attempts if a.gone}
    if succeeded:
        await session.execute(
            update(WebhookEndpoint)
            .where(
                WebhookEndpoint.id.in_(list(succeeded)), WebhookEndpoint.failing_since.is_not(None)
            )
            .values(failing_since=None)
        )
    if failed:
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id.in_(list(failed)), WebhookEndpoint.failing_since.is_(None))
            .values(failing_since=now)
        )
        stale = await session.execute(
            select(WebhookEndpoint.id).where(
                WebhookEndpoint.id.in_(list(failed)),
                WebhookEndpoint.failing_since <= now - DISABLE_AFTER_FAILING,
            )
        )
        for endpoint_id in stale.scalars():
            if endpoint_id not in gone:
                await disable(session, endpoint_id, "failing for 5 days", now)
    for endpoint_id in gone:
        await disable(session, endpoint_id, "the endpoint answered 410 Gone", now)


async def disable(
    session: AsyncSession, endpoint_id: uuid.UUID, reason: str, now: datetime
) -> None:
    """Disable an endpoint, fail its queued deliveries (replay brings them back) and tell
    of it with a ``webhook.endpoint_disabled`` event (other endpoints may listen)."""
    result = await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled.is_(True))
        .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
        .returning(WebhookEndpoint.workspace_id, WebhookEndpoint.url)
    )
    row = result.first()
    if row is None:
        return  # already disabled
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status.in_(CLAIMABLE_WEBHOOK),
        )
        .values(status="failed", error=f"endpoint disabled: {reason}", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await record(
        session,
        workspace_id=row.workspace_id,
        type="webhook.endpoint_disabled",
        occurred_at=now,
        resource_type="webhook",
        resource_id=endpoint_id,
        data={"webhook_id": str(endpoint_id), "url": row.url, "reason": reason},
    )
