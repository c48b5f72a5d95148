"""Job kinds and their handlers. Each domain registers the kinds it runs.

A handler receives a ``JobContext`` and the job's payload; it does its own transactions
(imports commit per batch and report progress) and returns a JSON-able result.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from postroom.context import AppContext


@dataclass(slots=True)
class JobContext:
    ctx: AppContext
    job_id: uuid.UUID
    workspace_id: uuid.UUID | None
    attempt: int

    async def report_progress(self, progress: Mapping[str, Any]) -> None:
        from postroom.jobs.repository import set_progress

        async with self.ctx.db.transaction() as session:
            await set_progress(session, self.job_id, dict(progress), self.ctx.clock.now())


JobHandler = Callable[[JobContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class JobKind:
    name: str
    handler: JobHandler
    # The scope that may read this job through GET /v1/jobs/{id}.
    scope: str
    max_attempts: int = 5


class JobRegistry:
    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: JobKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"job kind {kind.name} registered twice")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> JobKind | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)
