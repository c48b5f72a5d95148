"""``postroom campaigns list|send --follow`` as a user runs them: a real process on a fresh
SQLite data dir, while this test plays the worker (fan-out job, engine, scheduler)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from postroom.campaigns.schemas import CampaignCreate
from postroom.campaigns.service import CampaignService
from postroom.campaigns.ticks import TICK_TASKS
from postroom.config import Settings
from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.maildir import MaildirTransport
from postroom.delivery.transports import SingleTransport
from postroom.domains.service import DomainService
from postroom.wiring import register_job_kinds
from postroom.worker.scheduler import Scheduler
from postroom.workspaces.service import WorkspaceService
from tests.support.campaigns import add_contacts, campaign_body, run_jobs

POSTROOM = [sys.executable, "-m", "postroom"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATA_DIR=str(data_dir), COLUMNS="200")
    return env


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*POSTROOM, *args], env=_env(data_dir), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def _settings(data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir).resolve_secrets()  # type: ignore[call-arg]


async def _prepare(data_dir: Path) -> str:
    ctx = AppContext.build(_settings(data_dir))
    try:
        now = ctx.clock.now()
        async with ctx.db.transaction() as session:
            workspace = await WorkspaceService(session).by_name("acme")
            domains = DomainService(
                session, workspace.id, now, ctx.secret_box, ctx.settings.effective_bounce_domain
            )
            await domains.create("brand.example", None, 1024)
        await add_contacts(ctx, workspace.id, [f"c{i}@example.com" for i in range(25)])
        async with ctx.db.transaction() as session:
            service = CampaignService(session, workspace.id, now)
            campaign = await service.create(CampaignCreate.model_validate(campaign_body()))
        return str(campaign.id)
    finally:
        await ctx.db.dispose()


async def _work(data_dir: Path) -> None:
    """What ``postroom worker`` would do: fan out, send into the Maildir, complete."""
    ctx = AppContext.build(_settings(data_dir))
    register_job_kinds(ctx)
    engine = DeliveryEngine(
        ctx, SingleTransport(MaildirTransport(data_dir / "mail")), owner="t", batch_size=10
    )
    try:
        deadline = time.monotonic() + 60
        while not await run_jobs(ctx):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await engine.run_until_idle()
        await Scheduler(ctx, TICK_TASKS).tick()
    finally:
        await engine.close()
        await ctx.db.dispose()


def test_campaigns_send_follow_and_list(tmp_path: Path) -> None:
    _run(tmp_path, "workspaces", "create", "acme")
    campaign_id = asyncio.run(_prepare(tmp_path))
    assert "draft" in _run(tmp_path, "campaigns", "list", "--workspace", "acme").stdout

    follower = subprocess.Popen(
        [*POSTROOM, "campaigns", "send", campaign_id, "--workspace", "acme", "--follow"],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        asyncio.run(_work(tmp_path))
        out, errors = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, errors + out
    assert "is sending" in out
    assert "25/25" in out and f"campaign {campaign_id} sent" in out
    listing = _run(tmp_path, "campaigns", "list", "--workspace", "acme", "--status", "sent")
    assert campaign_id in listing.stdout and "25" in listing.stdout
