"""The job runner: claim due jobs with a lease, run them, record the outcome.

While a job runs its lease is extended every third of the lease length; if the process
dies the lease runs out and the scheduler's ``reclaim`` puts the job back in the queue.
Failures are retried with exponential backoff until ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import traceback
import uuid
from datetime import timedelta

from postroom.context import AppContext
from postroom.jobs import repository
from postroom.jobs.registry import JobContext, JobRegistry
from postroom.logging import get_logger
from postroom.models.platform import Job

log = get_logger(__name__)

RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 3600.0


def runner_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def retry_delay(attempt: int) -> timedelta:
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0), RETRY_MAX_SECONDS))


class JobRunner:
    def __init__(self, ctx: AppContext, registry: JobRegistry, owner: str | None = None) -> None:
        self.ctx = ctx
        self.registry = registry
        self.owner = owner or runner_identity()
        self.lease = timedelta(seconds=ctx.settings.job_lease_seconds)

    async def claim(self, limit: int) -> list[Job]:
        async with self.ctx.db.transaction() as session:
            return await repository.claim(
                session,
                owner=self.owner,
                now=self.ctx.clock.now(),
                lease=self.lease,
                limit=limit,
                dialect=self.ctx.db.dialect,
            )

    async def run_once(self, limit: int = 10) -> int:
        """Claim and run up to ``limit`` due jobs to completion; returns how many ran."""
        jobs = await self.claim(limit)
        await asyncio.gather(*(self.run_job(job) for job in jobs))
        return len(jobs)

    async def _heartbeat(self, job_id: uuid.UUID) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            async with self.ctx.db.transaction() as session:
                until = self.ctx.clock.now() + self.lease
                if not await repository.extend_lease(session, job_id, self.owner, until):
                    return

    async def run_job(self, job: Job) -> None:
        kind = self.registry.get(job.kind)
        heartbeat = asyncio.create_task(self._heartbeat(job.id))
        try:
            if kind is None:
                raise LookupError(f"no handler registered for job kind '{job.kind}'")
            context = JobContext(self.ctx, job.id, job.workspace_id, job.attempts)
            result = await kind.handler(context, dict(job.payload))
        except asyncio.CancelledError:
            # Shutting down: leave the lease to expire? No — hand the job back now.
            await self._release(job)
            raise
        except Exception as exc:
            log.warning("job_failed", job_id=str(job.id), kind=job.kind, error=repr(exc))
            now = self.ctx.clock.now()
            retry_at = None
            if kind is not None and job.attempts < job.max_attempts:
                retry_at = now + retry_delay(job.attempts)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            async with self.ctx.db.transaction() as session:
                await repository.fail(
                    session, job, self.owner, now=now, error=detail, retry_at=retry_at
                )
        else:
            async with self.ctx.db.transaction() as session:
                await repository.finish(
                    session, job.id, self.owner, now=self.ctx.clock.now(), result=result
                )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _release(self, job: Job) -> None:
        with contextlib.suppress(Exception):
            async with self.ctx.db.transaction() as session:
                await repository.fail(
                    session,
                    job,
                    self.owner,
                    now=self.ctx.clock.now(),
                    error="released at shutdown",
                    retry_at=self.ctx.clock.now(),
                )
