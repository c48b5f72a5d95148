"""Routes: /v1/contacts."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from postroom.contacts.lists_service import ListService
from postroom.contacts.repository import ContactRepository
from postroom.contacts.schemas import (
    BulkDelete,
    BulkDeleteResult,
    BulkRowResult,
    BulkUpsert,
    BulkUpsertResult,
    ContactOut,
    ContactPatch,
    ContactStatus,
    ContactWrite,
)
from postroom.contacts.service import ContactService
from postroom.errors import NotFound
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.instants import UtcInstant
from postroom.http.pagination import (
    Page,
    PageParams,
    decode_int_cursor,
    encode_cursor,
    page_of,
    page_params,
)
from postroom.http.path_ids import register_path_id
from postroom.http.routing import ApiRoute
from postroom.models.contacts import Contact

router = APIRouter(route_class=ApiRoute, tags=["contacts"])
register_path_id("contact_id", Contact)

Paging = Annotated[PageParams, Depends(page_params)]


def _out(contact: Contact) -> ContactOut:
    return ContactOut.model_validate(contact)


async def _subscribe_to(
    session: Any,
    workspace_id: uuid.UUID,
    ctx: Ctx,
    list_ids: list[uuid.UUID],
    contact_ids: list[uuid.UUID],
) -> None:
    if not list_ids or not contact_ids:
        return
    lists = ListService(session, workspace_id, ctx.clock.now(), ctx=ctx)
    for list_id in list_ids:
        await lists.subscribe(await lists.get(list_id), contact_ids, source="api")


@router.post(
    "/v1/contacts",
    status_code=201,
    responses={200: {"model": ContactOut, "description": "An existing contact was updated"}},
    **requires("contacts:write"),
)
async def upsert_contact(
    body: ContactWrite, response: Response, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ContactOut:
    """Create or update a contact: matched by `external_id` when given, else by email.
    201 when created, 200 when updated; 409 when the external id and the email belong to
    two different contacts."""
    now = ctx.clock.now()
    service = ContactService(session, workspace_id, now)
    lists = ListService(session, workspace_id, now)
    for index, list_id in enumerate(body.lists):
        if await lists.lists.get(list_id) is None:
            raise NotFound(f"lists.{index}: list", list_id)
    result = await service.upsert(body.model_dump(exclude={"lists"}, exclude_none=True))
    await _subscribe_to(session, workspace_id, ctx, body.lists, [result.contact.id])
    response.status_code = 201 if result.created else 200
    return _out(result.contact)


@router.get("/v1/contacts", **requires("contacts:read"))
async def list_contacts(
    session: Session,
    workspace_id: WorkspaceId,
    paging: Paging,
    status: ContactStatus | None = None,
    list_id: uuid.UUID | None = None,
    locale: Annotated[str | None, Query(max_length=35)] = None,
    updated_since: Annotated[
        UtcInstant | None, Query(description="An instant; without an offset it is UTC")
    ] = None,
    search: Annotated[
        str | None,
        Query(min_length=1, max_length=320, description="Prefix of email, first or last name"),
    ] = None,
) -> Page[ContactOut]:
    rows = await ContactRepository(session, workspace_id).page(
        after=paging.after_id,
        limit=paging.limit,
        status=status,
        list_id=list_id,
        locale=locale,
        updated_since=updated_since,
        search=search,
    )
    page, cursor = page_of(rows, paging.limit)
    return Page(data=[_out(r) for r in page], next_cursor=cursor)


@router.get("/v1/contacts/lookup", **requires("contacts:read"))
async def lookup_contact(
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    email: Annotated[str | None, Query(max_length=320)] = None,
    external_id: Annotated[str | None, Query(max_length=255)] = None,
) -> ContactOut:
    service = ContactService(session, workspace_id, ctx.clock.now())
    return _out(await service.lookup(email=email, external_id=external_id))


@router.post("/v1/contacts/bulk", **requires("contacts:write"))
async def bulk_upsert_contacts(
    body: BulkUpsert, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> BulkUpsertResult:
    """Upsert up to 1,000 contacts; every row gets its own result, bad rows don't stop the
    others."""
    now = ctx.clock.now()
    lists = ListService(session, workspace_id, now)
    for index, list_id in enumerate(body.lists):
        if await lists.lists.get(list_id) is None:
            raise NotFound(f"lists.{index}: list", list_id)
    outcomes = await ContactService(session, workspace_id, now).bulk_upsert(body.contacts)
    ok = [o.contact_id for o in outcomes if o.contact_id is not None]
    await _subscribe_to(session, workspace_id, ctx, body.lists, ok)
    results = [
        BulkRowResult(
            index=o.index,
            status=o.status,
            id=o.contact_id,
            errors=[
                {
                    "field": f"contacts.{o.index}.{o.field}",
                    "message": o.message or "",
                    "code": o.code or "invalid",
                }
            ]
            if o.status == "failed"
            else None,
        )
        for o in outcomes
    ]
    return BulkUpsertResult(
        created=sum(o.status == "created" for o in outcomes),
        updated=sum(o.status == "updated" for o in outcomes),
        failed=sum(o.status == "failed" for o in outcomes),
        results=results,
    )


@router.post("/v1/contacts/bulk-delete", **requires("contacts:write"))
async def bulk_delete_contacts(
    body: BulkDelete, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> BulkDeleteResult:
    missing = await ContactService(session, workspace_id, ctx.clock.now()).delete(body.ids)
    return BulkDeleteResult(deleted=len(set(body.ids)) - len(set(missing)), not_found=missing)


@router.get("/v1/contacts/{contact_id}", **requires("contacts:read"))
async def get_contact(
    contact_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ContactOut:
    return _out(await ContactService(session, workspace_id, ctx.clock.now()).get(contact_id))


@router.patch("/v1/contacts/{contact_id}", **requires("contacts:write"))
async def patch_contact(
    contact_id: uuid.UUID, body: ContactPatch, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ContactOut:
    """Change only the fields given; `null` clears a field; in `attributes`, `null`
    deletes that key and other keys are merged."""
    service = ContactService(session, workspace_id, ctx.clock.now())
    return _out(await service.patch(contact_id, body.model_dump(exclude_unset=True)))


@router.delete("/v1/contacts/{contact_id}", status_code=204, **requires("contacts:write"))
async def delete_contact(
    contact_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    await ContactService(session, workspace_id, ctx.clock.now()).delete([contact_id])
    return Response(status_code=204)


@router.post("/v1/contacts/{contact_id}/erase", status_code=204, **requires("contacts:write"))
async def erase_contact(
    contact_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    """GDPR erasure: removes the person and all personal data; a hashed tombstone stays in
    the suppression list so a later import cannot mail them again."""
    await ContactService(session, workspace_id, ctx.clock.now()).erase(contact_id)
    return Response(status_code=204)


@router.get("/v1/contacts/{contact_id}/events", **requires("contacts:read"))
async def contact_events(
    contact_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[dict[str, Any]]:
    """The contact's events, newest first."""
    after = decode_int_cursor(cursor)
    rows = await ContactRepository(session, workspace_id).events_of(contact_id, after, limit)
    next_cursor = encode_cursor(str(rows[limit - 1].seq)) if len(rows) > limit else None
    data = [
        {"id": str(e.id), "type": e.type, "data": e.data, "occurred_at": e.occurred_at.isoformat()}
        for e in rows[:limit]
    ]
    return Page(data=data, next_cursor=next_cursor)
