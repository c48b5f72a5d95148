"""Routes: /v1/domains (sending domains, their DKIM keys and DNS checks)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.delivery.rate_limits import WarmupPlan, used_today
from postroom.domains.dns import DnsLookup, DnsPythonLookup
from postroom.domains.schemas import (
    DkimKeyCreate,
    DkimKeyOut,
    DnsRecordOut,
    DomainCreate,
    DomainOut,
    DomainPatch,
    DomainRateLimits,
    WarmupDay,
    WarmupIn,
    WarmupOut,
)
from postroom.domains.service import DomainService, DomainView, lookup_records
from postroom.errors import NotFound
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_id
from postroom.http.routing import ApiRoute
from postroom.models.domains import SendingDomain

router = APIRouter(route_class=ApiRoute, tags=["domains"])
register_path_id("domain_id", SendingDomain, "domain")

Paging = Annotated[PageParams, Depends(page_params)]


def dns_lookup() -> DnsLookup:
    """The resolver checks use; tests override this dependency with a fake DNS."""
    return DnsPythonLookup()


Lookup = Annotated[DnsLookup, Depends(dns_lookup)]


def domain_service(
    session: AsyncSession, workspace_id: uuid.UUID, ctx: AppContext
) -> DomainService:
    return DomainService(
        session,
        workspace_id,
        ctx.clock.now(),
        ctx.secret_box,
        ctx.settings.effective_bounce_domain,
    )


def domain_out(view: DomainView) -> DomainOut:
    row = view.domain
    active = view.active_key
    statuses = (row.spf_status, row.dkim_status, row.dmarc_status, row.return_path_status)
    return DomainOut(
        id=row.id,
        domain=row.domain,
        return_path_domain=row.return_path_domain,
        dkim_selector=active.selector if active else None,
        spf_status=row.spf_status,
        dkim_status=row.dkim_status,
        dmarc_status=row.dmarc_status,
        return_path_status=row.return_path_status,
        verified=all(status == "verified" for status in statuses),
        checked_at=row.checked_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        dkim_keys=[
            DkimKeyOut(
                id=key.id,
                selector=key.selector,
                bits=key.bits,
                active=key.active,
                status=key.status,
                public_key=key.public_key,
                created_at=key.created_at,
                activated_at=key.activated_at,
            )
            for key in view.keys
        ],
        records=[
            DnsRecordOut(
                purpose=record.purpose,
                type=record.type,
                name=record.name,
                value=record.value,
                chunks=record.chunks or [record.value],
                selector=record.selector,
                status=check.status,
                found=check.found,
                detail=check.detail,
            )
            for record, check in view.records
        ],
        rate_limits=DomainRateLimits(
            per_second=row.rate_per_second, per_hour=row.rate_per_hour, per_day=row.rate_per_day
        ),
        warmup=warmup_out(row, view.today or date.today()),
    )


def warmup_out(row: SendingDomain, today: date, days: int = 14) -> WarmupOut | None:
    if not row.warmup:
        return None
    plan = WarmupPlan.from_json(row.warmup)
    return WarmupOut(
        start_date=plan.start_date,
        initial_per_day=plan.initial_per_day,
        growth_factor=plan.growth_factor,
        max_per_day=plan.max_per_day,
        day=plan.day_index(today),
        cap_today=plan.cap_on(today),
        completed=plan.completed_on(today),
        schedule=[WarmupDay(date=day, cap=cap) for day, cap in plan.schedule(today, days)],
    )


@router.post("/v1/domains", status_code=201, **requires("domains:write"))
async def create_domain(
    body: DomainCreate, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> DomainOut:
    """Add a sending domain with a new DKIM key; the answer lists the DNS records to
    publish. 409 when the domain is already added."""
    service = domain_service(session, workspace_id, ctx)
    row = await service.create(body.domain, body.selector, body.bits)
    return domain_out(await service.view(row))


@router.get("/v1/domains", **requires("domains:read"))
async def list_domains(
    session: Session, workspace_id: WorkspaceId, paging: Paging, ctx: Ctx
) -> Page[DomainOut]:
    service = domain_service(session, workspace_id, ctx)
    rows, cursor = page_of(await service.domains.page(paging.after_id, paging.limit), paging.limit)
    return Page(data=[domain_out(view) for view in await service.views(rows)], next_cursor=cursor)


@router.get("/v1/domains/{domain_id}", **requires("domains:read"))
async def get_domain(
    domain_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> DomainOut:
    """The domain, its DKIM keys and its DNS records with the statuses of the last check."""
    service = domain_service(session, workspace_id, ctx)
    return domain_out(await service.view(await service.get(domain_id)))


@router.delete("/v1/domains/{domain_id}", status_code=204, **requires("domains:write"))
async def delete_domain(
    domain_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    await domain_service(session, workspace_id, ctx).delete(domain_id)
    return Response(status_code=204)


@router.post("/v1/domains/{domain_id}/check", **requires("domains:write"))
async def check_domain(
    domain_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx, lookup: Lookup
) -> DomainOut:
    """Look the records up in DNS now (2 s at most). A record is `missing` only when DNS
    proves it absent; when DNS cannot be asked it stays `unknown`."""
    # Read on a read session and ask DNS before the write transaction starts, so that no
    # write lock is held during the lookups.
    async with ctx.db.read_sessions() as reader:
        reading = domain_service(reader, workspace_id, ctx)
        view = await reading.view(await reading.get(domain_id))
    result = await lookup_records(
        lookup,
        view.domain.domain,
        view.domain.return_path_domain,
        view.keys,
        ctx.settings.effective_bounce_domain,
    )
    service = domain_service(session, workspace_id, ctx)
    return domain_out(await service.view(await service.check(domain_id, result)))


@router.post("/v1/domains/{domain_id}/dkim-keys", status_code=201, **requires("domains:write"))
async def create_dkim_key(
    domain_id: uuid.UUID, body: DkimKeyCreate, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> DomainOut:
    """Generate a new DKIM key under a new selector (key rotation). Publish its record;
    the next check that sees it makes it the signing key. Answers the whole domain."""
    service = domain_service(session, workspace_id, ctx)
    await service.add_key(domain_id, body.selector, body.bits, activate=body.activate)
    return domain_out(await service.view(await service.get(domain_id)))


# --- sending limits and warm-up (enforced by postroom.delivery.rate_limits) ----------------


@router.patch("/v1/domains/{domain_id}", **requires("domains:write"))
async def update_domain(
    domain_id: uuid.UUID, body: DomainPatch, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> DomainOut:
    """Set the domain's sending limits (mail whose From address is at this domain, through
    any relay): per second, hour and day; ``null`` is unlimited. Workers apply a change
    within a few seconds."""
    service = domain_service(session, workspace_id, ctx)
    changes = body.model_dump(include=body.model_fields_set)
    return domain_out(await service.view(await service.set_limits(domain_id, changes)))


async def _warmup_answer(
    row: SendingDomain, session: AsyncSession, ctx: AppContext, days: int = 30
) -> WarmupOut:
    now = ctx.clock.now()
    out = warmup_out(row, now.date(), days)
    if out is None:
        raise NotFound("warm-up plan", row.domain)
    out.sent_today = await used_today(session, row.id, now)
    return out


@router.get("/v1/domains/{domain_id}/warmup", **requires("domains:read"))
async def get_warmup(
    domain_id: uuid.UUID,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> WarmupOut:
    """The warm-up plan: today's cap, what was sent today and the caps of the next days.
    404 when the domain has no plan."""
    service = domain_service(session, workspace_id, ctx)
    return await _warmup_answer(await service.get(domain_id), session, ctx, days)


@router.put("/v1/domains/{domain_id}/warmup", **requires("domains:write"))
async def set_warmup(
    domain_id: uuid.UUID, body: WarmupIn, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> WarmupOut:
    """Set (or replace) the warm-up ramp: a daily cap (UTC days) starting at
    ``initial_per_day`` on ``start_date`` and multiplied by ``growth_factor`` each day up
    to ``max_per_day``. Mail over today's cap waits for the next day."""
    service = domain_service(session, workspace_id, ctx)
    plan = WarmupPlan(
        start_date=body.start_date or ctx.clock.now().date(),
        initial_per_day=body.initial_per_day,
        growth_factor=body.growth_factor,
        max_per_day=body.max_per_day,
    )
    return await _warmup_answer(await service.set_warmup(domain_id, plan), session, ctx)


@router.delete("/v1/domains/{domain_id}/warmup", status_code=204, **requires("domains:write"))
async def delete_warmup(
    domain_id: uuid.UUID, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    """Remove the warm-up plan (the domain's other limits stay)."""
    await domain_service(session, workspace_id, ctx).clear_warmup(domain_id)
    return Response(status_code=204)
