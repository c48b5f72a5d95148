"""The scheduler: periodic housekeeping that any number of processes may run at once.

Every task claims rows with a conditional UPDATE (a row changes state only if it is
still in the state the task expects), so two schedulers never both act on one row. The
scheduler never sends mail itself; it only moves work into queues. Tests call ``tick()``
directly after moving the clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.http.idempotency import purge_expired
from postroom.jobs.repository import reclaim_expired
from postroom.logging import get_logger

log = get_logger(__name__)

TickFn = Callable[[AsyncSession, AppContext], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class TickTask:
    name: str
    run: TickFn


async def _reclaim_jobs(session: AsyncSession, ctx: AppContext) -> int:
    return await reclaim_expired(session, ctx.clock.now())


async def _purge_idempotency(session: AsyncSession, ctx: AppContext) -> int:
    return await purge_expired(session, ctx.clock.now())


CORE_TASKS = (
    TickTask("reclaim_jobs", _reclaim_jobs),
    TickTask("purge_idempotency", _purge_idempotency),
)


class Scheduler:
    def __init__(self, ctx: AppContext, tasks: tuple[TickTask, ...] | list[TickTask] = CORE_TASKS):
        self.ctx = ctx
        self.tasks = list(tasks)

    def add(self, task: TickTask) -> None:
        self.tasks.append(task)

    async def tick(self) -> dict[str, int]:
        """Run every task once, each in its own transaction; returns rows touched."""
        counts: dict[str, int] = {}
        for task in self.tasks:
            try:
                async with self.ctx.db.transaction() as session:
                    counts[task.name] = await task.run(session, self.ctx)
            except Exception as exc:  # one failing task must not stop the others
                log.exception("scheduler_task_failed", task=task.name, error=repr(exc))
                counts[task.name] = -1
        return counts
