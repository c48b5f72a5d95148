"""Routes: /v1/lists and their subscriptions."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response

from postroom.contacts.jobs import MEMBERSHIP_JOB
from postroom.contacts.lists_service import ListService
from postroom.contacts.schemas import (
    ListOut,
    ListPatch,
    ListWrite,
    MembershipChange,
    MembershipResult,
    SubscriptionOut,
)
from postroom.contacts.segments.schema import validate_filter
from postroom.errors import ValidationFailed
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_id
from postroom.http.routing import ApiRoute
from postroom.jobs import repository as jobs
from postroom.models.contacts import ContactList

router = APIRouter(route_class=ApiRoute, tags=["lists"])
register_path_id("list_id", ContactList, "list")

Paging = Annotated[PageParams, Depends(page_params)]


def _out(row: ContactList, counts: dict[str, int] | None = None) -> ListOut:
    counts = counts or {}
    out = ListOut.model_validate(row)
    out.subscriber_count = counts.get("subscribed", 0)
    out.unconfirmed_count = counts.get("unconfirmed", 0)
    out.unsubscribed_count = counts.get("unsubscribed", 0)
    return out


@router.post("/v1/lists", status_code=201, **requires("lists:write"))
async def create_list(
    body: ListWrite, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ListOut:
    service = ListService(session, workspace_id, ctx.clock.now())
    return _out(await service.create(body.name, body.description, body.double_opt_in))


@router.get("/v1/lists", **requires("lists:read"))
async def list_lists(
    session: Session, workspace_id: WorkspaceId, paging: Paging, ctx: Ctx
) -> Page[ListOut]:
    service = ListService(session, workspace_id, ctx.clock.now())
    rows, cursor = page_of(await service.lists.page(paging.after_id, paging.limit), paging.limit)
    counts = await service.lists.counts([r.id for r in rows])
    return Page(data=[_out(r, counts.get(r.id)) for r in rows], next_cursor=cursor)


@router.get("/v1/lists/{list_id}", **requires("lists:read"))
async def get_list(
    list_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ListOut:
    service = ListService(session, workspace_id, ctx.clock.now())
    row = await service.get(list_id)
    return _out(row, (await service.lists.counts([row.id])).get(row.id))


@router.patch("/v1/lists/{list_id}", **requires("lists:write"))
async def update_list(
    list_id: uuid.UUID, body: ListPatch, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ListOut:
    service = ListService(session, workspace_id, ctx.clock.now())
    row = await service.update(
        list_id, body.name, body.description, body.double_opt_in, body.model_fields_set
    )
    return _out(row, (await service.lists.counts([row.id])).get(row.id))


@router.delete("/v1/lists/{list_id}", status_code=204, **requires("lists:write"))
async def delete_list(
    list_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    """Delete a list and its subscriptions (not the contacts). The default list stays."""
    await ListService(session, workspace_id, ctx.clock.now()).delete(list_id)
    return Response(status_code=204)


@router.get("/v1/lists/{list_id}/subscriptions", **requires("lists:read"))
async def list_subscriptions(
    list_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    paging: Paging,
    ctx: Ctx,
    status: Literal["subscribed", "unconfirmed", "unsubscribed"] | None = None,
) -> Page[SubscriptionOut]:
    service = ListService(session, workspace_id, ctx.clock.now())
    rows = await service.subscriptions.page(list_id, status, paging.after_id, paging.limit)
    page, cursor = page_of(rows, paging.limit, key=lambda r: r[0].contact_id)
    data = []
    for subscription, email in page:
        out = SubscriptionOut.model_validate(subscription)
        out.email = email
        data.append(out)
    return Page(data=data, next_cursor=cursor)


async def _change(
    action: Literal["subscribe", "unsubscribe"],
    list_id: uuid.UUID,
    body: MembershipChange,
    session: Session,
    workspace_id: uuid.UUID,
    ctx: Ctx,
    response: Response,
) -> MembershipResult:
    if body.filter is None and not body.contact_ids and not body.emails:
        raise ValidationFailed.single("contact_ids", "give contact_ids, emails or a filter")
    now = ctx.clock.now()
    service = ListService(session, workspace_id, now, ctx=ctx)
    row = await service.get(list_id)
    if body.filter is not None:
        if body.contact_ids or body.emails:
            raise ValidationFailed.single(
                "filter", "give either a filter or contact_ids/emails, not both"
            )
        try:
            validate_filter(body.filter)
        except ValidationFailed as error:
            raise ValidationFailed(
                [type(p)(f"filter.{p.field}", p.message, p.code) for p in error.problems],
                error.message,
            ) from None
        job = await jobs.enqueue(
            session,
            kind=MEMBERSHIP_JOB,
            payload={
                "action": action,
                "list_id": str(row.id),
                "filter": body.filter.model_dump(mode="json"),
                "source": body.source,
            },
            now=now,
            workspace_id=workspace_id,
        )
        response.status_code = 202
        return MembershipResult(changed=0, unchanged=0, job_id=job.id)
    ids, missing = await service.resolve_contacts(body.contact_ids, body.emails)
    if action == "subscribe":
        changed = await service.subscribe(row, ids, body.source or "api")
    else:
        changed = await service.unsubscribe(row, ids)
    return MembershipResult(
        changed=len(changed), unchanged=len(ids) - len(changed), not_found=missing
    )


@router.post("/v1/lists/{list_id}/subscribe", **requires("lists:write"))
async def subscribe(
    list_id: uuid.UUID,
    body: MembershipChange,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    response: Response,
) -> MembershipResult:
    """Subscribe contacts (by id or email, up to 1,000) or everyone matching a filter (a
    job, 202). On a double opt-in list new subscriptions are `unconfirmed`."""
    return await _change("subscribe", list_id, body, session, workspace_id, ctx, response)


@router.post("/v1/lists/{list_id}/unsubscribe", **requires("lists:write"))
async def unsubscribe(
    list_id: uuid.UUID,
    body: MembershipChange,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    response: Response,
) -> MembershipResult:
    """Unsubscribe from this list only (the contact stays subscribed elsewhere)."""
    return await _change("unsubscribe", list_id, body, session, workspace_id, ctx, response)
