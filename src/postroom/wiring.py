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
    from postroom.contacts import api as contacts_api
    from postroom.contacts import (
        exports_api,
        imports_api,
        lists_api,
        segments_api,
        suppressions_api,
    )
    from postroom.domains import api as domains_api
    from postroom.jobs import api as jobs_api
    from postroom.messages import api as messages_api
    from postroom.templates import api as templates_api
    from postroom.tracking import api as tracking_api
    from postroom.workspaces import api as workspaces_api

    return [
        health.router,
        workspaces_api.router,
        jobs_api.router,
        contacts_api.router,
        lists_api.router,
        suppressions_api.router,
        segments_api.router,
        imports_api.router,
        exports_api.router,
        tracking_api.router,
        templates_api.router,
        domains_api.router,
        messages_api.router,
    ]


def register_job_kinds(ctx: AppContext) -> None:
    """Fill ``ctx.jobs`` once; calling it again is harmless."""
    if ctx.jobs.names():
        return
    from postroom.contacts import jobs as contact_jobs

    for kind in contact_jobs.JOB_KINDS:
        ctx.jobs.register(kind)


def build_scheduler(ctx: AppContext) -> Scheduler:
    from postroom.delivery.engine import reclaim_deliveries

    return Scheduler(ctx, (*CORE_TASKS, TickTask("reclaim_deliveries", reclaim_deliveries)))


def build_delivery_engine(ctx: AppContext) -> DeliveryEngine:
    """The sender of this process: the instance's transport (``POSTROOM_SMTP_URL``, else
    the Maildir capture), ``worker_concurrency`` batches in flight."""
    from postroom.delivery.engine import DeliveryEngine
    from postroom.delivery.transports import SingleTransport, instance_transport

    settings = ctx.settings
    owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return DeliveryEngine(
        ctx,
        SingleTransport(instance_transport(settings)),
        owner=owner,
        batch_size=settings.worker_claim_batch,
        concurrency=settings.worker_concurrency,
    )
