"""All SQL of the provider webhooks: credentials, replay keys, counters, and matching a
batch of events to deliveries in two statements."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.lists_repository import dialect_insert
from postroom.feedback.matching import normalize_message_id
from postroom.models.delivery import Delivery
from postroom.models.providers import FeedbackProvider, ProviderReplay


class ProviderRepository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    async def get(self, provider: str) -> FeedbackProvider | None:
        query = select(FeedbackProvider).where(
            FeedbackProvider.workspace_id == self.workspace_id,
            FeedbackProvider.provider == provider,
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def all(self) -> list[FeedbackProvider]:
        query = (
            select(FeedbackProvider)
            .where(FeedbackProvider.workspace_id == self.workspace_id)
            .order_by(FeedbackProvider.provider)
        )
        return list((await self.session.execute(query)).scalars())

    async def add(self, row: FeedbackProvider) -> None:
        self.session.add(row)
        await self.session.flush()

    async def delete(self, row: FeedbackProvider) -> None:
        await self.session.delete(row)
        await self.session.flush()

    async def count_events(
        self,
        provider: str,
        *,
        received: int,
        applied: int,
        unchanged: int,
        unmatched: int,
        now: datetime,
    ) -> None:
        """Bump the counters in one statement (concurrent calls add up, never overwrite)."""
        await self.session.execute(
            update(FeedbackProvider)
            .where(
                FeedbackProvider.workspace_id == self.workspace_id,
                FeedbackProvider.provider == provider,
            )
            .values(
                events_received=FeedbackProvider.events_received + received,
                events_applied=FeedbackProvider.events_applied + applied,
                events_unchanged=FeedbackProvider.events_unchanged + unchanged,
                events_unmatched=FeedbackProvider.events_unmatched + unmatched,
                last_event_at=now,
            )
            .execution_options(synchronize_session=False)
        )

    async def mark_subscription_confirmed(self, provider: str, now: datetime) -> None:
        await self.session.execute(
            update(FeedbackProvider)
            .where(
                FeedbackProvider.workspace_id == self.workspace_id,
                FeedbackProvider.provider == provider,
            )
            .values(subscription_confirmed_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )

    async def remember(
        self, provider: str, token: str, *, now: datetime, expires_at: datetime
    ) -> bool:
        """Keep ``token`` (hashed) until ``expires_at``; False when it was already kept —
        a replay. Expired keys of the workspace go in the same breath."""
        await self.session.execute(
            delete(ProviderReplay).where(
                ProviderReplay.workspace_id == self.workspace_id,
                ProviderReplay.expires_at < now,
            )
        )
        inserted = await self.session.execute(
            dialect_insert(self.session)(ProviderReplay)
            .values(
                workspace_id=self.workspace_id,
                provider=provider,
                token_hash=hashlib.sha256(token.encode()).hexdigest(),
                expires_at=expires_at,
            )
            .on_conflict_do_nothing()
            .returning(ProviderReplay.token_hash)
        )
        return inserted.first() is not None

    async def deliveries_by_id(self, refs: Iterable[str]) -> dict[str, Delivery]:
        """Deliveries of this workspace named by X-Postroom-Delivery values (one query)."""
        wanted: dict[uuid.UUID, list[str]] = {}
        for raw in refs:
            try:
                wanted.setdefault(uuid.UUID(raw.strip().strip("<>")), []).append(raw)
            except ValueError:
                continue
        if not wanted:
            return {}
        rows = await self.session.execute(
            select(Delivery).where(
                Delivery.workspace_id == self.workspace_id, Delivery.id.in_(list(wanted))
            )
        )
        found: dict[str, Delivery] = {}
        for delivery in rows.scalars():
            for raw in wanted[delivery.id]:
                found[raw] = delivery
        return found

    async def deliveries_by_message_id(self, values: Iterable[str]) -> dict[str, Delivery]:
        """Deliveries of this workspace by Message-ID (one query). A Message-ID several
        deliveries share matches none, as in ``postroom.feedback.matching``."""
        wanted: dict[str, list[str]] = {}
        for raw in values:
            normalized = normalize_message_id(raw)
            if normalized is not None:
                wanted.setdefault(normalized, []).append(raw)
        if not wanted:
            return {}
        unique = (
            select(Delivery.message_id)
            .where(
                Delivery.workspace_id == self.workspace_id,
                Delivery.message_id.in_(list(wanted)),
            )
            .group_by(Delivery.message_id)
            .having(func.count() == 1)
        )
        rows = await self.session.execute(
            select(Delivery).where(
                Delivery.workspace_id == self.workspace_id,
                Delivery.message_id.in_(unique),
            )
        )
        found: dict[str, Delivery] = {}
        for delivery in rows.scalars():
            for raw in wanted.get(delivery.message_id or "", []):
                found[raw] = delivery
        return found
