"""Routes: /v1/templates and their versions.

A template that cannot be saved, published or rendered answers 422 with ``errors[]``
giving the field, line and column of each problem. Those carry more than the shared
``ValidationFailed`` problem (which has no line or column), so they are answered here.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.repository import ContactRepository
from postroom.context import AppContext
from postroom.errors import ValidationFailed
from postroom.http.access import requires
from postroom.http.deps import Ctx, CurrentPrincipal, Session, WorkspaceId
from postroom.http.pagination import (
    Page,
    PageParams,
    decode_int_cursor,
    encode_cursor,
    page_of,
    page_params,
)
from postroom.http.path_ids import register_path_id
from postroom.http.problems import problem_response
from postroom.http.routing import ApiRoute
from postroom.models.templates import Template, TemplateVersion
from postroom.templates.content import render_preview
from postroom.templates.errors import TemplateProblem, TemplateWarning
from postroom.templates.schemas import (
    FieldDiffOut,
    PreviewOut,
    PreviewRequest,
    PublishedLocale,
    RollbackRequest,
    TemplateIssue,
    TemplateOut,
    TemplatePatch,
    TemplateWrite,
    VersionDiffOut,
    VersionOut,
    VersionPatch,
    VersionSummary,
    VersionWrite,
)
from postroom.templates.service import SavedVersion, TemplateService
from postroom.templates.variables import PREVIEW_URLS, contact_fields

router = APIRouter(route_class=ApiRoute, tags=["templates"])
register_path_id("template_id", Template, "template")
# A version id resolves in the caller's workspace here; that it belongs to the template
# in the path is checked by the service (another template's version is a 404 too).
register_path_id("version_id", TemplateVersion, "template version")

Paging = Annotated[PageParams, Depends(page_params)]
T = TypeVar("T")


def _issues(warnings: list[TemplateWarning]) -> list[TemplateIssue]:
    return [
        TemplateIssue(field=w.field, message=w.message, line=w.line, column=w.column, code=w.code)
        for w in warnings
    ]


def template_problem_response(problem: TemplateProblem) -> JSONResponse:
    errors = [
        {
            "field": e.field,
            "message": e.message,
            "line": e.line,
            "column": e.column,
            "code": e.code,
        }
        for e in problem.errors
    ]
    return problem_response(
        422,
        f"the template has errors: {problem}",
        code="template_invalid",
        extra={"errors": errors},
    )


async def _guarded(session: AsyncSession, work: Callable[[], Awaitable[T]]) -> T | JSONResponse:
    """Run ``work``; a ``TemplateProblem`` becomes a 422 and nothing it wrote is kept."""
    try:
        return await work()
    except TemplateProblem as problem:
        await session.rollback()
        return template_problem_response(problem)


def _service(
    session: AsyncSession, workspace_id: uuid.UUID, ctx: AppContext, actor: uuid.UUID | None = None
) -> TemplateService:
    return TemplateService(session, workspace_id, ctx.clock.now(), actor)


def _version_out(saved: SavedVersion | TemplateVersion) -> VersionOut:
    version = saved.version if isinstance(saved, SavedVersion) else saved
    out = VersionOut.model_validate(version, from_attributes=True)
    if isinstance(saved, SavedVersion):
        out.warnings = _issues(saved.warnings)
    return out


async def _template_out(service: TemplateService, rows: list[Template]) -> list[TemplateOut]:
    published = await service.published_versions([row.id for row in rows])
    return [
        TemplateOut(
            id=row.id,
            name=row.name,
            kind=row.kind,
            description=row.description,
            default_locale=row.default_locale,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            published=[
                PublishedLocale(locale=v.locale, version_id=v.id, number=v.number)
                for v in published[row.id]
            ],
        )
        for row in rows
    ]


@router.post("/v1/templates", status_code=201, **requires("templates:write"))
async def create_template(
    body: TemplateWrite,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    principal: CurrentPrincipal,
) -> TemplateOut:
    """Create a template (its content goes into versions). 409 when the name is taken."""
    service = _service(session, workspace_id, ctx, principal.key_id)
    row = await service.create(body.name, body.kind, body.description, body.default_locale)
    return (await _template_out(service, [row]))[0]


@router.get("/v1/templates", **requires("templates:read"))
async def list_templates(
    session: Session, workspace_id: WorkspaceId, ctx: Ctx, paging: Paging
) -> Page[TemplateOut]:
    service = _service(session, workspace_id, ctx)
    rows, cursor = page_of(
        await service.templates.page(paging.after_id, paging.limit), paging.limit
    )
    return Page(data=await _template_out(service, rows), next_cursor=cursor)


@router.get("/v1/templates/{template_id}", **requires("templates:read"))
async def get_template(
    template_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> TemplateOut:
    service = _service(session, workspace_id, ctx)
    return (await _template_out(service, [await service.get(template_id)]))[0]


@router.patch("/v1/templates/{template_id}", **requires("templates:write"))
async def update_template(
    template_id: uuid.UUID,
    body: TemplatePatch,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> TemplateOut:
    """Rename, describe or change the default locale (the kind is fixed)."""
    service = _service(session, workspace_id, ctx)
    row = await service.update(template_id, body.model_dump(exclude_unset=True))
    return (await _template_out(service, [row]))[0]


@router.delete("/v1/templates/{template_id}", status_code=204, **requires("templates:write"))
async def delete_template(
    template_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    """Delete a template and all its versions."""
    await _service(session, workspace_id, ctx).delete(template_id)
    return Response(status_code=204)


@router.post(
    "/v1/templates/{template_id}/versions",
    status_code=201,
    response_model=VersionOut,
    **requires("templates:write"),
)
async def create_version(
    template_id: uuid.UUID,
    body: VersionWrite,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    principal: CurrentPrincipal,
) -> VersionOut | JSONResponse:
    """A new draft. `{"from_version": id}` copies that version (the way to edit a
    published one). A syntax error is a 422 with line and column; unknown variables are
    `warnings` in the answer."""
    service = _service(session, workspace_id, ctx, principal.key_id)
    changes = body.model_dump(exclude_unset=True, exclude={"from_version"})

    async def work() -> VersionOut:
        return _version_out(await service.create_version(template_id, changes, body.from_version))

    return await _guarded(session, work)


@router.get("/v1/templates/{template_id}/versions", **requires("templates:read"))
async def list_versions(
    template_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx, paging: Paging
) -> Page[VersionSummary]:
    """The history, newest first, with who created and published each version and when."""
    before = decode_int_cursor(paging.cursor)
    rows = await _service(session, workspace_id, ctx).history(template_id, before, paging.limit)
    page, _ = page_of(rows, paging.limit)
    cursor = encode_cursor(str(page[-1].number)) if len(rows) > paging.limit else None
    return Page(data=[VersionSummary.model_validate(r) for r in page], next_cursor=cursor)


@router.get("/v1/templates/{template_id}/versions/{version_id}", **requires("templates:read"))
async def get_version(
    template_id: uuid.UUID,
    version_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> VersionOut:
    return _version_out(await _service(session, workspace_id, ctx).version(template_id, version_id))


@router.patch(
    "/v1/templates/{template_id}/versions/{version_id}",
    response_model=VersionOut,
    **requires("templates:write"),
)
async def update_version(
    template_id: uuid.UUID,
    version_id: uuid.UUID,
    body: VersionPatch,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> VersionOut | JSONResponse:
    """Change a draft. A published (or unpublished) version is immutable: 409 with its
    `current_status`; create a new draft from it instead."""
    service = _service(session, workspace_id, ctx)
    changes = body.model_dump(exclude_unset=True)

    async def work() -> VersionOut:
        return _version_out(await service.update_version(template_id, version_id, changes))

    return await _guarded(session, work)


@router.post(
    "/v1/templates/{template_id}/versions/{version_id}/publish",
    response_model=VersionOut,
    **requires("templates:write"),
)
async def publish_version(
    template_id: uuid.UUID,
    version_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    principal: CurrentPrincipal,
) -> VersionOut | JSONResponse:
    """Validate and compile a draft (MJML to HTML, CSS inlined, text part generated,
    unsubscribe footer for marketing) and publish it; the version published so far in
    the same locale becomes `unpublished`."""
    service = _service(session, workspace_id, ctx, principal.key_id)

    async def work() -> VersionOut:
        return _version_out(await service.publish(template_id, version_id))

    return await _guarded(session, work)


@router.post(
    "/v1/templates/{template_id}/versions/{version_id}/unpublish", **requires("templates:write")
)
async def unpublish_version(
    template_id: uuid.UUID,
    version_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> VersionOut:
    service = _service(session, workspace_id, ctx)
    return _version_out(await service.unpublish(template_id, version_id))


@router.post(
    "/v1/templates/{template_id}/versions/{version_id}/preview",
    response_model=PreviewOut,
    **requires("templates:read"),
)
async def preview_version(
    template_id: uuid.UUID,
    version_id: uuid.UUID,
    body: PreviewRequest,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> PreviewOut | JSONResponse:
    """Render a version for a contact and/or sample `data`, with placeholder links. A
    template that fails to render (a limit, an error) is a 422, never a 500."""
    service = _service(session, workspace_id, ctx)
    template = await service.get(template_id)
    version = await service.version(template_id, version_id)
    contact = None
    if body.contact_id is not None:
        row = await ContactRepository(session, workspace_id).get(body.contact_id)
        if row is None:
            raise ValidationFailed.single(
                "contact_id", "no contact with this id in this workspace", "not_found"
            )
        contact = contact_fields(row)

    async def work() -> PreviewOut:
        preview = render_preview(template.kind, version, contact, body.data, PREVIEW_URLS)
        rendered = preview.rendered
        return PreviewOut(
            subject=rendered.subject,
            preheader=rendered.preheader,
            html=rendered.html,
            text=rendered.text,
            warnings=_issues(preview.warnings),
        )

    return await _guarded(session, work)


@router.get("/v1/templates/{template_id}/versions/{version_id}/diff", **requires("templates:read"))
async def diff_version(
    template_id: uuid.UUID,
    version_id: uuid.UUID,
    against: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> VersionDiffOut:
    """Unified diffs per field, from version `against` to this one."""
    diffs = await _service(session, workspace_id, ctx).diff(template_id, version_id, against)
    return VersionDiffOut(
        version_id=version_id,
        against=against,
        fields=[
            FieldDiffOut(
                field=d.field,
                changed=d.changed,
                diff=d.diff,
                added_lines=d.added_lines,
                removed_lines=d.removed_lines,
            )
            for d in diffs
        ],
    )


@router.post(
    "/v1/templates/{template_id}/rollback",
    status_code=201,
    response_model=VersionOut,
    **requires("templates:write"),
)
async def rollback_template(
    template_id: uuid.UUID,
    body: RollbackRequest,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    principal: CurrentPrincipal,
) -> VersionOut | JSONResponse:
    """Publish a copy of a formerly published version as a new version number."""
    service = _service(session, workspace_id, ctx, principal.key_id)

    async def work() -> VersionOut:
        return _version_out(await service.rollback(template_id, body.version_id))

    return await _guarded(session, work)
