"""kill -9 a sending worker: no recipient is lost, and only rows in flight at the kill may
be sent twice. Two workers on one database never send the same delivery twice.

The workers are real processes (tests/support/engine_process.py) running the production
engine against the test database and the SMTP fixture."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from postroom.clock import FrozenClock
from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.delivery.transports import SingleTransport
from postroom.models.delivery import Delivery
from postroom.wiring import build_scheduler
from tests.conftest import TEST_SECRET, WorkspaceHandle
from tests.support.smtp_server import TestSmtpServer
from tests.test_engine import relay_pool

ROOT = Path(__file__).parent.parent
TOTAL = 5000
KILL_AFTER = 1500


async def _queue(ctx: AppContext, workspace: WorkspaceHandle, count: int) -> list[str]:
    emails = [f"k{i}@example.com" for i in range(count)]
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        send = await create_send(
            session,
            workspace.id,  # type: ignore[arg-type]
            SendSpec(
                kind="campaign",
                content={"inline": {"subject": "Hi", "html": "<p>Hello</p>", "text": None}},
                from_email="news@brand.example",
            ),
            now,
        )
        await enqueue(session, send, [Recipient(e) for e in emails], now)
    return emails


def _worker(
    ctx: AppContext,
    smtp: TestSmtpServer,
    owner: str,
    tmp_path: Path,
    *,
    batch: int = 50,
    gate: bool = False,
) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "tests.support.engine_process",
        "--db",
        str(ctx.settings.database_url),
        "--secret",
        TEST_SECRET,
        "--smtp",
        smtp.url,
        "--now",
        ctx.clock.now().isoformat(),
        "--owner",
        owner,
        "--data-dir",
        str(tmp_path),
        "--batch",
        str(batch),
    ]
    if gate:
        command += ["--ready", str(tmp_path / f"{owner}.ready"), "--go", str(tmp_path / "go")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


async def _statuses(ctx: AppContext) -> Counter[str]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        )
        return Counter(dict(rows.all()))


async def test_kill_9_mid_send_loses_nobody_and_duplicates_only_rows_in_flight(
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    tmp_path: Path,
) -> None:
    emails = await _queue(ctx, workspace, TOTAL)
    proc = _worker(ctx, smtp_server, "doomed", tmp_path)
    started = time.perf_counter()
    first_at: float | None = None
    try:
        while (received := smtp_server.count()) < KILL_AFTER:
            assert proc.poll() is None, "the worker exited before it was killed"
            assert time.perf_counter() - started < 120, "the worker is too slow"
            if first_at is None and received:
                first_at, first_count = time.perf_counter(), received
            await asyncio.sleep(0.005)
        received_at_kill = smtp_server.count()
        assert first_at is not None
        rate = (received_at_kill - first_count) / (time.perf_counter() - first_at)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    await asyncio.sleep(0.2)  # let the server finish whatever was on the wire
    at_kill = await _statuses(ctx)
    held = at_kill["sending"]
    assert held <= 2 * 50  # at most concurrency × batch rows are leased at once

    clock.advance(ctx.settings.worker_lease_seconds + 1)
    ticked = await build_scheduler(ctx).tick()
    assert ticked["reclaim_deliveries"] == held
    survivor = DeliveryEngine(
        ctx,
        SingleTransport(relay_pool(smtp_server.url)),
        owner="survivor",
        batch_size=50,
        concurrency=2,
    )
    try:
        finished = await survivor.run_until_idle()
    finally:
        await survivor.close()

    assert await _statuses(ctx) == Counter(sent=TOTAL)
    copies = Counter(rcpt for message in smtp_server.messages for rcpt in message.rcpt_tos)
    assert set(copies) == set(emails)  # nobody lost
    duplicates = sum(count - 1 for count in copies.values())
    assert duplicates <= held
    print(
        f"\n[{ctx.db.dialect}] kill -9 after {received_at_kill} messages "
        f"(the worker sent {rate:.0f} msg/s): "
        f"{at_kill['sent']} rows sent, {held} rows held by the killed worker; "
        f"survivor sent {finished['sent']}; received {sum(copies.values())} messages "
        f"for {TOTAL} recipients, {duplicates} duplicates (bound {held})"
    )


async def test_two_workers_never_send_the_same_delivery_twice(
    ctx: AppContext, workspace: WorkspaceHandle, smtp_server: TestSmtpServer, tmp_path: Path
) -> None:
    total = 3000
    emails = await _queue(ctx, workspace, total)
    workers = [_worker(ctx, smtp_server, owner, tmp_path, gate=True) for owner in ("w1", "w2")]
    try:
        deadline = time.perf_counter() + 60
        while not all((tmp_path / f"{owner}.ready").exists() for owner in ("w1", "w2")):
            assert all(w.poll() is None for w in workers), "a worker exited early"
            assert time.perf_counter() < deadline
            await asyncio.sleep(0.02)
        started = time.perf_counter()
        (tmp_path / "go").write_text("go")
        outputs = await asyncio.gather(
            *(asyncio.to_thread(w.communicate, timeout=120) for w in workers)
        )
        elapsed = time.perf_counter() - started
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [w.returncode for w in workers] == [0, 0]
    totals = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    copies = Counter(rcpt for message in smtp_server.messages for rcpt in message.rcpt_tos)
    assert copies == Counter(dict.fromkeys(emails, 1))
    assert await _statuses(ctx) == Counter(sent=total)
    shares = [t.get("sent", 0) / total for t in totals]
    assert sum(t.get("sent", 0) for t in totals) == total
    assert min(shares) >= 0.2, shares
    print(
        f"\n[{ctx.db.dialect}] two workers: {total} deliveries in {elapsed:.1f}s "
        f"({total / elapsed:.0f} msg/s), shares {[f'{s:.0%}' for s in shares]}, no duplicates"
    )
