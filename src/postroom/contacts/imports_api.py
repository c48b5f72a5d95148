"""Routes: /v1/imports — upload a CSV / JSON / JSON-lines file, import it as a job."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.jobs import IMPORT_JOB
from postroom.contacts.lists_repository import ListRepository
from postroom.errors import ValidationFailed
from postroom.files.store import store_stream
from postroom.http.access import requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.pagination import Page, PageParams, page_of, page_params
from postroom.http.path_ids import register_path_resolver
from postroom.http.principal import Principal
from postroom.http.routing import ApiRoute
from postroom.jobs import repository as jobs
from postroom.models.platform import Job

router = APIRouter(route_class=ApiRoute, tags=["imports"])
Paging = Annotated[PageParams, Depends(page_params)]

MAX_IMPORT_BYTES = 2 * 1024 * 1024 * 1024
FORMATS = {
    "text/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
}


def job_resolver(kind: str) -> Any:
    """A path resolver for jobs of one kind (imports, exports) in the caller's workspace."""

    async def exists(session: AsyncSession, principal: Principal, raw: str) -> bool:
        try:
            value = uuid.UUID(raw)
        except ValueError:
            return False
        assert principal.workspace_id is not None
        return await jobs.exists_of_kind(session, value, kind, principal.workspace_id)

    return exists


register_path_resolver("import_id", "import", job_resolver(IMPORT_JOB))


class ImportOut(BaseModel):
    id: uuid.UUID
    status: Literal["queued", "running", "completed", "failed"]
    filename: str | None
    list_id: uuid.UUID | None
    processed: int
    created: int
    updated: int
    failed: int
    errors: list[dict[str, Any]]
    errors_truncated: bool
    error: str | None
    created_at: datetime
    finished_at: datetime | None


def import_out(job: Job, *, with_errors: bool = True) -> ImportOut:
    numbers = job.result or job.progress or {}
    status = {"succeeded": "completed", "cancelled": "failed"}.get(job.status, job.status)
    return ImportOut(
        id=job.id,
        status=status,
        filename=job.payload.get("filename"),
        list_id=job.payload.get("list_id"),
        processed=int(numbers.get("processed", 0)),
        created=int(numbers.get("created", 0)),
        updated=int(numbers.get("updated", 0)),
        failed=int(numbers.get("failed", 0)),
        errors=list(numbers.get("errors", [])) if with_errors else [],
        errors_truncated=bool(numbers.get("errors_truncated", False)),
        error=job.error if job.status == "failed" else None,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


async def _body_chunks(request: Request) -> AsyncIterator[bytes]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ValidationFailed.single("file", "send the file in a multipart field named 'file'")
        while chunk := await upload.read(1024 * 1024):
            yield chunk
        return
    async for chunk in request.stream():
        yield chunk


@router.post(
    "/v1/imports",
    status_code=202,
    openapi_extra=requires("imports:write")["openapi_extra"]
    | {
        "requestBody": {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            }
        },
    },
)
async def create_import(
    request: Request,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    list_id: uuid.UUID | None = None,
    format: Literal["csv", "json", "jsonl"] | None = None,
    mapping: Annotated[
        str | None, Query(max_length=10_000, description='JSON object: {"Column": "field"}')
    ] = None,
    filename: Annotated[str | None, Query(max_length=255)] = None,
) -> ImportOut:
    """Upload contacts (CSV with a header row, a JSON array, or JSON lines) as the raw body
    or a multipart `file` field. The file is stored in the database and imported by a
    job: poll `GET /v1/imports/{id}` for counts and errors by line."""
    parsed_mapping: dict[str, str] | None = None
    if mapping is not None:
        try:
            parsed_mapping = json.loads(mapping)
        except ValueError:
            parsed_mapping = None
        if not isinstance(parsed_mapping, dict) or not all(
            isinstance(v, str) for v in parsed_mapping.values()
        ):
            raise ValidationFailed.single(
                "mapping", 'must be a JSON object of strings, e.g. {"E-mail": "email"}'
            )
    if list_id is not None and await ListRepository(session, workspace_id).get(list_id) is None:
        raise ValidationFailed.single(
            "list_id", f"no list {list_id} in this workspace", "not_found"
        )
    content_type = (
        request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    )
    fmt = format or FORMATS.get(content_type)
    now = ctx.clock.now()
    upload = await store_stream(
        session,
        workspace_id,
        _body_chunks(request),
        filename=filename or "upload",
        content_type=content_type,
        now=now,
        max_bytes=MAX_IMPORT_BYTES,
    )
    if upload.size == 0:
        raise ValidationFailed.single("body", "the file is empty")
    job = await jobs.enqueue(
        session,
        kind=IMPORT_JOB,
        payload={
            "upload_id": str(upload.id),
            "list_id": str(list_id) if list_id else None,
            "format": fmt,
            "mapping": parsed_mapping,
            "filename": filename,
        },
        now=now,
        workspace_id=workspace_id,
        max_attempts=3,
    )
    return import_out(job)


@router.get("/v1/imports", **requires("imports:read"))
async def list_imports(
    session: Session, workspace_id: WorkspaceId, paging: Paging
) -> Page[ImportOut]:
    found = await jobs.page_of_kind(
        session, workspace_id, IMPORT_JOB, paging.after_id, paging.limit
    )
    rows, cursor = page_of(found, paging.limit)
    return Page(data=[import_out(r, with_errors=False) for r in rows], next_cursor=cursor)


@router.get("/v1/imports/{import_id}", **requires("imports:read"))
async def get_import(
    import_id: uuid.UUID, session: Session, workspace_id: WorkspaceId
) -> ImportOut:
    job = await jobs.get(session, import_id)
    assert job is not None
    return import_out(job)
