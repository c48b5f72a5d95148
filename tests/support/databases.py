"""Test databases: a fresh SQLite file and a fresh PostgreSQL database per test session,
migrated with Alembic; tests are isolated by emptying every table after each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.models.base import Base

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_pg_url() -> str:
    return os.environ.get("POSTROOM_TEST_DATABASE_URL", DEFAULT_PG_URL)


def pg_answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def with_database(url: str, name: str) -> str:
    base, _, _old = url.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def fresh_pg_database(prefix: str = "postroom_test") -> Iterator[str]:
    admin = admin_pg_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{(directory / 'postroom-test.db').as_posix()}"


def table_names() -> list[str]:
    return [table.name for table in reversed(Base.metadata.sorted_tables)]


async def empty_all_tables(engine: AsyncEngine) -> None:
    names = table_names()
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            quoted = ", ".join(f'"{n}"' for n in names)
            await conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
        else:
            for name in names:
                await conn.execute(text(f'DELETE FROM "{name}"'))
