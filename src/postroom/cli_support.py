"""What every CLI command shares: settings (or a clean exit), running async work with a
context, migrating the data directory, and resolving a workspace by name. Domain packages
add their own commands in ``<domain>/cli.py`` (a ``register(app)`` function) using these."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.config import Settings, get_settings
from postroom.context import AppContext
from postroom.db import migrate as migrations
from postroom.errors import PostroomError

T = TypeVar("T")

console = Console()
err = Console(stderr=True)


def settings_or_exit() -> Settings:
    try:
        return get_settings().resolve_secrets()
    except PostroomError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None


def run_with_context(settings: Settings, work: Callable[[AppContext], Awaitable[T]]) -> T:
    """Run ``work`` with a fresh context; a domain error exits 1 with its message."""

    async def main() -> T:
        ctx = AppContext.build(settings)
        try:
            return await work(ctx)
        finally:
            await ctx.db.dispose()

    try:
        return asyncio.run(main())
    except PostroomError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def migrate_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.sqlalchemy_url)


def in_workspace(
    workspace: str,
    work: Callable[[AppContext, AsyncSession, uuid.UUID], Awaitable[T]],
) -> T:
    """Migrate, then run ``work`` in one transaction inside the named workspace."""
    from postroom.workspaces.service import WorkspaceService

    settings = settings_or_exit()
    migrate_data_dir(settings)

    async def run(ctx: AppContext) -> T:
        async with ctx.db.transaction() as session:
            workspace_id = (await WorkspaceService(session).by_name(workspace)).id
            return await work(ctx, session, workspace_id)

    return run_with_context(settings, run)
