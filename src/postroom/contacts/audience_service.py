"""Saved segments and audience previews (count, sample, locale coverage)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal_column, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.audience import Audience, Purpose, audience_where
from postroom.contacts.lists_repository import ListRepository
from postroom.contacts.segments.schema import FilterCondition, InvalidFilter, parse_filter
from postroom.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from postroom.ids import uuid7
from postroom.models.contacts import Contact, Segment

SAMPLE_SIZE = 10


@dataclass(slots=True)
class Preview:
    count: int
    sample: list[Contact]
    locales: dict[str, int]


def checked_filter(data: Any, field: str = "filter") -> FilterCondition:
    try:
        return parse_filter(data)
    except InvalidFilter as error:
        raise error.prefixed(field) from None


class AudienceService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID, now: datetime) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.dialect = session.bind.dialect.name if session.bind else "sqlite"

    # --- segments ------------------------------------------------------------------------

    async def get_segment(self, segment_id: uuid.UUID) -> Segment:
        query = select(Segment).where(
            Segment.workspace_id == self.workspace_id, Segment.id == segment_id
        )
        row = (await self.session.execute(query)).scalar_one_or_none()
        if row is None:
            raise NotFound("segment", segment_id)
        return row

    async def page_segments(self, after: uuid.UUID | None, limit: int) -> list[Segment]:
        query = (
            select(Segment)
            .where(Segment.workspace_id == self.workspace_id)
            .order_by(Segment.id)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(Segment.id > after)
        return list((await self.session.execute(query)).scalars())

    async def create_segment(self, name: str, description: str | None, flt: Any) -> Segment:
        condition = checked_filter(flt)
        row = Segment(
            id=uuid7(),
            workspace_id=self.workspace_id,
            name=name,
            description=description,
            filter=condition.model_dump(mode="json", exclude_none=True),
            created_at=self.now,
            updated_at=self.now,
        )
        self.session.add(row)
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            raise Conflict(f"a segment named '{name}' already exists") from None
        return row

    async def update_segment(self, segment_id: uuid.UUID, changes: dict[str, Any]) -> Segment:
        row = await self.get_segment(segment_id)
        if "filter" in changes:
            row.filter = checked_filter(changes["filter"]).model_dump(
                mode="json", exclude_none=True
            )
        if changes.get("name") and changes["name"] != row.name:
            clash = await self.session.execute(
                select(Segment.id).where(
                    Segment.workspace_id == self.workspace_id, Segment.name == changes["name"]
                )
            )
            if clash.first() is not None:
                raise Conflict(f"a segment named '{changes['name']}' already exists")
            row.name = changes["name"]
        if "description" in changes:
            row.description = changes["description"]
        row.updated_at = self.now
        await self.session.flush()
        return row

    async def delete_segment(self, segment_id: uuid.UUID) -> None:
        await self.session.delete(await self.get_segment(segment_id))
        await self.session.flush()

    # --- audiences -----------------------------------------------------------------------

    async def check(self, audience: Audience, prefix: str = "") -> dict[uuid.UUID, FilterCondition]:
        """Every list and segment the audience names must exist in this workspace (422
        naming the field otherwise); returns the segment filters."""
        problems: list[FieldProblem] = []
        lists = ListRepository(self.session, self.workspace_id)
        for name in ("lists", "exclude_lists"):
            ids: list[uuid.UUID] = getattr(audience, name)
            known = await lists.existing_ids(ids)
            problems += [
                FieldProblem(
                    f"{prefix}{name}.{i}", f"no list {value} in this workspace", "not_found"
                )
                for i, value in enumerate(ids)
                if value not in known
            ]
        filters: dict[uuid.UUID, FilterCondition] = {}
        for name in ("segment_id", "exclude_segment_id"):
            segment_id = getattr(audience, name)
            if segment_id is None:
                continue
            try:
                segment = await self.get_segment(segment_id)
            except NotFound:
                problems.append(
                    FieldProblem(
                        f"{prefix}{name}", f"no segment {segment_id} in this workspace", "not_found"
                    )
                )
                continue
            filters[segment_id] = parse_filter(segment.filter)
        if audience.filter is not None:
            try:
                parse_filter(audience.filter.model_dump(mode="json"))
            except InvalidFilter as error:
                problems += error.prefixed(f"{prefix}filter").problems
        if problems:
            raise ValidationFailed(problems, "the audience is invalid")
        return filters

    async def where(self, audience: Audience, purpose: Purpose = "marketing") -> Any:
        filters = await self.check(audience)
        return audience_where(
            audience,
            workspace_id=self.workspace_id,
            now=self.now,
            dialect_name=self.dialect,
            segment_filters=filters,
            purpose=purpose,
        )

    async def preview(self, audience: Audience, purpose: Purpose = "marketing") -> Preview:
        where = await self.where(audience, purpose)
        count = (
            await self.session.execute(select(func.count()).select_from(Contact).where(where))
        ).scalar_one()
        sample = list(
            (
                await self.session.execute(
                    select(Contact).where(where).order_by(Contact.id).limit(SAMPLE_SIZE)
                )
            ).scalars()
        )
        # One expression object for SELECT and GROUP BY, with no bind parameter in it
        # (PostgreSQL would see two different parameters as two different expressions).
        locale = func.coalesce(Contact.locale, literal_column("''"))
        locale_rows = await self.session.execute(
            select(locale, func.count()).where(where).group_by(locale)
        )
        locales = {str(locale) or "unknown": int(n) for locale, n in locale_rows.all()}
        return Preview(count=int(count), sample=sample, locales=locales)
