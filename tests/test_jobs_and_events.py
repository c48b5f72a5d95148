"""Jobs survive a killed runner; events commit and roll back with their change."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from postroom.context import AppContext
from postroom.events.service import record
from postroom.jobs import repository
from postroom.jobs.registry import JobContext, JobKind
from postroom.jobs.runner import JobRunner
from postroom.models.platform import Event, Job
from postroom.worker.scheduler import Scheduler
from tests.conftest import TEST_SECRET, WorkspaceHandle
from tests.test_api_keys import assert_problem


async def _count_events(ctx: AppContext) -> int:
    async with ctx.db.transaction() as session:
        return int((await session.execute(select(func.count()).select_from(Event))).scalar_one())


async def test_event_commits_with_its_change(ctx: AppContext, workspace: WorkspaceHandle) -> None:
    async with ctx.db.transaction() as session:
        await record(
            session, workspace_id=workspace.id, type="contact.created", occurred_at=ctx.clock.now()
        )  # type: ignore[arg-type]
    assert await _count_events(ctx) == 1


async def test_event_rolls_back_with_its_change(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    try:
        async with ctx.db.transaction() as session:
            await record(
                session,
                workspace_id=workspace.id,
                type="contact.created",
                occurred_at=ctx.clock.now(),
            )  # type: ignore[arg-type]
            raise RuntimeError("the change failed")
    except RuntimeError:
        pass
    assert await _count_events(ctx) == 0


async def _enqueue(ctx: AppContext, kind: str, workspace_id: Any = None, **payload: Any) -> Job:
    async with ctx.db.transaction() as session:
        return await repository.enqueue(
            session,
            kind=kind,
            payload=payload,
            now=ctx.clock.now(),
            workspace_id=workspace_id,
            max_attempts=3,
        )


async def _job(ctx: AppContext, job_id: Any) -> Job:
    async with ctx.db.transaction() as session:
        job = await repository.get(session, job_id)
        assert job is not None
        return job


async def test_job_runs_and_retries_with_backoff(ctx: AppContext) -> None:
    calls: list[int] = []

    async def flaky(job: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(job.attempt)
        if len(calls) < 3:
            raise RuntimeError(f"boom {len(calls)}")
        await job.report_progress({"done": 1})
        return {"ok": True, "n": payload["n"]}

    ctx.jobs.register(JobKind("test.flaky", flaky, scope="contacts:read"))
    job = await _enqueue(ctx, "test.flaky", n=7)
    runner = JobRunner(ctx, ctx.jobs)
    assert await runner.run_once() == 1
    failed_once = await _job(ctx, job.id)
    assert failed_once.status == "queued"
    assert "boom 1" in (failed_once.error or "")
    assert await runner.run_once() == 0  # not due yet: backoff
    ctx.clock.advance(timedelta(seconds=5))  # type: ignore[attr-defined]
    assert await runner.run_once() == 1
    ctx.clock.advance(timedelta(seconds=10))  # type: ignore[attr-defined]
    assert await runner.run_once() == 1
    done = await _job(ctx, job.id)
    assert done.status == "succeeded"
    assert done.result == {"ok": True, "n": 7}
    assert done.progress == {"done": 1}
    assert calls == [1, 2, 3]


async def test_job_fails_after_max_attempts(ctx: AppContext) -> None:
    async def always(job: JobContext, payload: dict[str, Any]) -> None:
        raise ValueError("never works")

    ctx.jobs.register(JobKind("test.always", always, scope="contacts:read"))
    job = await _enqueue(ctx, "test.always")
    runner = JobRunner(ctx, ctx.jobs)
    for _ in range(3):
        await runner.run_once()
        ctx.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    final = await _job(ctx, job.id)
    assert final.status == "failed"
    assert final.attempts == 3
    assert "never works" in (final.error or "")


async def test_job_survives_a_killed_runner(ctx: AppContext, settings: Any, tmp_path: Path) -> None:
    """A real runner process is SIGKILLed mid-job; after its lease expires the scheduler
    requeues the job and another runner finishes it."""
    job = await _enqueue(ctx, "test.block")
    marker = tmp_path / "running"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.job_process",
            settings.database_url,
            TEST_SECRET,
            str(marker),
        ],
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    try:
        for _ in range(300):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the runner process never started the job"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    held = await _job(ctx, job.id)
    assert held.status == "running"
    assert held.lease_owner == "doomed-runner"
    assert held.lease_expires_at is not None

    scheduler = Scheduler(ctx)
    ctx.clock.set(held.lease_expires_at - timedelta(seconds=1))  # type: ignore[attr-defined]
    assert (await scheduler.tick())["reclaim_jobs"] == 0  # lease still valid
    ctx.clock.set(held.lease_expires_at + timedelta(seconds=1))  # type: ignore[attr-defined]
    assert (await scheduler.tick())["reclaim_jobs"] == 1

    async def quick(job_ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"finished_by": "survivor"}

    ctx.jobs.register(JobKind("test.block", quick, scope="contacts:read"))
    assert await JobRunner(ctx, ctx.jobs, owner="survivor").run_once() == 1
    done = await _job(ctx, job.id)
    assert done.status == "succeeded"
    assert done.result == {"finished_by": "survivor"}
    assert done.attempts == 2


async def test_two_runners_never_claim_the_same_job(ctx: AppContext) -> None:
    ran: list[str] = []

    async def note(job: JobContext, payload: dict[str, Any]) -> None:
        ran.append(payload["i"])
        await asyncio.sleep(0)

    ctx.jobs.register(JobKind("test.note", note, scope="contacts:read"))
    for i in range(40):
        await _enqueue(ctx, "test.note", i=str(i))
    a, b = JobRunner(ctx, ctx.jobs, owner="a"), JobRunner(ctx, ctx.jobs, owner="b")
    while await asyncio.gather(a.run_once(7), b.run_once(7)) != [0, 0]:
        pass
    assert sorted(ran) == sorted(str(i) for i in range(40))


async def test_job_polling_needs_the_kinds_scope(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, make_key, make_workspace
) -> None:
    async def nothing(job: JobContext, payload: dict[str, Any]) -> None:
        return None

    ctx.jobs.register(JobKind("test.contacts", nothing, scope="contacts:read"))
    job = await _enqueue(ctx, "test.contacts", workspace_id=workspace.id)
    ok = await client.get(f"/v1/jobs/{job.id}", headers=workspace.headers)
    assert ok.status_code == 200
    assert ok.json()["status"] == "queued"
    narrow = await make_key(workspace, ["templates:read"])
    body = assert_problem(
        await client.get(f"/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {narrow}"}), 403
    )
    assert body["scope"] == "contacts:read"
    other = await make_workspace("other")
    assert_problem(await client.get(f"/v1/jobs/{job.id}", headers=other.headers), 404)


def test_clock_is_utc(ctx: AppContext) -> None:
    assert ctx.clock.now().tzinfo is not None
    assert ctx.clock.now().utcoffset() == timedelta(0)
    assert ctx.clock.now() < datetime.now(UTC)
