"""The ``postroom`` command: serve, worker, migrate, workspaces, keys, secrets."""

from __future__ import annotations

import asyncio
import importlib
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from postroom.cli_support import (
    console,
    err,
    migrate_data_dir,
    run_with_context,
    settings_or_exit,
)
from postroom.context import AppContext
from postroom.db import migrate as migrations
from postroom.errors import NotFound
from postroom.logging import configure_logging

if TYPE_CHECKING:
    from postroom.domains.service import DomainService, DomainView

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Postroom: self-hosted email campaigns.")
workspaces_app = typer.Typer(no_args_is_help=True, help="Manage workspaces.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
secrets_app = typer.Typer(no_args_is_help=True, help="Manage the secret key.")
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(keys_app, name="keys")
app.add_typer(secrets_app, name="secrets")

_settings = settings_or_exit
_run = run_with_context
_migrate = migrate_data_dir


@app.command()
def migrate(revision: str = "head") -> None:
    """Apply database migrations (serve and worker do this by themselves)."""
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.sqlalchemy_url, revision)
    console.print(f"database at revision {revision}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (POSTROOM_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (POSTROOM_PORT).")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API only; run `postroom worker` elsewhere.")
    ] = False,
) -> None:
    """Migrate, create the default workspace on first start, and serve HTTP."""
    import uvicorn

    from postroom.app import create_app
    from postroom.bootstrap import bootstrap_if_empty

    settings = _settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    configure_logging(settings.log_level)
    _migrate(settings)
    keys = _run(settings, bootstrap_if_empty)
    if keys is not None:
        console.print(
            "[bold]First start: created the 'default' workspace.[/bold] Keys are shown once:"
        )
        console.print(f"  admin key (workspaces):        {keys.admin_key}")
        console.print(f"  workspace key (every scope):   {keys.workspace_key}")
    backend = settings.sqlalchemy_url.split(":")[0]
    console.print(f"Postroom on {settings.public_base_url}  (database: {backend})")
    application = create_app(settings, run_worker=not no_worker)
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="warning")


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Concurrent jobs/sends.")] = None,
) -> None:
    """Run the scheduler and background workers (scaled-out deployments)."""
    from postroom.wiring import build_scheduler, register_job_kinds
    from postroom.worker.loop import Worker

    settings = _settings()
    if concurrency:
        settings.worker_concurrency = concurrency
    configure_logging(settings.log_level)
    _migrate(settings)

    async def run(ctx: AppContext) -> None:
        register_job_kinds(ctx)
        loop_worker = Worker(ctx, ctx.jobs, build_scheduler(ctx))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, loop_worker.stop_event.set)
        console.print(f"worker started (concurrency {settings.worker_concurrency})")
        await loop_worker.run_forever()

    _run(settings, run)


@workspaces_app.command("create")
def workspaces_create(name: str) -> None:
    """Create a workspace; prints a full-scope key as the last line."""
    from postroom.workspaces.service import WorkspaceService

    settings = _settings()
    _migrate(settings)

    async def work(ctx: AppContext) -> str:
        async with ctx.db.transaction() as session:
            workspace, key = await WorkspaceService(session).create(name, ctx.clock.now())
            console.print(f"workspace {workspace.name} ({workspace.id})")
            return key.plaintext

    print(_run(settings, work))


@workspaces_app.command("list")
def workspaces_list() -> None:
    from postroom.workspaces.repository import WorkspaceRepository

    settings = _settings()

    async def work(ctx: AppContext) -> None:
        async with ctx.db.transaction() as session:
            table = Table("id", "name", "created")
            for row in await WorkspaceRepository(session).page(None, 10_000):
                table.add_row(str(row.id), row.name, row.created_at.isoformat())
            console.print(table)

    _run(settings, work)


