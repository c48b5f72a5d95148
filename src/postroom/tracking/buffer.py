"""Opens and clicks are buffered for at most a second and written in batches, so the
public endpoints answer without waiting for the database. A clean shutdown flushes the
buffer; a kill -9 can lose at most the last second (DESIGN: the one exception to
"events are written in the same transaction"). Unsubscribes are never buffered."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from postroom.db.engine import Database
from postroom.events.service import record_many
from postroom.logging import get_logger

log = get_logger(__name__)

FLUSH_SECONDS = 1.0
MAX_BUFFER = 50_000


class EngagementBuffer:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._rows: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.written = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= MAX_BUFFER and self._task is not None:
            # Far behind: flush now rather than grow without bound.
            asyncio.get_running_loop().create_task(self.flush())

    def __len__(self) -> int:
        return len(self._rows)

    async def flush(self) -> int:
        async with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                async with self.db.transaction() as session:
                    await record_many(session, rows)
            except Exception as exc:
                log.error("engagement_flush_failed", error=repr(exc), rows=len(rows))
                self._rows[:0] = rows  # keep them for the next try
                return 0
            self.written += len(rows)
            return len(rows)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="postroom-engagement-buffer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
