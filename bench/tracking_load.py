"""Tracking load: the open pixel and click redirect of a real ``postroom serve`` under wrk.

Starts ``postroom serve`` (one process: API, tracking buffer, scheduler and worker — the
embedded default) on a free loopback port, on SQLite (default) or PostgreSQL, seeds a send
with deliveries, signs an open and a click token for each (``TrackingLinks``, as the
composer does) and drives ``/t/o/…`` and ``/t/c/…`` with ``wrk`` (a Lua script rotates the
tokens). Then the server is stopped cleanly (the engagement buffer flushes) and the
persisted ``email.opened`` + ``email.clicked`` events are counted: they must equal the
tracking requests wrk saw answered 2xx/3xx.

So that no tracking request is still in flight when wrk stops (wrk drops those, while the
server has already recorded them), each wrk thread sends tracking requests for the
window only, then ``/healthz`` until the end of the run. The throughput is measured by the
server: persisted events over the span of their ``occurred_at``. Baseline: ``/healthz`` of
the same server under the same wrk load. Target: ≥ 2,000 requests/s.

    python bench/tracking_load.py [--quick] [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select, update

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SECRET, bench_database, machine

from postroom.config import Settings
from postroom.context import AppContext
from postroom.db import migrate
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.models.delivery import Delivery
from postroom.models.platform import Event
from postroom.tracking.tokens import DeliveryRef, TrackingLinks
from postroom.workspaces.service import WorkspaceService

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
CONNECTIONS = 64
TAIL_SECONDS = 3  # /healthz after the tracking window, so every tracking request completes

LUA = r"""
local paths = {%(paths)s}
local window = %(window)d
local threads = {}
counter = 0
ok = 0
other = 0
local deadline = nil
local step = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("offset", #threads * 7919)
end

function request()
  if deadline == nil then deadline = os.time() + window end
  if os.time() < deadline then
    counter = counter + 1
    return wrk.format("GET", paths[(counter + offset) %% #paths + 1])
  end
  return wrk.format("GET", "/healthz")
end

function response(status, headers, body)
  local kind = headers["content-type"] or headers["Content-Type"] or ""
  if status == 302 or (status == 200 and kind == "image/gif") then
    ok = ok + 1
  elseif status >= 400 then
    other = other + 1
  end
end

function done(summary, latency, requests)
  local answered, failed, issued = 0, 0, 0
  for _, thread in ipairs(threads) do
    answered = answered + thread:get("ok")
    failed = failed + thread:get("other")
    issued = issued + thread:get("counter")
  end
  io.write(string.format("TRACKING answered=%%d failed=%%d issued=%%d\n", answered, failed, issued))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(ctx: AppContext, recipients: int) -> list[str]:
    """A send with deliveries; an open path and a click path for each."""
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        workspace, _key = await WorkspaceService(session).create("load", now)
        send = await create_send(
            session,
            workspace.id,
            SendSpec(
                kind="campaign",
                content={"inline": {"subject": "s", "html": "<p>x</p>", "text": None}},
                from_email="news@brand.example",
            ),
            now,
        )
        ids = await enqueue(
            session, send, [Recipient(f"reader{i}@example.com") for i in range(recipients)], now
        )
        # Already sent: the embedded worker must not be sending them during the load.
        await session.execute(
            update(Delivery).where(Delivery.send_id == send.id).values(status="sent", sent_at=now)
        )
    links = TrackingLinks(ctx)
    paths: list[str] = []
    for i, delivery_id in enumerate(ids):
        ref = DeliveryRef(workspace.id, send.id, delivery_id, None)
        paths.append(urlsplit(links.open_url(ref)).path)
        paths.append(urlsplit(links.click_url(ref, f"https://shop.example/p/{i % 20}")).path)
    return paths


def wrk(url: str, seconds: int, script: Path | None = None) -> str:
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    result = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    return result.stdout


def requests_per_second(output: str) -> float:
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert found, output
    return float(found.group(1))


async def count_events(ctx: AppContext) -> tuple[int, float]:
    async with ctx.db.read_sessions() as session:
        row = (
            await session.execute(
                select(
                    func.count(), func.min(Event.occurred_at), func.max(Event.occurred_at)
                ).where(Event.type.in_(("email.opened", "email.clicked")))
            )
        ).one()
    count, first, last = row
    span = (last - first).total_seconds() if count else 0.0
    return int(count), span


def start_server(
    env: dict[str, str], port: int, log: Path, no_worker: bool, profile: Path | None
) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    extra = ["--no-worker"] if no_worker else []
    python = [sys.executable]
    if profile is not None:  # the whole server run under pyinstrument (statistical, low cost)
        python += ["-m", "pyinstrument", "--no-color", "-o", str(profile)]
    return subprocess.Popen(
        [*python, "-m", "postroom", "serve", "--port", str(port), *extra],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


async def wait_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if server.poll() is not None:
                raise RuntimeError(f"server exited; see {log}")
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


async def run(
    kind: str, window: int, recipients: int, no_worker: bool, profile: Path | None = None
) -> tuple[float, float]:
    async with AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if kind == "sqlite":
            url = f"sqlite:///{tmp / 'postroom.db'}"
            migrate.upgrade(url)
        else:
            url = await stack.enter_async_context(bench_database("postgresql"))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, database_url=url, data_dir=tmp, secret_key=SECRET, base_url=base
        )
        ctx = AppContext.build(settings)
        stack.push_async_callback(ctx.db.dispose)
        paths = await seed(ctx, recipients)

        script = tmp / "rotate.lua"
        quoted = ",".join(f'"{p}"' for p in paths)
        script.write_text(LUA % {"paths": quoted, "window": window})
        env = {
            **os.environ,
            "POSTROOM_DATABASE_URL": url,
            "POSTROOM_DATA_DIR": str(tmp),
            "POSTROOM_SECRET_KEY": SECRET,
            "POSTROOM_BASE_URL": base,
            "POSTROOM_LOG_LEVEL": "warning",
        }
        log = tmp / "server.log"
        server = start_server(env, port, log, no_worker, profile)
        try:
            await wait_ready(base, server, log)
            wrk(f"{base}/healthz", 2)  # warm up
            baseline_out = wrk(f"{base}/healthz", window)
            baseline = requests_per_second(baseline_out)
            print(f"[{kind}] /healthz: {baseline:,.0f} req/s")
            started = time.perf_counter()
            output = await asyncio.to_thread(wrk, base, window + TAIL_SECONDS, script)
            elapsed = time.perf_counter() - started
        finally:
            server.send_signal(signal.SIGINT)  # clean shutdown: the buffer is flushed
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        found = re.search(r"TRACKING answered=(\d+) failed=(\d+) issued=(\d+)", output)
        assert found, output
        answered, failed, issued = (int(g) for g in found.groups())
        persisted, span = await count_events(ctx)
        rate = persisted / span if span else 0.0
        latency = re.search(r"99%\s+(\S+)", output)
        print(
            f"[{kind}] tracking: {issued:,} requests issued, {answered:,} answered 2xx/3xx, "
            f"{failed} errors; {persisted:,} open/click events persisted over {span:.1f} s "
            f"(wrk run {elapsed:.1f} s, p99 {latency.group(1) if latency else '?'} incl. the "
            f"/healthz tail)"
        )
        assert failed == 0, output
        # Every answered request was persisted, and nothing else was. (wrk may generate one
        # request per thread that it never sends when the run stops: issued ≥ answered.)
        if profile is None:  # under pyinstrument SIGINT stops the server abruptly
            assert persisted == answered, (persisted, answered, issued)
        return rate, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 5 s window instead of 15 s")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--no-worker", action="store_true", help="serve --no-worker (API only, no scheduler)"
    )
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile of the server")
    args = parser.parse_args()
    window = 5 if args.quick else 15
    print(
        f"tracking_load: 1 `postroom serve{' --no-worker' if args.no_worker else ''}` "
        f"process ({args.db}), wrk -t{THREADS} "
        f"-c{CONNECTIONS}, {window} s window, on {machine()} (shared)"
    )
    rate, baseline = asyncio.run(run(args.db, window, 1000, args.no_worker, args.profile))
    print(f"tracking_load: {rate:.0f} req/s (x{rate / baseline:.2f} vs /healthz)")


if __name__ == "__main__":
    main()
