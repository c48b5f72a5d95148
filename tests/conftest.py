"""Shared fixtures: both databases, an app per test, an HTTP client, factories, SMTP.

Every database test runs twice, on SQLite and on PostgreSQL (the ``db_url`` fixture is
parametrized at session scope, so each backend is created and migrated once). Tests are
isolated by emptying every table afterwards. Under ``CI=true`` a PostgreSQL that does not
answer fails the run instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.app import create_app
from postroom.clock import FrozenClock
from postroom.config import Settings
from postroom.context import AppContext
from postroom.db import migrate
from postroom.db.engine import Database, create_engine
from postroom.wiring import register_job_kinds
from postroom.workspaces.service import WorkspaceService
from tests.support.databases import (
    admin_pg_url,
    empty_all_tables,
    fresh_pg_database,
    pg_answers,
    sqlite_url,
)
from tests.support.smtp_server import TestSmtpServer

TEST_SECRET = "test-secret-key-" + "x" * 32
EPOCH = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _require_pg() -> None:
    if pg_answers(admin_pg_url()):
        return
    message = f"PostgreSQL does not answer at {admin_pg_url()}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path_factory.mktemp("sqlite"))
        migrate.upgrade(url)
        yield url
        return
    _require_pg()
    with fresh_pg_database() as url:
        migrate.upgrade(url)
        yield url


def make_settings(db_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": db_url,
        "data_dir": data_dir,
        "secret_key": TEST_SECRET,
        "env": "development",
        "base_url": "https://postroom.test",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    settings = make_settings(db_url, Path("/nonexistent"))
    eng = create_engine(settings.sqlalchemy_url, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(EPOCH)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
async def ctx(
    engine: AsyncEngine, settings: Settings, clock: FrozenClock
) -> AsyncIterator[AppContext]:
    context = AppContext.build(settings, clock=clock, db=Database.from_engine(engine))
    register_job_kinds(context)
    yield context
    await empty_all_tables(engine)


@pytest.fixture
def app(ctx: AppContext, settings: Settings) -> FastAPI:
    return create_app(settings, ctx=ctx)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as http:
        yield http


@dataclass
class WorkspaceHandle:
    id: object
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


MakeWorkspace = Callable[..., Awaitable[WorkspaceHandle]]


@pytest.fixture
def make_workspace(ctx: AppContext) -> MakeWorkspace:
    counter = iter(range(1_000_000))

    async def factory(name: str | None = None) -> WorkspaceHandle:
        label = name or f"ws-{next(counter)}"
        async with ctx.db.transaction() as session:
            workspace, key = await WorkspaceService(session).create(label, ctx.clock.now())
        return WorkspaceHandle(workspace.id, workspace.name, key.plaintext)

    return factory


@pytest.fixture
async def workspace(make_workspace: MakeWorkspace) -> WorkspaceHandle:
    return await make_workspace("acme")


@pytest.fixture
async def make_key(ctx: AppContext) -> Callable[..., Awaitable[str]]:
    async def factory(
        workspace: WorkspaceHandle | None, scopes: list[str] | None = None, kind: str = "secret"
    ) -> str:
        async with ctx.db.transaction() as session:
            issued = await WorkspaceService(session).issue_key(
                workspace.id if workspace else None,  # type: ignore[arg-type]
                kind="admin" if workspace is None else kind,
                name="test",
                scopes=scopes,
                now=ctx.clock.now(),
            )
        return issued.plaintext

    return factory


@pytest.fixture
async def admin_headers(make_key: Callable[..., Awaitable[str]]) -> dict[str, str]:
    return {"Authorization": f"Bearer {await make_key(None)}"}


@pytest.fixture(scope="session")
def smtp_server_session() -> Iterator[TestSmtpServer]:
    server = TestSmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server(smtp_server_session: TestSmtpServer) -> TestSmtpServer:
    smtp_server_session.reset()
    return smtp_server_session
