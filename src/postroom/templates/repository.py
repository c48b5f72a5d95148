"""Template and template version queries, scoped to one workspace."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.models.templates import Template, TemplateVersion


class TemplateRepository:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    def _templates(self) -> Select[Template]:
        return select(Template).where(Template.workspace_id == self.workspace_id)

    def _versions(self) -> Select[TemplateVersion]:
        return select(TemplateVersion).where(TemplateVersion.workspace_id == self.workspace_id)

    async def get(self, template_id: uuid.UUID, *, lock: bool = False) -> Template | None:
        """``lock`` serialises the changes to one template's versions (numbering, the one
        published version per locale) on PostgreSQL; SQLite writers are serial anyway."""
        query = self._templates().where(Template.id == template_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_name(self, name: str) -> Template | None:
        query = self._templates().where(Template.name == name)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def page(self, after: uuid.UUID | None, limit: int) -> list[Template]:
        query = self._templates().order_by(Template.id).limit(limit + 1)
        if after is not None:
            query = query.where(Template.id > after)
        return list((await self.session.execute(query)).scalars())

    async def version(
        self, template_id: uuid.UUID, version_id: uuid.UUID
    ) -> TemplateVersion | None:
        """The version, only when it belongs to this template (and workspace)."""
        query = self._versions().where(
            TemplateVersion.id == version_id, TemplateVersion.template_id == template_id
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def history(
        self, template_id: uuid.UUID, before_number: int | None, limit: int
    ) -> list[TemplateVersion]:
        """Newest first, up to ``limit + 1`` rows (for the next cursor)."""
        query = (
            self._versions()
            .where(TemplateVersion.template_id == template_id)
            .order_by(TemplateVersion.number.desc())
            .limit(limit + 1)
        )
        if before_number is not None:
            query = query.where(TemplateVersion.number < before_number)
        return list((await self.session.execute(query)).scalars())

    async def published(self, template_ids: Sequence[uuid.UUID]) -> list[TemplateVersion]:
        if not template_ids:
            return []
        query = (
            self._versions()
            .where(
                TemplateVersion.template_id.in_(list(template_ids)),
                TemplateVersion.status == "published",
            )
            .order_by(TemplateVersion.locale)
        )
        return list((await self.session.execute(query)).scalars())

    async def published_in_locale(
        self, template_id: uuid.UUID, locale: str
    ) -> TemplateVersion | None:
        query = self._versions().where(
            TemplateVersion.template_id == template_id,
            TemplateVersion.locale == locale,
            TemplateVersion.status == "published",
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def next_number(self, template_id: uuid.UUID) -> int:
        query = select(func.coalesce(func.max(TemplateVersion.number), 0)).where(
            TemplateVersion.template_id == template_id
        )
        return int((await self.session.execute(query)).scalar_one()) + 1

    async def add(self, row: Template | TemplateVersion) -> None:
        self.session.add(row)
        await self.session.flush()

    async def delete(self, row: Template) -> None:
        await self.session.delete(row)
        await self.session.flush()
