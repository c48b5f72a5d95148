"""Contact imports: the one code path behind the API job and ``postroom import``.

Rows stream from ``import_reader`` (bad rows come back as errors with their line number
and never stop the import) and are written in batches, each batch in its own transaction
through the set-based ``ContactUpserter``. A crash loses at most the batch in flight, and
re-running the import is harmless: it is an upsert. Imports do not write one
``contact.*`` event per row (a million-row import would double its own cost); they write
one ``import.completed`` event with the summary.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from sqlalchemy import text

from postroom.contacts.contact_fields import ContactInput
from postroom.contacts.import_reader import ImportFormat, ImportRow, ImportRowError, read_import
from postroom.contacts.lists_repository import ListRepository, SubscriptionRepository
from postroom.contacts.upsert import ContactUpserter
from postroom.context import AppContext
from postroom.errors import NotFound
from postroom.events.service import record

BATCH_SIZE = 2000
YIELD_EVERY = 100
MAX_REPORTED_ERRORS = 10_000

Progress = Callable[["ImportSummary"], Awaitable[None]]


@dataclass(slots=True)
class ImportSummary:
    processed: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_truncated: bool = False

    def error(self, line: int, message: str, field_name: str | None, code: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(
                {"line": line, "field": field_name, "message": message, "code": code}
            )
        else:
            self.errors_truncated = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "created": self.created,
            "updated": self.updated,
            "failed": self.failed,
            "errors": self.errors,
            "errors_truncated": self.errors_truncated,
        }


class ContactImporter:
    def __init__(
        self,
        ctx: AppContext,
        workspace_id: uuid.UUID,
        *,
        list_id: uuid.UUID | None = None,
        batch_size: int = BATCH_SIZE,
        progress: Progress | None = None,
    ) -> None:
        self.ctx = ctx
        self.workspace_id = workspace_id
        self.list_id = list_id
        self.batch_size = batch_size
        self.progress = progress
        self.summary = ImportSummary()

    async def run(
        self,
        stream: BinaryIO,
        *,
        fmt: ImportFormat | None = None,
        mapping: Mapping[str, str] | None = None,
        filename: str | None = None,
    ) -> ImportSummary:
        if self.list_id is not None:
            async with self.ctx.db.transaction() as session:
                if await ListRepository(session, self.workspace_id).get(self.list_id) is None:
                    raise NotFound("list", self.list_id)
        # Parsing (Python, this process) overlaps with writing the previous batch (the
        # database's own process or thread): one batch is always in flight, and the loop
        # yields every few rows so the in-flight write can move on.
        batch: list[tuple[int, ContactInput]] = []
        in_flight: asyncio.Task[None] | None = None
        for item in read_import(stream, fmt=fmt, mapping=mapping, filename=filename):
            if isinstance(item, ImportRowError):
                self.summary.processed += 1
                self.summary.error(item.line, item.message, item.field, item.code)
                continue
            assert isinstance(item, ImportRow)
            batch.append((item.line, item.contact))
            if len(batch) % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if len(batch) >= self.batch_size:
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.create_task(self._write(batch))
                await asyncio.sleep(0)
                batch = []
        if in_flight is not None:
            await in_flight
        if batch:
            await self._write(batch)
        self.summary.errors.sort(key=lambda error: int(error["line"]))
        async with self.ctx.db.transaction() as session:
            await record(
                session,
                workspace_id=self.workspace_id,
                type="import.completed",
                occurred_at=self.ctx.clock.now(),
                data={k: v for k, v in self.summary.as_dict().items() if k != "errors"},
            )
        return self.summary

    async def _write(self, batch: list[tuple[int, ContactInput]]) -> None:
        now = self.ctx.clock.now()
        async with self.ctx.db.transaction() as session:
            if self.ctx.db.dialect == "postgresql":
                # A batch need not wait for its WAL flush: if the server crashes, the job
                # runs again and the upsert makes that harmless. The job's own completion
                # commits synchronously, which flushes every earlier commit first.
                await session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            outcomes = await ContactUpserter(session, self.workspace_id, now).upsert(
                [contact for _, contact in batch], emit_events=False
            )
            ids = [o.contact_id for o in outcomes if o.contact_id is not None]
            if self.list_id is not None and ids:
                lists = ListRepository(session, self.workspace_id)
                target = await lists.get(self.list_id)
                if target is not None:
                    status = "unconfirmed" if target.double_opt_in else "subscribed"
                    await SubscriptionRepository(session, self.workspace_id).subscribe(
                        target.id, ids, status=status, now=now, source="import"
                    )
        for (line, _contact), outcome in zip(batch, outcomes, strict=True):
            self.summary.processed += 1
            if outcome.status == "created":
                self.summary.created += 1
            elif outcome.status == "updated":
                self.summary.updated += 1
            else:
                self.summary.error(
                    line, outcome.message or "rejected", outcome.field, outcome.code or "conflict"
                )
        if self.progress is not None:
            await self.progress(self.summary)
