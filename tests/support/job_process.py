"""A job runner in its own process, for kill -9 tests.

Usage: python -m tests.support.job_process DATABASE_URL SECRET MARKER_FILE
Registers kind ``test.block`` whose handler writes MARKER_FILE and then blocks forever,
claims one job and runs it. The test kills this process while the job runs.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from postroom.config import Settings
from postroom.context import AppContext
from postroom.jobs.registry import JobContext, JobKind
from postroom.jobs.runner import JobRunner


async def main(url: str, secret: str, marker: str) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        secret_key=secret,
        data_dir=Path(marker).parent,
        job_lease_seconds=30,
    )
    ctx = AppContext.build(settings)

    async def block(job: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        Path(marker).write_text(str(job.job_id))
        await asyncio.sleep(3600)
        return {}

    ctx.jobs.register(JobKind("test.block", block, scope="contacts:read"))
    runner = JobRunner(ctx, ctx.jobs, owner="doomed-runner")
    while not await runner.run_once(limit=1):
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
