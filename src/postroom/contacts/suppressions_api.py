"""Routes: /v1/suppressions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.contact_fields import FieldError, normalize_email
from postroom.contacts.lists_repository import SuppressionRepository
from postroom.contacts.lists_service import SuppressionService
from postroom.contacts.schemas import SuppressionOut, SuppressionWrite
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_resolver
from postroom.http.principal import Principal
from postroom.http.routing import ApiRoute
from postroom.models.contacts import email_hash

router = APIRouter(route_class=ApiRoute, tags=["suppressions"])
Paging = Annotated[PageParams, Depends(page_params)]
Reason = Literal["bounce", "complaint", "unsubscribe", "manual"]


async def _suppressed(session: AsyncSession, principal: Principal, raw: str) -> bool:
    try:
        _display, key = normalize_email(raw)
    except FieldError:
        return False
    assert principal.workspace_id is not None
    rows = await SuppressionRepository(session, principal.workspace_id).of_hash(email_hash(key))
    return bool(rows)


register_path_resolver("email", "suppression", _suppressed)


@router.post("/v1/suppressions", status_code=201, **requires("suppressions:write"))
async def add_suppression(
    body: SuppressionWrite, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> SuppressionOut:
    """Suppress an address, whether or not a contact exists for it. `unsubscribe` blocks
    marketing mail; `bounce`, `complaint` and `manual` block everything."""
    row = await SuppressionService(session, workspace_id, ctx.clock.now()).add(
        body.email, body.reason, body.note
    )
    return SuppressionOut.model_validate(row)


@router.get("/v1/suppressions", **requires("suppressions:read"))
async def list_suppressions(
    session: Session, workspace_id: WorkspaceId, paging: Paging, reason: Reason | None = None
) -> Page[SuppressionOut]:
    rows = await SuppressionRepository(session, workspace_id).page(
        paging.after_id, paging.limit, reason
    )
    page, cursor = page_of(rows, paging.limit)
    return Page(data=[SuppressionOut.model_validate(r) for r in page], next_cursor=cursor)


@router.get("/v1/suppressions/{email}", **requires("suppressions:read"))
async def get_suppression(
    email: str, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> list[SuppressionOut]:
    """Every suppression of this address (one per reason)."""
    rows = await SuppressionService(session, workspace_id, ctx.clock.now()).of_email(email)
    return [SuppressionOut.model_validate(r) for r in rows]


@router.delete("/v1/suppressions/{email}", status_code=204, **requires("suppressions:write"))
async def remove_suppression(
    email: str,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    reason: Annotated[Reason | None, Query(description="Only this reason; default all")] = None,
) -> Response:
    await SuppressionService(session, workspace_id, ctx.clock.now()).remove(email, reason)
    return Response(status_code=204)
