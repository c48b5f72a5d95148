"""Routes: /v1/exports — export contacts as CSV or JSON lines (a job), then download."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from postroom.contacts.audience_service import checked_filter
from postroom.contacts.imports_api import job_resolver
from postroom.contacts.jobs import EXPORT_JOB
from postroom.contacts.lists_repository import ListRepository
from postroom.errors import Conflict, ValidationFailed
from postroom.files.store import iter_chunks
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_resolver
from postroom.http.routing import ApiRoute
from postroom.ids import uuid7
from postroom.jobs import repository as jobs
from postroom.models.platform import Job, Upload

router = APIRouter(route_class=ApiRoute, tags=["exports"])
register_path_resolver("export_id", "export", job_resolver(EXPORT_JOB))
Paging = Annotated[PageParams, Depends(page_params)]

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["csv", "jsonl"] = "csv"
    list_id: uuid.UUID | None = None
    status: Literal["subscribed", "unsubscribed", "bounced", "complained"] | None = None
    filter: dict[str, Any] | None = None


class ExportOut(BaseModel):
    id: uuid.UUID
    status: Literal["queued", "running", "completed", "failed"]
    format: str
    rows: int | None
    bytes: int | None
    download_url: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


def export_out(job: Job) -> ExportOut:
    status = {"succeeded": "completed", "cancelled": "failed"}.get(job.status, job.status)
    result = job.result or {}
    return ExportOut(
        id=job.id,
        status=status,
        format=job.payload["format"],
        rows=result.get("rows"),
        bytes=result.get("bytes"),
        download_url=f"/v1/exports/{job.id}/download" if job.status == "succeeded" else None,
        error=job.error if job.status == "failed" else None,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


@router.post("/v1/exports", status_code=202, **requires("exports:write"))
async def create_export(
    body: ExportCreate, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ExportOut:
    """Export contacts (all of them by default, or one list, one status, or a filter).
    CSV cells that a spreadsheet would run as a formula are neutralised with a leading
    `'`; the importer takes it off again, so an export re-imports unchanged."""
    if (
        body.list_id is not None
        and await ListRepository(session, workspace_id).get(body.list_id) is None
    ):
        raise ValidationFailed.single(
            "list_id", f"no list {body.list_id} in this workspace", "not_found"
        )
    if body.filter is not None:
        checked_filter(body.filter)
    now = ctx.clock.now()
    upload = Upload(
        id=uuid7(),
        workspace_id=workspace_id,
        filename=f"contacts.{body.format}",
        content_type=MEDIA_TYPES[body.format],
        size=0,
        created_at=now,
    )
    session.add(upload)
    await session.flush()
    payload = body.model_dump(mode="json") | {"upload_id": str(upload.id)}
    job = await jobs.enqueue(
        session,
        kind=EXPORT_JOB,
        payload=payload,
        now=now,
        workspace_id=workspace_id,
        max_attempts=3,
    )
    return export_out(job)


@router.get("/v1/exports", **requires("exports:read"))
async def list_exports(
    session: Session, workspace_id: WorkspaceId, paging: Paging
) -> Page[ExportOut]:
    found = await jobs.page_of_kind(
        session, workspace_id, EXPORT_JOB, paging.after_id, paging.limit
    )
    rows, cursor = page_of(found, paging.limit)
    return Page(data=[export_out(r) for r in rows], next_cursor=cursor)


@router.get("/v1/exports/{export_id}", **requires("exports:read"))
async def get_export(export_id: uuid.UUID, session: Session) -> ExportOut:
    job = await jobs.get(session, export_id)
    assert job is not None
    return export_out(job)


@router.get(
    "/v1/exports/{export_id}/download",
    response_class=StreamingResponse,
    **requires("exports:read"),
)
async def download_export(export_id: uuid.UUID, session: Session, ctx: Ctx) -> StreamingResponse:
    """The exported file, streamed from the database."""
    job = await jobs.get(session, export_id)
    assert job is not None
    if job.status != "succeeded":
        raise Conflict(
            f"the export is {job.status}, not completed; poll GET /v1/exports/{export_id}"
        )
    upload_id = uuid.UUID(job.payload["upload_id"])
    fmt = job.payload["format"]
    return StreamingResponse(
        iter_chunks(ctx.db, upload_id),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="contacts-{export_id}.{fmt}"'},
    )
