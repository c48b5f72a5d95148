"""Routes of double opt-in: the public ``/c/{token}`` confirmation page, resending a
confirmation, and a list's confirmation mail settings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from postroom.contacts.contact_fields import FieldError, normalize_email
from postroom.contacts.double_opt_in import (
    ConfirmationSettings,
    DoubleOptIn,
    confirm,
    examine,
    read_token,
)
from postroom.errors import ValidationFailed
from postroom.http.access import public, requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.routing import ApiRoute
from postroom.tracking.api import not_found, page

router = APIRouter(route_class=ApiRoute, tags=["double opt-in"])

# A page per state; "expired" and "gone" say so with 410, the rest are 200.
STATUS = {"confirm": 200, "done": 200, "already": 200, "expired": 410, "gone": 410}


class ConfirmationWrite(BaseModel):
    """The list's confirmation mail. Give a published ``template_id`` or an inline
    ``subject`` with ``html``/``text`` (both may use ``{{ confirm_url }}``, which must
    appear, ``{{ list_name }}`` and ``contact.*``), or nothing for the built-in mail."""

    model_config = ConfigDict(extra="forbid")

    template_id: uuid.UUID | None = None
    subject: Annotated[str | None, Field(max_length=998)] = None
    html: Annotated[str | None, Field(max_length=500_000)] = None
    text: Annotated[str | None, Field(max_length=500_000)] = None
    from_email: Annotated[str | None, Field(max_length=320)] = None
    from_name: Annotated[str | None, Field(max_length=255)] = None
    reply_to: Annotated[str | None, Field(max_length=320)] = None


class ConfirmationOut(BaseModel):
    list_id: uuid.UUID
    custom: bool = Field(description="false: the built-in confirmation mail is used")
    template_id: uuid.UUID | None
    subject: str | None
    html: str | None
    text: str | None
    from_email: str | None
    from_name: str | None
    reply_to: str | None


class ResendResult(BaseModel):
    queued: int
    queued_at: datetime


def _out(found: ConfirmationSettings) -> ConfirmationOut:
    return ConfirmationOut(
        list_id=found.list_id,
        custom=found.custom,
        template_id=found.template_id,
        subject=found.subject,
        html=found.html,
        text=found.text,
        from_email=found.from_email,
        from_name=found.from_name,
        reply_to=found.reply_to,
    )


def _address(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        return normalize_email(value)[0]
    except FieldError as error:
        raise ValidationFailed.single(
            field, str(error).removeprefix("email: "), "invalid_email"
        ) from None


@router.get("/v1/lists/{list_id}/confirmation", **requires("lists:read"))
async def get_confirmation(
    list_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ConfirmationOut:
    """The confirmation mail a double opt-in list sends."""
    service = DoubleOptIn(ctx, session, workspace_id, ctx.clock.now())
    return _out(await service.settings(list_id))


@router.put("/v1/lists/{list_id}/confirmation", **requires("lists:write"))
async def put_confirmation(
    list_id: uuid.UUID,
    body: ConfirmationWrite,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
) -> ConfirmationOut:
    """Replace the list's confirmation mail; an empty body restores the built-in one."""
    values: dict[str, Any] = body.model_dump()
    values["from_email"] = _address(body.from_email, "from_email")
    values["reply_to"] = _address(body.reply_to, "reply_to")
    service = DoubleOptIn(ctx, session, workspace_id, ctx.clock.now())
    return _out(await service.configure(list_id, values))


@router.post(
    "/v1/lists/{list_id}/subscriptions/{contact_id}/resend-confirmation",
    status_code=202,
    **requires("lists:write"),
)
async def resend_confirmation(
    list_id: uuid.UUID, contact_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ResendResult:
    """Mail a new confirmation link to an `unconfirmed` subscriber (409 otherwise); the
    subscription's expiry starts again."""
    now = ctx.clock.now()
    queued = await DoubleOptIn(ctx, session, workspace_id, now).resend(list_id, contact_id)
    return ResendResult(queued=queued, queued_at=now)


@router.get("/c/{token}", **public("confirmation page; GET never confirms (link scanners)"))
async def confirmation_page(token: str, session: Session, ctx: Ctx) -> Response:
    ref = read_token(ctx, token)
    if ref is None:
        return not_found()
    found, _subscription = await examine(ctx, session, ref, ctx.clock.now())
    return page(
        "confirm.html",
        STATUS[found.state],
        title="Confirm your subscription",
        state=found.state,
        list_name=found.list_name,
        email=found.email,
    )


@router.post("/c/{token}", **public("confirms a double opt-in subscription; signed token"))
async def confirm_subscription(
    token: str, request: Request, session: Session, ctx: Ctx
) -> Response:
    ref = read_token(ctx, token)
    if ref is None:
        return not_found()
    evidence = {
        "ip": request.client.host if request.client else None,
        "user_agent": (request.headers.get("user-agent") or "")[:300],
    }
    found = await confirm(ctx, session, ref, ctx.clock.now(), evidence=evidence)
    return page(
        "confirm.html",
        STATUS[found.state],
        title="Confirm your subscription",
        state=found.state,
        list_name=found.list_name,
        email=found.email,
    )
