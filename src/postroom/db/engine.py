"""Engines and sessions for SQLite (embedded) and PostgreSQL (scaled out).

SQLite runs in WAL mode with a busy timeout and foreign keys on. Write transactions start
with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can fail with
SQLITE_BUSY at once (the busy timeout does not apply to a lock upgrade), whereas an
immediate one waits its turn. Read-only sessions use a plain deferred ``BEGIN`` so readers
never queue behind writers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


DEFAULT_SQLITE_CACHE_MB = 8


def _install_sqlite_hooks(engine: AsyncEngine, cache_mb: int = DEFAULT_SQLITE_CACHE_MB) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so "begin" below decides the mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # The page cache is per connection and a process holds up to 2 x pool size of
        # them: SQLite's 2 MB default makes big batches (which touch several indexes at
        # once) reread pages, while 64 MB each took a send worker past 400 MB of RSS.
        cursor.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    echo: bool = False,
    sqlite_cache_mb: int = DEFAULT_SQLITE_CACHE_MB,
) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _install_sqlite_hooks(engine, sqlite_cache_mb)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


def create_unpooled_engine(url: str) -> AsyncEngine:
    """For one-off commands (migrations, CLI) that should not keep connections."""
    engine = create_async_engine(url, poolclass=NullPool)
    if url.startswith("sqlite"):
        _install_sqlite_hooks(engine)
    return engine


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    read_sessions: async_sessionmaker[AsyncSession]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    def from_engine(cls, engine: AsyncEngine) -> Database:
        reader = engine.execution_options(sqlite_begin="DEFERRED")
        return cls(
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False, autoflush=False),
            read_sessions=async_sessionmaker(reader, expire_on_commit=False, autoflush=False),
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work for edges (worker loop, CLI): commit on success, else roll back."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        await self.engine.dispose()
