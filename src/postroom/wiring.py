"""Which routers, job kinds and scheduler tasks make up Postroom. Each domain adds its
own here; nothing registers itself by import side effects alone."""

from __future__ import annotations

from fastapi import APIRouter

from postroom.context import AppContext
from postroom.worker.scheduler import CORE_TASKS, Scheduler


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
    from postroom.jobs import api as jobs_api
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
    ]


def register_job_kinds(ctx: AppContext) -> None:
    """Fill ``ctx.jobs`` once; calling it again is harmless."""
    if ctx.jobs.names():
        return
    from postroom.contacts import jobs as contact_jobs

    for kind in contact_jobs.JOB_KINDS:
        ctx.jobs.register(kind)


def build_scheduler(ctx: AppContext) -> Scheduler:
    return Scheduler(ctx, CORE_TASKS)
