"""Job queries: enqueue, claim with a lease, finish, retry, reclaim."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.ids import uuid7
from postroom.models.platform import Job


async def enqueue(
    session: AsyncSession,
    *,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
    workspace_id: uuid.UUID | None = None,
    run_after: datetime | None = None,
    priority: int = 100,
    max_attempts: int = 5,
) -> Job:
    job = Job(
        id=uuid7(),
        workspace_id=workspace_id,
        kind=kind,
        payload=payload,
        status="queued",
        priority=priority,
        attempts=0,
        max_attempts=max_attempts,
        run_after=run_after or now,
        progress={},
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    await session.flush()
    return job


async def claim(
    session: AsyncSession, *, owner: str, now: datetime, lease: timedelta, limit: int, dialect: str
) -> list[Job]:
    """Claim up to ``limit`` due jobs. On PostgreSQL rows locked by another claimer are
    skipped; on SQLite the caller's ``BEGIN IMMEDIATE`` already serialises claimers."""
    due = (
        select(Job.id)
        .where(Job.status == "queued", Job.run_after <= now)
        .order_by(Job.priority, Job.run_after)
        .limit(limit)
    )
    if dialect == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list((await session.execute(due)).scalars())
    if not ids:
        return []
    await session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.status == "queued")
        .values(
            status="running",
            lease_owner=owner,
            lease_expires_at=now + lease,
            attempts=Job.attempts + 1,
            updated_at=now,
        )
    )
    rows = await session.execute(
        select(Job).where(Job.id.in_(ids), Job.lease_owner == owner, Job.status == "running")
    )
    return list(rows.scalars())


async def extend_lease(
    session: AsyncSession, job_id: uuid.UUID, owner: str, until: datetime
) -> bool:
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
        .values(lease_expires_at=until)
    )
    return bool(getattr(result, "rowcount", 0))


async def finish(
    session: AsyncSession,
    job_id: uuid.UUID,
    owner: str,
    *,
    now: datetime,
    result: dict[str, Any] | None,
) -> bool:
    """Mark done — only if this runner still holds the lease (else someone reclaimed it)."""
    outcome = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
        .values(
            status="succeeded",
            result=result,
            lease_owner=None,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
            error=None,
        )
    )
    return bool(getattr(outcome, "rowcount", 0))


async def fail(
    session: AsyncSession,
    job: Job,
    owner: str,
    *,
    now: datetime,
    error: str,
    retry_at: datetime | None,
) -> None:
    values: dict[str, Any] = {
        "lease_owner": None,
        "lease_expires_at": None,
        "error": error[:4000],
        "updated_at": now,
    }
    if retry_at is None:
        values.update(status="failed", finished_at=now)
    else:
        values.update(status="queued", run_after=retry_at)
    await session.execute(
        update(Job)
        .where(Job.id == job.id, Job.lease_owner == owner, Job.status == "running")
        .values(**values)
    )


async def reclaim_expired(session: AsyncSession, now: datetime) -> int:
    """Jobs whose runner died go back to the queue (or fail when out of attempts)."""
    requeued = await session.execute(
        update(Job)
        .where(
            Job.status == "running",
            Job.lease_expires_at < now,
            Job.attempts < Job.max_attempts,
        )
        .values(
            status="queued", lease_owner=None, lease_expires_at=None, run_after=now, updated_at=now
        )
    )
    failed = await session.execute(
        update(Job)
        .where(Job.status == "running", Job.lease_expires_at < now)
        .values(
            status="failed",
            lease_owner=None,
            lease_expires_at=None,
            error="the runner holding this job stopped and it has no attempts left",
            finished_at=now,
            updated_at=now,
        )
    )
    return int(getattr(requeued, "rowcount", 0) or 0) + int(getattr(failed, "rowcount", 0) or 0)


async def set_progress(
    session: AsyncSession, job_id: uuid.UUID, progress: dict[str, Any], now: datetime
) -> None:
    await session.execute(
        update(Job).where(Job.id == job_id).values(progress=progress, updated_at=now)
    )


async def get(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return (await session.execute(select(Job).where(Job.id == job_id))).scalar_one_or_none()


async def page_of_kind(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    kind: str,
    before: uuid.UUID | None,
    limit: int,
) -> list[Job]:
    """A workspace's jobs of one kind, newest first (up to ``limit + 1`` for paging)."""
    query = (
        select(Job)
        .where(Job.workspace_id == workspace_id, Job.kind == kind)
        .order_by(Job.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(Job.id < before)
    return list((await session.execute(query)).scalars())


async def exists_of_kind(
    session: AsyncSession, job_id: uuid.UUID, kind: str, workspace_id: uuid.UUID
) -> bool:
    query = select(Job.id).where(
        Job.id == job_id, Job.kind == kind, Job.workspace_id == workspace_id
    )
    return (await session.execute(query)).first() is not None
