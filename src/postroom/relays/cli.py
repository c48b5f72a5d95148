"""``postroom relays add|list``: a workspace's SMTP relays from the command line.

The password in a URL is stored encrypted and never printed: listings show the URL with
it masked as ``***``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.cli_support import console, in_workspace
from postroom.context import AppContext
from postroom.models.relays import Relay
from postroom.relays.service import RelayDefaults, RelayService

relays_app = typer.Typer(no_args_is_help=True, help="Manage a workspace's SMTP relays.")

WorkspaceOption = Annotated[str, typer.Option(help="Workspace name.")]


def _service(ctx: AppContext, session: AsyncSession, workspace_id: uuid.UUID) -> RelayService:
    defaults = RelayDefaults(
        max_connections=ctx.settings.smtp_max_connections,
        max_messages_per_connection=ctx.settings.smtp_messages_per_connection,
    )
    return RelayService(session, workspace_id, ctx.clock.now(), ctx.secret_box, defaults)


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


@relays_app.command("add")
def relays_add(
    url: Annotated[str, typer.Argument(help="smtp://, smtp+starttls:// or smtps:// URL.")],
    workspace: WorkspaceOption,
    name: Annotated[str | None, typer.Option(help="Default host:port.")] = None,
    weight: Annotated[int, typer.Option(min=1, max=1000, help="Share of the mail.")] = 1,
    max_connections: Annotated[int | None, typer.Option(min=1, max=200)] = None,
    per_second: Annotated[int | None, typer.Option(min=1, help="Messages per second.")] = None,
    per_hour: Annotated[int | None, typer.Option(min=1, help="Messages per hour.")] = None,
    per_day: Annotated[int | None, typer.Option(min=1, help="Messages per day.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it switched off.")] = False,
) -> None:
    """Add an SMTP relay to a workspace; its mail then goes through its own relays."""
    values: dict[str, Any] = {
        "url": url,
        "name": name,
        "weight": weight,
        "max_connections": max_connections,
        "per_second": per_second,
        "per_hour": per_hour,
        "per_day": per_day,
        "enabled": not disabled,
    }

    async def work(ctx: AppContext, session: AsyncSession, workspace_id: uuid.UUID) -> Relay:
        return await _service(ctx, session, workspace_id).create(values)

    row = in_workspace(workspace, work)
    console.print(f"relay {row.name} ({row.id}) added: {row.url}", highlight=False)


@relays_app.command("list")
def relays_list(workspace: WorkspaceOption) -> None:
    """List a workspace's relays (passwords masked)."""

    async def work(ctx: AppContext, session: AsyncSession, workspace_id: uuid.UUID) -> list[Relay]:
        return await _service(ctx, session, workspace_id).relays.page(None, 1000)

    rows = in_workspace(workspace, work)
    table = Table("id", "name", "url", "weight", "conns", "enabled", "/s", "/h", "/day")
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            row.url,
            str(row.weight),
            str(row.max_connections),
            "yes" if row.enabled else "no",
            _limit(row.per_second),
            _limit(row.per_hour),
            _limit(row.per_day),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``postroom relays …`` to the ``postroom`` command."""
    app.add_typer(relays_app, name="relays")
