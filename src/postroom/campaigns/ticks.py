"""Scheduler tasks of campaigns. Each moves campaigns with conditional UPDATEs (through
``CampaignService.apply`` or one set-based statement), so any number of scheduler
processes may run them at once; none sends mail.

- ``campaigns_due``: scheduled campaigns whose time came start sending;
- ``campaigns_calendar``: ``sending → waiting`` outside the send calendar, back inside;
- ``campaigns_complete``: ``sending → sent`` once every delivery had its first attempt;
- ``campaigns_health``: ``sending|waiting → failed`` when the frozen template versions or
  the sending domain are gone, the fan-out job gave up, or no delivery reached a relay
  for ``campaign_relay_fail_hours`` (every relay stayed paused).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from postroom.campaigns import repository
from postroom.campaigns.content import domain_exists, frozen_versions_exist
from postroom.campaigns.service import CAMPAIGN, CampaignService
from postroom.campaigns.timing import calendar_open
from postroom.context import AppContext
from postroom.errors import PostroomError, ValidationFailed
from postroom.events.service import record
from postroom.models.delivery import Send
from postroom.models.platform import Job
from postroom.worker.scheduler import TickTask


async def start_due(session: AsyncSession, ctx: AppContext) -> int:
    now = ctx.clock.now()
    claimed = await repository.claim_due(session, now)
    for campaign_id, workspace_id in claimed:
        service = CampaignService(session, workspace_id, now)
        campaign = await service.get(campaign_id)
        await record(
            session,
            workspace_id=workspace_id,
            type="campaign.sending",
            occurred_at=now,
            resource_type=CAMPAIGN,
            resource_id=campaign_id,
            data={"from": "scheduled", "to": "sending"},
        )
        try:
            content = await service.ready(campaign)
        except ValidationFailed as problem:
            await service.fail(campaign_id, f"could not start: {problem.message}")
            continue
        await service.begin(campaign, content)
    return len(claimed)


async def follow_calendar(session: AsyncSession, ctx: AppContext) -> int:
    now = ctx.clock.now()
    moved = 0
    for campaign in await repository.live(session, ("sending", "waiting")):
        if not campaign.calendar:
            continue
        is_open = calendar_open(campaign.calendar, campaign.timezone, now)
        action = None
        if campaign.status == "sending" and not is_open:
            action = "wait"
        elif campaign.status == "waiting" and is_open:
            action = "open"
        if action is None:
            continue
        service = CampaignService(session, campaign.workspace_id, now)
        if await service.apply(campaign.id, action, send_id=campaign.send_id):
            moved += 1
    return moved


async def complete(session: AsyncSession, ctx: AppContext) -> int:
    now = ctx.clock.now()
    finished = await repository.complete_finished(session, now)
    for campaign_id, workspace_id in finished:
        await record(
            session,
            workspace_id=workspace_id,
            type="campaign.sent",
            occurred_at=now,
            resource_type=CAMPAIGN,
            resource_id=campaign_id,
            data={"from": "sending", "to": "sent"},
        )
    return len(finished)


async def check_health(session: AsyncSession, ctx: AppContext) -> int:
    now = ctx.clock.now()
    limit = timedelta(hours=ctx.settings.campaign_relay_fail_hours)
    failed = 0
    for campaign in await repository.live(session, ("sending", "waiting")):
        if campaign.send_id is None:
            continue
        reason = None
        send = await session.get(Send, campaign.send_id)
        job = await session.get(Job, campaign.fanout_job_id) if campaign.fanout_job_id else None
        if job is not None and job.status in ("failed", "cancelled"):
            reason = f"the fan-out job {job.status}: {(job.error or '')[:200]}".rstrip(": ")
        elif send is None or not await frozen_versions_exist(session, send):
            reason = "the campaign's template version was deleted"
        elif not await domain_exists(session, campaign.workspace_id, campaign.from_email):
            reason = "the campaign's sending domain was deleted"
        elif send is not None and (
            campaign.started_at is not None
            and campaign.started_at + limit <= now
            and await repository.never_delivered(session, send.id, now - limit)
        ):
            hours = ctx.settings.campaign_relay_fail_hours
            reason = f"no delivery reached a relay in {hours:g} hours (every relay paused)"
        if reason is None:
            continue
        try:
            service = CampaignService(session, campaign.workspace_id, now)
            if await service.fail(campaign.id, reason):
                failed += 1
        except PostroomError:
            continue
    return failed


TICK_TASKS = (
    TickTask("campaigns_due", start_due),
    TickTask("campaigns_calendar", follow_calendar),
    TickTask("campaigns_complete", complete),
    TickTask("campaigns_health", check_health),
)
