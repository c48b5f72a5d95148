"""The long-running worker: scheduler ticks, job runners and the delivery engine until
told to stop.

``serve`` runs one in-process (unless ``--no-worker``); ``postroom worker`` runs one per
process. SIGTERM sets the stop event: running jobs finish or hand their lease back, and
batches of mail in flight finish sending and record their outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from postroom.context import AppContext
from postroom.jobs.registry import JobRegistry
from postroom.jobs.runner import JobRunner
from postroom.logging import get_logger
from postroom.worker.scheduler import Scheduler

if TYPE_CHECKING:
    from postroom.delivery.engine import DeliveryEngine

log = get_logger(__name__)

TICK_SECONDS = 1.0


class Worker:
    def __init__(
        self,
        ctx: AppContext,
        registry: JobRegistry,
        scheduler: Scheduler,
        engine: DeliveryEngine | None = None,
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.scheduler = scheduler
        if engine is None:
            from postroom.wiring import build_delivery_engine

            engine = build_delivery_engine(ctx)
        self.engine = engine
        self.runner = JobRunner(ctx, registry)
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _scheduler_loop(self) -> None:
        while not self.stop_event.is_set():
            await self.scheduler.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), TICK_SECONDS)

    async def _job_loop(self) -> None:
        slots = max(1, self.ctx.settings.worker_concurrency)
        poll = self.ctx.settings.worker_poll_seconds
        while not self.stop_event.is_set():
            try:
                ran = await self.runner.run_once(limit=slots)
            except Exception as exc:
                log.exception("job_loop_error", error=repr(exc))
                ran = 0
            if ran == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), poll)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._scheduler_loop(), name="postroom-scheduler"),
            asyncio.create_task(self._job_loop(), name="postroom-jobs"),
            asyncio.create_task(self.engine.run(), name="postroom-delivery"),
        ]

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self.stop_event.set()
        self.engine.stop()
        if not self._tasks:
            await self.engine.close()
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.engine.close()

    async def run_forever(self) -> None:
        self.start()
        await self.stop_event.wait()
        await self.stop()
