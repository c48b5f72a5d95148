"""Contact job kinds: filter-wide membership changes (imports and exports live in their
own modules)."""

from __future__ import annotations

import uuid
from typing import Any

from postroom.contacts.lists_repository import ListRepository, SubscriptionRepository
from postroom.contacts.segments.compiler import compile_filter
from postroom.contacts.segments.schema import parse_filter
from postroom.jobs.registry import JobContext, JobKind
from postroom.models.contacts import Contact

MEMBERSHIP_JOB = "lists.membership"


async def run_membership(job: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    assert job.workspace_id is not None
    ctx = job.ctx
    now = ctx.clock.now()
    condition = parse_filter(payload["filter"])
    async with ctx.db.transaction() as session:
        lists = ListRepository(session, job.workspace_id)
        row = await lists.get(uuid.UUID(payload["list_id"]))
        if row is None:
            return {"changed": 0, "note": "the list was deleted"}
        where = (Contact.workspace_id == job.workspace_id) & compile_filter(
            condition, now=now, dialect_name=ctx.db.dialect
        )
        subscriptions = SubscriptionRepository(session, job.workspace_id)
        if payload["action"] == "subscribe":
            status = "unconfirmed" if row.double_opt_in else "subscribed"
            changed_ids: list[uuid.UUID] = []
            changed = await subscriptions.subscribe_matching(
                row.id,
                where,
                status=status,
                now=now,
                source=payload.get("source") or "filter",
                changed_ids=changed_ids,
            )
            if row.double_opt_in and changed_ids:
                from postroom.contacts.double_opt_in import DoubleOptIn

                await DoubleOptIn(ctx, session, job.workspace_id, now).queue(row, changed_ids)
        else:
            changed = await subscriptions.unsubscribe_matching(row.id, where, now)
    return {"changed": changed}


JOB_KINDS = [JobKind(MEMBERSHIP_JOB, run_membership, scope="lists:read")]


IMPORT_JOB = "contacts.import"


async def run_import(job: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    from postroom.contacts.importer import ContactImporter, ImportSummary
    from postroom.files.store import spool

    assert job.workspace_id is not None

    async def progress(summary: ImportSummary) -> None:
        await job.report_progress({k: v for k, v in summary.as_dict().items() if k != "errors"})

    list_id = uuid.UUID(payload["list_id"]) if payload.get("list_id") else None
    importer = ContactImporter(job.ctx, job.workspace_id, list_id=list_id, progress=progress)
    handle = await spool(job.ctx.db, uuid.UUID(payload["upload_id"]))
    try:
        summary = await importer.run(
            handle,  # type: ignore[arg-type]
            fmt=payload.get("format"),
            mapping=payload.get("mapping"),
            filename=payload.get("filename"),
        )
    finally:
        handle.close()
    return summary.as_dict()


JOB_KINDS.append(JobKind(IMPORT_JOB, run_import, scope="imports:read", max_attempts=3))


EXPORT_JOB = "contacts.export"


async def run_export(job: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    from postroom.contacts.exporter import ContactExporter, ExportSelection
    from postroom.files.store import ChunkWriter

    assert job.workspace_id is not None
    selection = ExportSelection(
        list_id=uuid.UUID(payload["list_id"]) if payload.get("list_id") else None,
        status=payload.get("status"),
        filter=payload.get("filter"),
    )
    upload_id = uuid.UUID(payload["upload_id"])
    writer = ChunkWriter(job.ctx.db, upload_id)
    await writer.reset()
    rows = await ContactExporter(job.ctx, job.workspace_id, selection).run(
        payload["format"], writer.write
    )
    size = await writer.close()
    return {"rows": rows, "bytes": size, "upload_id": str(upload_id)}


JOB_KINDS.append(JobKind(EXPORT_JOB, run_export, scope="exports:read", max_attempts=3))