@keys_app.command("create")
def keys_create(
    workspace: Annotated[str | None, typer.Option(help="Workspace name.")] = None,
    scopes: Annotated[str | None, typer.Option(help="Comma-separated scopes; default all.")] = None,
    public: Annotated[bool, typer.Option("--public", help="A pk_ key (events only).")] = False,
    admin: Annotated[
        bool, typer.Option("--admin", help="An ak_ key (manages workspaces).")
    ] = False,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create a key; prints it as the last line (shown once)."""
    from postroom.workspaces.service import WorkspaceService

    if admin == (workspace is not None):
        err.print("[red]error:[/red] give either --workspace NAME or --admin")
        raise typer.Exit(2)
    settings = _settings()
    _migrate(settings)
    scope_list = [s.strip() for s in scopes.split(",") if s.strip()] if scopes else None

    async def work(ctx: AppContext) -> str:
        async with ctx.db.transaction() as session:
            service = WorkspaceService(session)
            workspace_id = None if admin else (await service.by_name(workspace or "")).id
            kind = "admin" if admin else ("public" if public else "secret")
            issued = await service.issue_key(
                workspace_id, kind=kind, name=name, scopes=scope_list, now=ctx.clock.now()
            )
            console.print(
                f"key {issued.record.id} ({kind}) scopes: {','.join(issued.record.scopes) or '-'}"
            )
            return issued.plaintext

    print(_run(settings, work))


@keys_app.command("list")
def keys_list(
    workspace: Annotated[
        str | None, typer.Option(help="Workspace name; default admin keys.")
    ] = None,
) -> None:
    from postroom.workspaces.repository import ApiKeyRepository
    from postroom.workspaces.service import WorkspaceService

    settings = _settings()

    async def work(ctx: AppContext) -> None:
        async with ctx.db.transaction() as session:
            workspace_id = (
                (await WorkspaceService(session).by_name(workspace)).id if workspace else None
            )
            rows = await ApiKeyRepository(session).page(
                workspace_id, None, 10_000, admin=workspace is None
            )
            table = Table("id", "kind", "prefix", "name", "scopes", "last used", "revoked")
            for row in rows:
                table.add_row(
                    str(row.id),
                    row.kind,
                    row.prefix + "…",
                    row.name,
                    str(len(row.scopes)),
                    row.last_used_at.isoformat() if row.last_used_at else "-",
                    row.revoked_at.isoformat() if row.revoked_at else "-",
                )
            console.print(table)

    _run(settings, work)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id."""
    from postroom.workspaces.service import WorkspaceService

    try:
        parsed = uuid.UUID(key_id)
    except ValueError:
        err.print("[red]error:[/red] KEY_ID must be a key id as `postroom keys list` shows")
        raise typer.Exit(2) from None
    settings = _settings()

    async def work(ctx: AppContext) -> None:
        async with ctx.db.transaction() as session:
            await WorkspaceService(session).revoke_key(parsed, ctx.clock.now(), workspace_id=None)
        console.print(f"revoked {parsed}")

    _run(settings, work)


@app.command("import")
def import_contacts(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV, JSON or JSON lines"),
    ],
    workspace: Annotated[str, typer.Option(help="Workspace name.")],
    list_name: Annotated[
        str | None, typer.Option("--list", help="Subscribe everyone to this list.")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, json or jsonl; default: guessed")
    ] = None,
) -> None:
    """Import contacts from a file, with a progress bar and a summary of bad lines."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from postroom.contacts.importer import ContactImporter, ImportSummary
    from postroom.contacts.lists_repository import ListRepository
    from postroom.workspaces.service import WorkspaceService

    if fmt not in (None, "csv", "json", "jsonl"):
        err.print("[red]error:[/red] --format must be csv, json or jsonl")
        raise typer.Exit(2)
    settings = _settings()
    _migrate(settings)
    size = file.stat().st_size

    async def work(ctx: AppContext) -> ImportSummary:
        async with ctx.db.transaction() as session:
            workspace_id = (await WorkspaceService(session).by_name(workspace)).id
            list_id = None
            if list_name:
                found = await ListRepository(session, workspace_id).by_name(list_name)
                if found is None:
                    raise NotFound("list", list_name)
                list_id = found.id
        with (
            file.open("rb") as handle,
            Progress(
                TextColumn("[bold]importing"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[rows]} rows"),
                console=console,
            ) as bar,
        ):
            task = bar.add_task("import", total=size, rows=0)

            async def progress(summary: ImportSummary) -> None:
                bar.update(task, completed=handle.tell(), rows=summary.processed)

            importer = ContactImporter(ctx, workspace_id, list_id=list_id, progress=progress)
            summary = await importer.run(handle, fmt=fmt, filename=file.name)  # type: ignore[arg-type]
            bar.update(task, completed=size, rows=summary.processed)
        return summary

    summary = _run(settings, work)
    console.print(
        f"processed {summary.processed}: created {summary.created}, "
        f"updated {summary.updated}, failed {summary.failed}"
    )
    for error in summary.errors[:20]:
        where = f" ({error['field']})" if error["field"] else ""
        console.print(f"  line {error['line']}{where}: {error['message']}")
    if summary.failed > 20:
        console.print(f"  … and {summary.failed - 20} more bad lines")


@app.command("export")
def export_contacts(
    workspace: Annotated[str, typer.Option(help="Workspace name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
    list_name: Annotated[
        str | None, typer.Option("--list", help="Only this list's subscribers.")
    ] = None,
) -> None:
    """Export contacts to CSV or JSON lines (streamed: flat memory)."""
    from postroom.contacts.exporter import ContactExporter, ExportSelection
    from postroom.contacts.lists_repository import ListRepository
    from postroom.workspaces.service import WorkspaceService

    if fmt not in ("csv", "jsonl"):
        err.print("[red]error:[/red] --format must be csv or jsonl")
        raise typer.Exit(2)
    settings = _settings()
    _migrate(settings)

    async def work(ctx: AppContext) -> int:
        async with ctx.db.transaction() as session:
            workspace_id = (await WorkspaceService(session).by_name(workspace)).id
            selection = ExportSelection()
            if list_name:
                found = await ListRepository(session, workspace_id).by_name(list_name)
                if found is None:
                    raise NotFound("list", list_name)
                selection.list_id = found.id
        with output.open("wb") as handle:

            async def sink(chunk: bytes) -> None:
                handle.write(chunk)

            return await ContactExporter(ctx, workspace_id, selection).run(fmt, sink)  # type: ignore[arg-type]

    rows = _run(settings, work)
    console.print(f"exported {rows} contacts to {output}")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret under the current POSTROOM_SECRET_KEY.

    Set the new key as POSTROOM_SECRET_KEY and the previous one in
    POSTROOM_OLD_SECRET_KEYS, run this, then keep the old key there for as long as
    links in mail already sent should keep working (unsubscribe links: forever).
    """
    from postroom.security.rotation import rotate_stored_secrets

    settings = _settings()
    _migrate(settings)

    async def work(ctx: AppContext) -> int:
        async with ctx.db.transaction() as session:
            return await rotate_stored_secrets(session, ctx.secret_box)

    count = _run(settings, work)
    console.print(f"re-encrypted {count} stored secret(s)")


