"""Which routers, job kinds and scheduler tasks make up Postroom. Each domain adds its
own here; nothing registers itself by import side effects alone."""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING

from fastapi import APIRouter

from postroom.context import AppContext
from postroom.worker.scheduler import CORE_TASKS, Scheduler, TickTask

if TYPE_CHECKING:
    from postroom.delivery.engine import DeliveryEngine


def routers() -> list[APIRouter]:
    from postroom import health
    from postroom.analytics import api as analytics_api
    from postroom.campaigns import api as campaigns_api
    from postroom.contacts import api as contacts_api
    from postroom.contacts import (
        confirm_api,
        exports_api,
        imports_api,
        lists_api,
        segments_api,
        suppressions_api,
    )
    from postroom.domains import api as domains_api
    from postroom.events import api as events_api
    from postroom.feedback import api as inbound_api
    from postroom.feedback.providers import api as provider_webhooks_api
    from postroom.jobs import api as jobs_api
    from postroom.messages import api as messages_api
    from postroom.relays import api as relays_api
    from postroom.templates import api as templates_api
    from postroom.tracking import api as tracking_api
    from postroom.webhooks import api as webhooks_api
    from postroom.workspaces import api as workspaces_api

    return [
        health.router,
        # First after health: Starlette tries routes in order, and the open pixel and
        # click redirect are by far the most requested (~60 route regexes fewer each).
        tracking_api.router,
        workspaces_api.router,
        jobs_api.router,
        contacts_api.router,
        lists_api.router,
        confirm_api.router,
        suppressions_api.router,
        segments_api.router,
        imports_api.router,
        exports_api.router,
        templates_api.router,
        domains_api.router,
        relays_api.router,
        messages_api.router,
        campaigns_api.router,
        provider_webhooks_api.router,
        inbound_api.router,
        analytics_api.router,
        events_api.router,
        webhooks_api.router,
    ]


def register_job_kinds(ctx: AppContext) -> None:
    """Fill ``ctx.jobs`` once; calling it again is harmless."""
    if ctx.jobs.names():
        return
    from postroom.campaigns import fanout as campaign_jobs
    from postroom.contacts import jobs as contact_jobs

    for kind in contact_jobs.JOB_KINDS:
        ctx.jobs.register(kind)
    for kind in campaign_jobs.JOB_KINDS:
        ctx.jobs.register(kind)


def build_scheduler(ctx: AppContext) -> Scheduler:
    from postroom.analytics.consumer import consume_tick
    from postroom.campaigns.ticks import TICK_TASKS as CAMPAIGN_TASKS
    from postroom.contacts.double_opt_in import expire_unconfirmed
    from postroom.delivery.engine import reclaim_deliveries
    from postroom.delivery.rate_limits import prune_rate_limit_slots
    from postroom.webhooks.outbox import fan_out as webhook_fan_out
    from postroom.webhooks.sender import WebhookSender

    return Scheduler(
        ctx,
        (
            *CORE_TASKS,
            TickTask("reclaim_deliveries", reclaim_deliveries),
            TickTask("prune_rate_limits", prune_rate_limit_slots),
            TickTask("expire_unconfirmed", expire_unconfirmed),
            TickTask("analytics_counters", consume_tick),
            *CAMPAIGN_TASKS,
            # Events → webhook deliveries, then send what is due (the sender opens its
            # own transactions and holds none while requests are in flight).
            TickTask("webhook_outbox", webhook_fan_out),
            TickTask("webhook_send", WebhookSender(ctx).tick),
        ),
    )


def build_delivery_engine(ctx: AppContext) -> DeliveryEngine:
    """The sender of this process: each workspace's own relays (``/v1/relays``), else the
    instance's transport (``POSTROOM_SMTP_URL``, else the Maildir capture),
    ``worker_concurrency`` batches in flight."""
    from postroom.delivery.engine import DeliveryEngine
    from postroom.delivery.transports import WorkspaceRelays

    settings = ctx.settings
    owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    relays = WorkspaceRelays(ctx)
    engine = DeliveryEngine(
        ctx,
        relays,
        owner=owner,
        batch_size=settings.worker_claim_batch,
        concurrency=settings.worker_concurrency,
    )
    relays.pauses = engine.pauses  # a resting relay is not chosen while others can send
    return engine
