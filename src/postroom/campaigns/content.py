"""A campaign's content: checked when it is saved, frozen into the send when sending
starts, and the subject rules the delivery engine applies to campaign and test sends.

Frozen shapes (``Send.content``):

- template: ``{"versions": {locale: version_id}, "default_locale", "template_id"}`` — the
  template's published locale variants at that moment, chosen per contact by locale;
- pinned version: the same with one locale;
- inline: ``{"inline": {"subject", "html", "text", "preheader"}}``;

plus, optionally, ``"subject_override"`` (the campaign's subject, replacing every
variant's) and ``"subject_prefix"`` (``"[Test] "`` on test sends).
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.errors import FieldProblem, ValidationFailed
from postroom.models.delivery import Send
from postroom.models.domains import SendingDomain
from postroom.models.templates import TemplateVersion
from postroom.templates.compiling import CompiledContent
from postroom.templates.errors import TemplateProblem
from postroom.templates.rendering import compile_content_cached
from postroom.templates.repository import TemplateRepository

IMMUTABLE_VERSIONS = ("published", "unpublished")
TEST_PREFIX = "[Test] "


class ContentGone(Exception):
    """The template, its published versions or the pinned version no longer exist."""


def stored_content(content: dict[str, Any]) -> dict[str, Any]:
    """The campaign column from the request's ``content`` (exactly one source)."""
    sources = [
        name
        for name, given in (
            ("template_id", content.get("template_id") is not None),
            ("version_id", content.get("version_id") is not None),
            (
                "subject",
                any(content.get(k) is not None for k in ("subject", "html", "text")),
            ),
        )
        if given
    ]
    if len(sources) != 1:
        message = (
            "give one of content.template_id, content.version_id or content.subject with html/text"
            if not sources
            else f"give only one of {', '.join('content.' + s for s in sources)}"
        )
        raise ValidationFailed.single("content", message, "content_required")
    if content.get("template_id") is not None:
        return {"template_id": str(content["template_id"])}
    if content.get("version_id") is not None:
        return {"version_id": str(content["version_id"])}
    if not content.get("subject"):
        raise ValidationFailed.single(
            "content.subject", "inline content needs a subject", "required"
        )
    if not (content.get("html") or content.get("text")):
        raise ValidationFailed.single(
            "content.html", "inline content needs html or text", "required"
        )
    inline = {k: content.get(k) for k in ("subject", "html", "text", "preheader")}
    try:
        compile_content_cached(
            subject=inline["subject"] or "",
            html=inline["html"] or "",
            text=inline["text"],
            preheader=inline["preheader"],
            kind="marketing",
        )
    except TemplateProblem as problem:
        raise ValidationFailed(
            [
                FieldProblem(f"content.{e.field}", e.message, "template_invalid")
                for e in problem.errors
            ],
            f"the content does not compile: {problem}",
        ) from None
    return {"inline": inline}


async def check_references(
    session: AsyncSession, workspace_id: uuid.UUID, content: dict[str, Any]
) -> None:
    """A named template or version must exist in the workspace (422 otherwise)."""
    try:
        await freeze(session, workspace_id, content, None)
    except ContentGone as gone:
        field = "content.template_id" if "template_id" in content else "content.version_id"
        raise ValidationFailed.single(field, str(gone), "not_found") from None


async def freeze(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    content: dict[str, Any],
    subject: str | None,
) -> dict[str, Any]:
    """The send's content now; ``ContentGone`` when the template or version is gone."""
    frozen: dict[str, Any]
    if "inline" in content:
        frozen = {"inline": dict(content["inline"])}
    elif "template_id" in content:
        templates = TemplateRepository(session, workspace_id)
        template = await templates.get(uuid.UUID(content["template_id"]))
        if template is None:
            raise ContentGone(f"template {content['template_id']} not found")
        versions = await templates.published([template.id])
        if not versions:
            raise ContentGone(f"template {template.id} has no published version")
        locales = {version.locale: str(version.id) for version in versions}
        default = template.default_locale if template.default_locale in locales else min(locales)
        frozen = {"versions": locales, "default_locale": default, "template_id": str(template.id)}
    else:
        version = (
            await session.execute(
                select(TemplateVersion).where(
                    TemplateVersion.id == uuid.UUID(content["version_id"]),
                    TemplateVersion.workspace_id == workspace_id,
                )
            )
        ).scalar_one_or_none()
        if version is None:
            raise ContentGone(f"template version {content['version_id']} not found")
        if version.status not in IMMUTABLE_VERSIONS:
            raise ContentGone(f"template version {version.id} is a draft: publish it first")
        frozen = {
            "versions": {version.locale: str(version.id)},
            "default_locale": version.locale,
            "template_id": str(version.template_id),
        }
    if subject:
        frozen["subject_override"] = subject
    return frozen


async def frozen_versions_exist(session: AsyncSession, send: Send) -> bool:
    """Every template version frozen into the send still exists."""
    ids = [uuid.UUID(str(v)) for v in (send.content.get("versions") or {}).values()]
    if not ids:
        return True
    query = select(func.count()).where(TemplateVersion.id.in_(ids))
    return int((await session.execute(query)).scalar_one()) == len(ids)


def sender_domain(email: str) -> str:
    return email.rpartition("@")[2].lower()


async def domain_exists(session: AsyncSession, workspace_id: uuid.UUID, email: str) -> bool:
    """The From address is on a sending domain of the workspace."""
    query = select(SendingDomain.id).where(
        SendingDomain.workspace_id == workspace_id,
        func.lower(SendingDomain.domain) == sender_domain(email),
    )
    return (await session.execute(query.limit(1))).first() is not None


# -- used by the delivery engine -----------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _subject_only(subject: str) -> CompiledContent:
    return compile_content_cached(subject=subject, html="", text=" ", kind="transactional")


def subject_adjusted(send: Send, compiled: CompiledContent) -> CompiledContent:
    """``compiled`` with the send's subject override and prefix applied (cached: the
    override is compiled once per process)."""
    content = send.content
    override = content.get("subject_override")
    prefix = content.get("subject_prefix")
    if not override and not prefix:
        return compiled
    subject = str(prefix or "") + str(override or compiled.subject_source)
    adjusted = _subject_only(subject)
    return replace(compiled, subject_source=subject, subject_template=adjusted.subject_template)