# --- sending domains and DKIM -------------------------------------------------------------

domains_app = typer.Typer(no_args_is_help=True, help="Manage sending domains.")
dkim_app = typer.Typer(no_args_is_help=True, help="Manage DKIM keys of sending domains.")
app.add_typer(domains_app, name="domains")
app.add_typer(dkim_app, name="dkim")

SelectorOption = Annotated[
    str | None, typer.Option(help="DKIM selector; default pr + year and month (pr202611).")
]
BitsOption = Annotated[int, typer.Option(help="RSA key size: 1024, 2048, 3072 or 4096.")]


def _check_bits(bits: int) -> None:
    if bits not in (1024, 2048, 3072, 4096):
        err.print("[red]error:[/red] --bits must be 1024, 2048, 3072 or 4096")
        raise typer.Exit(2)


def _print_dns_records(view: DomainView) -> None:
    """Plain print, not rich: the values must copy and paste without wrapping."""
    row = view.domain
    print(f"domain {row.domain} ({row.id}): publish these DNS records")
    for record, _status in view.records:
        label = record.purpose.upper().replace("_", "-")
        if record.selector:
            active = view.active_key
            signing = active is not None and active.selector == record.selector
            label += (
                f" (selector {record.selector}{', signing' if signing else ', not signing yet'})"
            )
        print()
        print(label)
        print(f"  type:  {record.type}")
        print(f"  name:  {record.name}")
        print(f"  value: {record.value}")
        if len(record.chunks) > 1:
            print("  as 255-character strings: " + " ".join(f'"{c}"' for c in record.chunks))


def _domain_command(
    workspace: str, work: Callable[[DomainService], Awaitable[DomainView]]
) -> DomainView:
    from postroom.domains.service import DomainService
    from postroom.workspaces.service import WorkspaceService

    settings = _settings()
    _migrate(settings)

    async def run(ctx: AppContext) -> DomainView:
        async with ctx.db.transaction() as session:
            workspace_id = (await WorkspaceService(session).by_name(workspace)).id
            service = DomainService(
                session,
                workspace_id,
                ctx.clock.now(),
                ctx.secret_box,
                settings.effective_bounce_domain,
            )
            return await work(service)

    return _run(settings, run)


@domains_app.command("add")
def domains_add(
    domain: str,
    workspace: Annotated[str, typer.Option(help="Workspace name.")],
    selector: SelectorOption = None,
    bits: BitsOption = 2048,
) -> None:
    """Add a sending domain with a new DKIM key and print the DNS records to publish."""
    _check_bits(bits)

    async def work(service: DomainService) -> DomainView:
        return await service.view(await service.create(domain, selector, bits))

    _print_dns_records(_domain_command(workspace, work))


@dkim_app.command("generate")
def dkim_generate(
    domain: str,
    workspace: Annotated[str, typer.Option(help="Workspace name.")],
    selector: SelectorOption = None,
    bits: BitsOption = 2048,
) -> None:
    """Generate a new DKIM key for a domain (rotation) and print the DNS records. The new
    key signs once `POST /v1/domains/{id}/check` has seen its record."""
    _check_bits(bits)

    async def work(service: DomainService) -> DomainView:
        row = await service.by_name(domain)
        await service.add_key(row.id, selector, bits)
        return await service.view(row)

    _print_dns_records(_domain_command(workspace, work))


# Domain packages keep their commands in ``<domain>/cli.py``; each module's
# ``register(app)`` adds them.
DOMAIN_COMMANDS = (
    "postroom.relays.cli",
    "postroom.campaigns.cli",
    "postroom.feedback.cli",
)
for _module in DOMAIN_COMMANDS:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()
