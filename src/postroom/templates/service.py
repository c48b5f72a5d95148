"""Template rules: names, drafts, publishing (one published version per locale),
immutability of published versions, history, diffs and rollback.

Every check that can fail runs before the first write of a call, so a 422 leaves
nothing behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.errors import Conflict, NotFound, StateConflict, ValidationFailed
from postroom.ids import uuid7
from postroom.models.templates import Template, TemplateVersion
from postroom.templates.content import VersionContent, check_content, compile_version
from postroom.templates.errors import TemplateWarning
from postroom.templates.locales import normalize_locale
from postroom.templates.rendering import FieldDiff, diff_versions
from postroom.templates.repository import TemplateRepository
from postroom.templates.variables import validate_variables

VERSION = "template version"
CONTENT_FIELDS = ("subject", "preheader", "html", "text", "mjml", "locale", "variables")


@dataclass(frozen=True, slots=True)
class SavedVersion:
    version: TemplateVersion
    warnings: list[TemplateWarning]


class TemplateService:
    def __init__(
        self,
        session: AsyncSession,
        workspace_id: uuid.UUID,
        now: datetime,
        actor: uuid.UUID | None = None,
    ) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.actor = actor  # the API key acting, recorded as created_by/published_by
        self.templates = TemplateRepository(session, workspace_id)

    # --- templates ---------------------------------------------------------------------

    async def get(self, template_id: uuid.UUID, *, lock: bool = False) -> Template:
        row = await self.templates.get(template_id, lock=lock)
        if row is None:
            raise NotFound("template", template_id)
        return row

    async def create(
        self, name: str, kind: str, description: str | None, default_locale: str
    ) -> Template:
        locale = normalize_locale(default_locale, "default_locale")
        if await self.templates.by_name(name) is not None:
            raise Conflict(f"a template named '{name}' already exists")
        row = Template(
            id=uuid7(),
            workspace_id=self.workspace_id,
            name=name,
            kind=kind,
            description=description,
            default_locale=locale,
            created_by=self.actor,
            created_at=self.now,
            updated_at=self.now,
        )
        try:
            async with self.session.begin_nested():
                await self.templates.add(row)
        except IntegrityError:
            raise Conflict(f"a template named '{name}' already exists") from None
        return row

    async def update(self, template_id: uuid.UUID, changes: Mapping[str, Any]) -> Template:
        row = await self.get(template_id)
        if changes.get("default_locale") is not None:
            row.default_locale = normalize_locale(changes["default_locale"], "default_locale")
        if changes.get("name") is not None and changes["name"] != row.name:
            if await self.templates.by_name(changes["name"]) is not None:
                raise Conflict(f"a template named '{changes['name']}' already exists")
            row.name = changes["name"]
        if "description" in changes:
            row.description = changes["description"]
        row.updated_at = self.now
        await self.session.flush()
        return row

    async def delete(self, template_id: uuid.UUID) -> None:
        await self.templates.delete(await self.get(template_id))

    # --- versions ----------------------------------------------------------------------

    async def version(self, template_id: uuid.UUID, version_id: uuid.UUID) -> TemplateVersion:
        """A version of this template: another template's version is not found."""
        row = await self.templates.version(template_id, version_id)
        if row is None:
            raise NotFound(VERSION, version_id)
        return row

    def _content(self, base: VersionContent | None, changes: Mapping[str, Any]) -> VersionContent:
        """Content from ``base`` with ``changes`` applied, validated (422)."""
        values: dict[str, Any] = {}
        for name in CONTENT_FIELDS:
            if name in changes:
                values[name] = changes[name]
        if base is None:
            if not values.get("subject"):
                raise ValidationFailed.single("subject", "a version needs a subject", "missing")
            values.setdefault("html", "")
            base = VersionContent(subject=values["subject"], html=values["html"] or "")
        if "html" in values:
            values["html"] = values["html"] or ""
        if "subject" in values and not values["subject"]:
            raise ValidationFailed.single("subject", "the subject cannot be empty")
        if values.get("locale") is not None:
            values["locale"] = normalize_locale(values["locale"])
        elif "locale" in values:
            del values["locale"]
        if values.get("variables") is not None:
            values["variables"] = validate_variables(values["variables"])
        elif "variables" in values:
            values["variables"] = []
        content = replace(base, **values)
        if not content.html.strip() and not (content.mjml or "").strip():
            raise ValidationFailed.single("html", "give the HTML or the MJML of the message")
        return content

    def _store(self, row: TemplateVersion, content: VersionContent) -> None:
        row.subject = content.subject
        row.preheader = content.preheader
        row.html = content.html
        row.text = content.text
        row.mjml = content.mjml
        row.locale = content.locale
        row.variables = content.variables
        row.updated_at = self.now

    async def _new_version(
        self, template: Template, content: VersionContent, status: str = "draft"
    ) -> TemplateVersion:
        row = TemplateVersion(
            id=uuid7(),
            workspace_id=self.workspace_id,
            template_id=template.id,
            number=await self.templates.next_number(template.id),
            status=status,
            created_by=self.actor,
            created_at=self.now,
        )
        self._store(row, content)
        await self.templates.add(row)
        return row

    async def create_version(
        self, template_id: uuid.UUID, changes: Mapping[str, Any], from_version: uuid.UUID | None
    ) -> SavedVersion:
        """A new draft, empty or copied from ``from_version`` ("edit" a published one)."""
        template = await self.get(template_id, lock=True)
        base = None
        if from_version is not None:
            base = VersionContent.of(await self.version(template.id, from_version))
        elif "locale" not in changes or changes["locale"] is None:
            changes = {**changes, "locale": template.default_locale}
        content = self._content(base, changes)
        warnings = check_content(content)
        return SavedVersion(await self._new_version(template, content), warnings)

    async def update_version(
        self, template_id: uuid.UUID, version_id: uuid.UUID, changes: Mapping[str, Any]
    ) -> SavedVersion:
        row = await self.version(template_id, version_id)
        if row.status != "draft":
            raise StateConflict(VERSION, row.status, "edit (create a new draft from it)")
        content = self._content(VersionContent.of(row), changes)
        warnings = check_content(content)
        self._store(row, content)
        await self.session.flush()
        return SavedVersion(row, warnings)

    async def publish(self, template_id: uuid.UUID, version_id: uuid.UUID) -> SavedVersion:
        """Compile and publish a draft; the version published so far in its locale
        becomes ``unpublished``. A compile error is a ``TemplateProblem`` (422)."""
        template = await self.get(template_id, lock=True)
        row = await self.version(template.id, version_id)
        if row.status != "draft":
            raise StateConflict(VERSION, row.status, "publish")
        return await self._publish(template, row)

    async def _publish(self, template: Template, row: TemplateVersion) -> SavedVersion:
        compiled = compile_version(template.kind, VersionContent.of(row))
        previous = await self.templates.published_in_locale(template.id, row.locale)
        if previous is not None:
            previous.status = "unpublished"
            previous.updated_at = self.now
            # Flushed first: the partial unique index allows one published per locale.
            await self.session.flush()
        row.html = compiled.html
        row.compiled_html = compiled.compiled.html_source
        row.compiled_text = compiled.compiled.text_source
        row.status = "published"
        row.published_at = self.now
        row.published_by = self.actor
        row.updated_at = self.now
        template.updated_at = self.now
        await self.session.flush()
        return SavedVersion(row, compiled.warnings)

    async def unpublish(self, template_id: uuid.UUID, version_id: uuid.UUID) -> TemplateVersion:
        template = await self.get(template_id, lock=True)
        row = await self.version(template.id, version_id)
        if row.status != "published":
            raise StateConflict(VERSION, row.status, "unpublish")
        row.status = "unpublished"
        row.updated_at = self.now
        template.updated_at = self.now
        await self.session.flush()
        return row

    async def rollback(self, template_id: uuid.UUID, version_id: uuid.UUID) -> SavedVersion:
        """Publish a copy of a formerly published version as a new version number."""
        template = await self.get(template_id, lock=True)
        old = await self.version(template.id, version_id)
        if old.status != "unpublished":
            action = "roll back to" + (" (publish it instead)" if old.status == "draft" else "")
            raise StateConflict(VERSION, old.status, action)
        copy = await self._new_version(template, VersionContent.of(old))
        return await self._publish(template, copy)

    async def history(
        self, template_id: uuid.UUID, before_number: int | None, limit: int
    ) -> list[TemplateVersion]:
        template = await self.get(template_id)
        return await self.templates.history(template.id, before_number, limit)

    async def diff(
        self, template_id: uuid.UUID, version_id: uuid.UUID, against: uuid.UUID
    ) -> list[FieldDiff]:
        """Per-field unified diffs from ``against`` to ``version_id``."""
        new = await self.version(template_id, version_id)
        old = await self.version(template_id, against)
        return diff_versions(VersionContent.of(old).diffable(), VersionContent.of(new).diffable())

    async def published_versions(
        self, template_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, list[TemplateVersion]]:
        found: dict[uuid.UUID, list[TemplateVersion]] = {tid: [] for tid in template_ids}
        for row in await self.templates.published(template_ids):
            found[row.template_id].append(row)
        return found
