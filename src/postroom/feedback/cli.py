"""CLI commands of this domain (registered on the ``postroom`` app by ``register``):

- ``postroom inbound``: run the inbound SMTP receiver on its own (the MX of the bounce and
  reply domains), until SIGINT/SIGTERM. ``serve`` runs the same receiver in-process when
  ``POSTROOM_INBOUND_PORT`` is set.
- ``postroom inbound-list``: the kept messages of every workspace, and those that belong
  to none (mail that named no delivery of ours).
- ``postroom inbound-stats``: the receiver's counters (outcomes, forged addresses…).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from postroom.cli_support import (
    console,
    err,
    migrate_data_dir,
    run_with_context,
    settings_or_exit,
)
from postroom.context import AppContext


def register(app: typer.Typer) -> None:
    """Add this domain's commands to ``app``."""

    @app.command("inbound")
    def inbound(
        host: Annotated[
            str | None, typer.Option(help="Bind address (POSTROOM_INBOUND_HOST).")
        ] = None,
        port: Annotated[int | None, typer.Option(help="Port (POSTROOM_INBOUND_PORT).")] = None,
    ) -> None:
        """Receive bounces, complaints, replies and mailto unsubscribes by SMTP."""
        from postroom.feedback.smtp import InboundServer
        from postroom.logging import configure_logging

        settings = settings_or_exit()
        configure_logging(settings.log_level)
        chosen = port if port is not None else settings.inbound_port
        if chosen is None:
            err.print("[red]error:[/red] give --port or set POSTROOM_INBOUND_PORT")
            raise typer.Exit(2)
        migrate_data_dir(settings)

        async def run(ctx: AppContext) -> None:
            server = InboundServer(ctx, host=host, port=chosen)
            await server.start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            domains = ", ".join(sorted(server.domains))
            console.print(f"inbound SMTP on {server.host}:{server.bound_port} for {domains}")
            try:
                await stop.wait()
            finally:
                await server.stop()

        run_with_context(settings, run)

    @app.command("inbound-list")
    def inbound_list(
        limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    ) -> None:
        """Kept inbound mail of every workspace (and of none), newest first."""
        from postroom.models.feedback import InboundMessage

        settings = settings_or_exit()
        migrate_data_dir(settings)

        async def run(ctx: AppContext) -> list[InboundMessage]:
            async with ctx.db.transaction() as session:
                query = select(InboundMessage).order_by(InboundMessage.id.desc()).limit(limit)
                return list((await session.execute(query)).scalars())

        table = Table("id", "received", "workspace", "kind", "from", "subject", "reason")
        for row in run_with_context(settings, run):
            table.add_row(
                str(row.id),
                row.received_at.isoformat(timespec="seconds"),
                str(row.workspace_id or "-"),
                row.kind,
                row.mail_from or "<>",
                row.subject or "",
                row.reason[:80],
            )
        console.print(table)

    @app.command("inbound-stats")
    def inbound_stats() -> None:
        """The receiver's counters since the database was created."""
        from postroom.feedback.repository import counters

        settings = settings_or_exit()
        migrate_data_dir(settings)

        async def run(ctx: AppContext) -> dict[str, int]:
            async with ctx.db.transaction() as session:
                return await counters(session)

        table = Table("outcome", "count")
        for name, count in sorted(run_with_context(settings, run).items()):
            table.add_row(name, str(count))
        console.print(table)
