"""GET /v1/jobs/{job_id}: poll any job; the key needs the scope of the job's kind."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from postroom.http.access import workspace_key
from postroom.http.deps import Ctx, CurrentPrincipal, Session
from postroom.http.path_ids import register_path_id
from postroom.http.principal import require_scope
from postroom.http.routing import ApiRoute
from postroom.jobs import repository
from postroom.models.platform import Job

router = APIRouter(route_class=ApiRoute, tags=["jobs"])
register_path_id("job_id", Job)


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    kind: str
    status: str
    attempts: int
    max_attempts: int
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    run_after: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@router.get("/v1/jobs/{job_id}", **workspace_key())
async def get_job(
    job_id: uuid.UUID, session: Session, principal: CurrentPrincipal, ctx: Ctx
) -> JobOut:
    job = await repository.get(session, job_id)
    assert job is not None
    kind = ctx.jobs.get(job.kind)
    require_scope(principal, kind.scope if kind else "api_keys:read")
    return JobOut.model_validate(job)
