"""``create_app(settings)``: assembles routers, middleware, error handlers and, unless told
not to, the in-process worker (embedded mode)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from postroom import __version__
from postroom.clock import Clock
from postroom.config import Settings
from postroom.context import AppContext
from postroom.feedback.smtp import InboundServer
from postroom.http.problems import install_problem_handlers
from postroom.http.request_id import RequestIdMiddleware
from postroom.wiring import build_scheduler, register_job_kinds, routers
from postroom.worker.loop import Worker


def create_app(
    settings: Settings,
    *,
    ctx: AppContext | None = None,
    clock: Clock | None = None,
    run_worker: bool = False,
) -> FastAPI:
    context = ctx or AppContext.build(settings, clock=clock)
    register_job_kinds(context)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker: Worker | None = None
        context.engagement.start()
        if run_worker:
            worker = Worker(context, context.jobs, build_scheduler(context))
            worker.start()
        inbound: InboundServer | None = None
        if context.settings.inbound_port is not None:
            # The MX of the bounce and reply domains, on this process's event loop.
            inbound = InboundServer(context)
            await inbound.start()
        try:
            yield
        finally:
            if inbound is not None:
                await inbound.stop()
            if worker is not None:
                await worker.stop()
            await context.engagement.stop()
            if ctx is None:
                await context.db.dispose()

    app = FastAPI(
        title="Postroom",
        version=__version__,
        description="Self-hosted email campaigns: contacts, templates, campaigns, tracking.",
        lifespan=lifespan,
    )
    app.state.ctx = context
    install_problem_handlers(app)
    for router in routers():
        app.include_router(router)
    app.add_middleware(RequestIdMiddleware)
    return app
