"""Shared helpers for the benchmarks: throwaway databases, a migrated context, RSS."""

from __future__ import annotations

import os
import platform
import resource
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg

from postroom.config import Settings
from postroom.context import AppContext
from postroom.db import migrate
from postroom.workspaces.service import WorkspaceService

PG_ADMIN_URL = os.environ.get(
    "POSTROOM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench-secret-" + "x" * 40


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


@asynccontextmanager
async def bench_database(kind: str) -> AsyncIterator[str]:
    """A fresh, migrated database URL (SQLite file or PostgreSQL database), dropped after."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            migrate.upgrade(url)
            yield url
        return
    name = f"postroom_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def bench_context(url: str, data_dir: Path) -> AppContext:
    settings = Settings(_env_file=None, database_url=url, data_dir=data_dir, secret_key=SECRET)  # type: ignore[call-arg]
    return AppContext.build(settings)


async def new_workspace(ctx: AppContext, name: str = "bench") -> uuid.UUID:
    async with ctx.db.transaction() as session:
        workspace, _key = await WorkspaceService(session).create(name, ctx.clock.now())
    return workspace.id
