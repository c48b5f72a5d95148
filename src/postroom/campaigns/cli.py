"""``postroom campaigns list|send``: campaigns from the command line.

``send ID --follow`` starts the campaign (as ``POST /v1/campaigns/{id}/send``) and draws a
live progress bar from the ledger until the campaign is sent, cancelled or failed; Ctrl-C
stops following, not sending (the workers of ``serve``/``worker`` send).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.campaigns.repository import REMAINING
from postroom.campaigns.service import CampaignService, ProgressView
from postroom.cli_support import console, err, in_workspace, run_with_context, settings_or_exit
from postroom.context import AppContext
from postroom.errors import ValidationFailed
from postroom.models.campaigns import Campaign

campaigns_app = typer.Typer(no_args_is_help=True, help="Broadcast campaigns.")

WorkspaceOption = Annotated[str, typer.Option(help="Workspace name.")]
FINAL = ("sent", "cancelled", "failed")
POLL_SECONDS = 0.5


def _id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        err.print(f"[red]error:[/red] {raw!r} is not a campaign id")
        raise typer.Exit(2) from None


@campaigns_app.command("list")
def campaigns_list(
    workspace: WorkspaceOption,
    status: Annotated[str | None, typer.Option(help="Only campaigns in this status.")] = None,
) -> None:
    """List a workspace's campaigns (oldest first)."""

    async def work(
        ctx: AppContext, session: AsyncSession, workspace_id: uuid.UUID
    ) -> list[Campaign]:
        service = CampaignService(session, workspace_id, ctx.clock.now())
        return await service.page(None, 1000, status)

    rows = in_workspace(workspace, work)
    table = Table("id", "name", "status", "recipients", "scheduled at (UTC)", "started at")
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            row.status,
            "-" if row.recipients is None else str(row.recipients),
            row.scheduled_at.isoformat() if row.scheduled_at else "-",
            row.started_at.isoformat() if row.started_at else "-",
        )
    console.print(table)


@campaigns_app.command("send")
def campaigns_send(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    workspace: WorkspaceOption,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show a live progress bar until it finishes.")
    ] = False,
) -> None:
    """Start sending a draft or scheduled campaign now."""
    wanted = _id(campaign_id)

    async def work(ctx: AppContext, session: AsyncSession, workspace_id: uuid.UUID) -> Campaign:
        service = CampaignService(session, workspace_id, ctx.clock.now())
        try:
            return await service.send_now(wanted)
        except ValidationFailed as problem:
            details = "; ".join(f"{p.field}: {p.message}" for p in problem.problems)
            raise ValidationFailed(problem.problems, details or problem.message) from None

    row = in_workspace(workspace, work)
    console.print(f"campaign {row.name} ({row.id}) is {row.status}", highlight=False)
    if follow:
        _follow(row.workspace_id, row.id)


def _follow(workspace_id: uuid.UUID, campaign_id: uuid.UUID) -> None:
    settings = settings_or_exit()

    async def poll(ctx: AppContext) -> tuple[Campaign, ProgressView | None]:
        async with ctx.db.read_sessions() as session:
            service = CampaignService(session, workspace_id, ctx.clock.now())
            campaign = await service.get(campaign_id)
            return campaign, await service.progress(campaign)

    async def watch(ctx: AppContext) -> str:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f}/s  eta {task.fields[eta]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("starting", total=None, rate=0.0, eta="-")
            while True:
                campaign, view = await poll(ctx)
                total = campaign.recipients if campaign.recipients is not None else None
                done = 0
                rate = 0.0
                eta = "-"
                if view is not None:
                    done = view.total - sum(view.counts[s] for s in REMAINING)
                    total = total if total is not None else (view.total or None)
                    rate = view.rate
                    if view.eta_seconds is not None:
                        eta = f"{view.eta_seconds:.0f}s"
                bar.update(
                    task,
                    description=campaign.status,
                    completed=done,
                    total=total,
                    rate=rate,
                    eta=eta,
                )
                if campaign.status in FINAL:
                    return campaign.status
                await asyncio.sleep(POLL_SECONDS)

    try:
        status = run_with_context(settings, watch)
    except KeyboardInterrupt:
        console.print("stopped following; the campaign goes on")
        return
    console.print(f"campaign {campaign_id} {status}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``postroom campaigns …`` to the ``postroom`` command."""
    app.add_typer(campaigns_app, name="campaigns")
