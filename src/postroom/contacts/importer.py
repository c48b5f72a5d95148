"""Contact imports: the one code path behind the API job and ``postroom import``.

Rows stream from ``import_reader`` (bad rows come back as errors with their line number
and never stop the import) and are written in batches, each batch in its own transaction
through the set-based ``ContactUpserter``. A crash loses at most the batch in flight, and
re-running the import is harmless: it is an upsert. Imports do not write one
``contact.*`` event per row (a million-row import would double its own cost); they write
one ``import.completed`` event with the summary.

Pipeline: rows are parsed, validated and encoded for the database (``BatchEncoder``: ids,
email hashes, JSON) into batches of at most ``batch_size`` rows; the writer inserts a batch
with one statement and only touches rows whose insert collided (updates, conflicts). A
file of ``PARALLEL_MIN_BYTES`` or more is parsed in a second process (the stream is fed to
it through a pipe by a thread here, batches come back pickled), so parsing and writing run
on two cores; smaller ones in a thread of this process. Either way batches arrive in file
order with their line numbers, at most a batch or two ahead of the writer (flat memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from sqlalchemy import text

from postroom.contacts.import_batches import BATCH_SIZE, ImportBatch, PreparedRows, import_batches
from postroom.contacts.import_reader import ImportFormat, read_import
from postroom.contacts.lists_repository import ListRepository, SubscriptionRepository
from postroom.contacts.upsert import ContactUpserter, RowOutcome
from postroom.context import AppContext
from postroom.db.statistics import analyze_if_stale
from postroom.errors import NotFound
from postroom.events.service import record

# Below this a second process costs more to start than it saves.
PARALLEL_MIN_BYTES = 4_000_000
_FEED_BYTES = 65_536
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


class _Batches:
    """Batches from a background thread of this process (small files)."""

    def __init__(self, stream: BinaryIO, options: dict[str, Any]) -> None:
        self._batches = import_batches(stream, **options)

    async def next(self) -> ImportBatch | None:
        # A thread, so the event loop can carry the previous batch's write along meanwhile.
        return await asyncio.to_thread(next, self._batches, None)

    def close(self, finished: bool) -> None:
        pass


class _ProcessBatches:
    """Batches from a reader process (``python -m postroom.contacts.import_batches``); a
    thread here feeds it the stream. A plain subprocess, not multiprocessing: nothing of
    this process (its event loop, driver threads, ``__main__``) is forked or re-imported."""

    def __init__(self, stream: BinaryIO, options: dict[str, Any]) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - our interpreter and module
            [sys.executable, "-m", "postroom.contacts.import_batches", json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._frames = self._process.stdout
        self._feeder = threading.Thread(
            target=self._feed,
            args=(stream, self._process.stdin),
            name="postroom-import-feed",
            daemon=True,
        )
        self._feeder.start()

    @staticmethod
    def _feed(stream: BinaryIO, sink: BinaryIO) -> None:
        try:
            while chunk := stream.read(_FEED_BYTES):
                sink.write(chunk)
        except (OSError, ValueError):
            pass  # the reader ended early (a bad header) or was stopped
        finally:
            with contextlib.suppress(OSError):
                sink.close()

    def _next_frame(self) -> bytes | None:
        head = self._frames.read(8)
        if len(head) < 8:
            raise RuntimeError(f"the import reader stopped (exit {self._process.poll()})")
        size = int.from_bytes(head, "big")
        if not size:
            return None
        data = self._frames.read(size)
        if len(data) < size:
            raise RuntimeError("the import reader stopped mid-batch")
        return data

    async def next(self) -> ImportBatch | None:
        data = await asyncio.to_thread(self._next_frame)
        if data is None:
            return None
        batch = pickle.loads(data)  # noqa: S301 - written by our own reader process
        if isinstance(batch, tuple):
            raise RuntimeError(f"the import reader failed:\n{batch[1]}")
        assert isinstance(batch, ImportBatch)
        return batch

    def close(self, finished: bool) -> None:
        """Reap the reader; unless it ``finished`` (sent its last frame), stop it now."""
        if self._process.poll() is None:
            try:
                self._process.wait(timeout=5 if finished else 0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._frames.close()
        self._feeder.join(timeout=10)


def _stream_size(stream: BinaryIO) -> int | None:
    try:
        if not stream.seekable():
            return None
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(here)
        return end - here
    except (OSError, ValueError, AttributeError):
        return None


class ContactImporter:
    def __init__(
        self,
        ctx: AppContext,
        workspace_id: uuid.UUID,
        *,
        list_id: uuid.UUID | None = None,
        batch_size: int = BATCH_SIZE,
        progress: Progress | None = None,
        parallel: bool | None = None,
    ) -> None:
        """``parallel``: parse in a second process (None: when the stream is large)."""
        self.ctx = ctx
        self.workspace_id = workspace_id
        self.list_id = list_id
        self.batch_size = batch_size
        self.progress = progress
        self.parallel = parallel
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
        # A bad mapping raises here, before any process starts.
        read_import(io.BytesIO(b""), fmt=fmt, mapping=mapping, filename=filename)
        options: dict[str, Any] = {
            "dialect": self.ctx.db.dialect,
            "fmt": fmt,
            "mapping": dict(mapping) if mapping is not None else None,
            "filename": filename,
            "batch_size": self.batch_size,
        }
        parallel = self.parallel
        if parallel is None:
            size = _stream_size(stream)
            parallel = size is not None and size >= PARALLEL_MIN_BYTES and (os.cpu_count() or 1) > 1
        source: _Batches | _ProcessBatches | None = None
        if parallel:
            try:
                source = _ProcessBatches(stream, options)
            except OSError:  # no interpreter to start (an embedded Python): parse here
                source = None
        if source is None:
            source = _Batches(stream, options)
        # One batch is written while the next is parsed; at most one write is in flight.
        in_flight: asyncio.Task[None] | None = None
        finished = False
        try:
            while (batch := await source.next()) is not None:
                for error in batch.errors:
                    self.summary.processed += 1
                    self.summary.error(error.line, error.message, error.field, error.code)
                if batch.rows is not None and batch.lines:
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.create_task(self._write(batch.lines, batch.rows))
            finished = True
            if in_flight is not None:
                await in_flight
                in_flight = None
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
            source.close(finished)
        self.summary.errors.sort(key=lambda error: int(error["line"]))
        async with self.ctx.db.transaction() as session:
            # Whatever runs next on these rows (a segment count, a campaign's fan-out) is
            # planned from fresh statistics rather than from the empty tables of before.
            await analyze_if_stale(session, ("contacts", "subscriptions"))
            await record(
                session,
                workspace_id=self.workspace_id,
                type="import.completed",
                occurred_at=self.ctx.clock.now(),
                data={k: v for k, v in self.summary.as_dict().items() if k != "errors"},
            )
        return self.summary

    async def _write(self, lines: list[int], rows: PreparedRows) -> None:
        now = self.ctx.clock.now()
        async with self.ctx.db.transaction() as session:
            if self.ctx.db.dialect == "postgresql":
                # A batch need not wait for its WAL flush: if the server crashes, the job
                # runs again and the upsert makes that harmless. The job's own completion
                # commits synchronously, which flushes every earlier commit first.
                await session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            others = await ContactUpserter(session, self.workspace_id, now).upsert_prepared(rows)
            if self.list_id is not None:
                ids = _contact_ids(rows, others)
                lists = ListRepository(session, self.workspace_id)
                target = await lists.get(self.list_id)
                if target is not None and ids:
                    status = "unconfirmed" if target.double_opt_in else "subscribed"
                    changed = await SubscriptionRepository(session, self.workspace_id).subscribe(
                        target.id,
                        ids,
                        status=status,
                        now=now,
                        source="import",
                        created=_created_ids(rows, others),
                    )
                    if target.double_opt_in and changed:
                        # Confirmation mails commit with the batch that subscribed them.
                        from postroom.contacts.double_opt_in import DoubleOptIn

                        await DoubleOptIn(self.ctx, session, self.workspace_id, now).queue(
                            target, changed
                        )
        summary = self.summary
        summary.processed += len(lines)
        summary.created += len(lines) - len(others)
        for index, outcome in sorted(others.items()):
            if outcome.status == "created":
                summary.created += 1
            elif outcome.status == "updated":
                summary.updated += 1
            else:
                summary.error(
                    lines[index],
                    outcome.message or "rejected",
                    outcome.field,
                    outcome.code or "conflict",
                )
        if self.progress is not None:
            await self.progress(summary)


def _created_ids(rows: PreparedRows, others: dict[int, RowOutcome]) -> set[uuid.UUID]:
    """The contacts the batch's INSERT created (every row not handed back as another
    outcome): none of them can have a subscription yet."""
    return {uuid.UUID(hex_id) for index, hex_id in enumerate(rows.ids) if index not in others}


def _contact_ids(rows: PreparedRows, others: dict[int, RowOutcome]) -> list[uuid.UUID]:
    """The contacts a batch created or updated (for list subscriptions)."""
    ids = [uuid.UUID(hex_id) for index, hex_id in enumerate(rows.ids) if index not in others]
    ids.extend(o.contact_id for o in others.values() if o.contact_id is not None)
    return ids
