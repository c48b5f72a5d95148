"""Chunked file storage in the ``uploads`` / ``upload_chunks`` tables."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from typing import IO

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.db.engine import Database
from postroom.errors import PayloadTooLarge
from postroom.ids import uuid7
from postroom.models.platform import Upload, UploadChunk

CHUNK_BYTES = 1024 * 1024
SPOOL_IN_MEMORY = 8 * 1024 * 1024


async def store_stream(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    chunks: AsyncIterable[bytes],
    *,
    filename: str,
    content_type: str,
    now: datetime,
    max_bytes: int,
) -> Upload:
    """Write a stream into the database in 1 MB chunks (never the whole file in memory)."""
    upload = Upload(
        id=uuid7(),
        workspace_id=workspace_id,
        filename=filename[:255],
        content_type=content_type[:100],
        size=0,
        created_at=now,
    )
    session.add(upload)
    await session.flush()
    buffer = bytearray()
    seq = 0
    size = 0
    async for piece in chunks:
        size += len(piece)
        if size > max_bytes:
            raise PayloadTooLarge(f"the file is larger than the limit of {max_bytes} bytes")
        buffer += piece
        while len(buffer) >= CHUNK_BYTES:
            await session.execute(
                insert(UploadChunk).values(
                    upload_id=upload.id, seq=seq, data=bytes(buffer[:CHUNK_BYTES])
                )
            )
            del buffer[:CHUNK_BYTES]
            seq += 1
    if buffer:
        await session.execute(
            insert(UploadChunk).values(upload_id=upload.id, seq=seq, data=bytes(buffer))
        )
    await session.execute(update(Upload).where(Upload.id == upload.id).values(size=size))
    upload.size = size
    return upload


class ChunkWriter:
    """Append chunks to an upload from a job, one short transaction per chunk."""

    def __init__(self, db: Database, upload_id: uuid.UUID) -> None:
        self.db = db
        self.upload_id = upload_id
        self.seq = 0
        self.size = 0
        self.buffer = bytearray()

    async def reset(self) -> None:
        """Drop chunks a previous, interrupted attempt wrote."""
        async with self.db.transaction() as session:
            await session.execute(
                delete(UploadChunk).where(UploadChunk.upload_id == self.upload_id)
            )

    async def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= CHUNK_BYTES:
            await self._flush(bytes(self.buffer[:CHUNK_BYTES]))
            del self.buffer[:CHUNK_BYTES]

    async def _flush(self, data: bytes) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                insert(UploadChunk).values(upload_id=self.upload_id, seq=self.seq, data=data)
            )
        self.seq += 1
        self.size += len(data)

    async def close(self) -> int:
        if self.buffer:
            await self._flush(bytes(self.buffer))
            self.buffer.clear()
        async with self.db.transaction() as session:
            await session.execute(
                update(Upload).where(Upload.id == self.upload_id).values(size=self.size)
            )
        return self.size


async def iter_chunks(db: Database, upload_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The file's bytes, one chunk per query (flat memory)."""
    seq = 0
    while True:
        async with db.read_sessions() as session:
            data = (
                await session.execute(
                    select(UploadChunk.data).where(
                        UploadChunk.upload_id == upload_id, UploadChunk.seq == seq
                    )
                )
            ).scalar_one_or_none()
        if data is None:
            return
        yield data
        seq += 1


async def spool(db: Database, upload_id: uuid.UUID) -> IO[bytes]:
    """A local, seekable, temporary copy for a parser that reads synchronously. It lives
    only while the job runs; the upload itself stays in the database."""
    handle = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
    async for data in iter_chunks(db, upload_id):
        handle.write(data)
    handle.seek(0)
    return handle


async def upload_size(session: AsyncSession, upload_id: uuid.UUID) -> int:
    total = await session.execute(
        select(func.coalesce(func.sum(func.length(UploadChunk.data)), 0)).where(
            UploadChunk.upload_id == upload_id
        )
    )
    return int(total.scalar_one())
