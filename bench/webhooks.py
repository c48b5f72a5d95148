"""Webhooks: 10,000 events delivered to a local receiver, signed, through the outbox.

A producer records events (batches of 100, one transaction each, as fast as it can)
while the webhook scheduler tasks run in a loop like the worker's (outbox fan-out, then
the sender: claims with leases, bounded concurrency, Standard Webhooks signatures, the
guarded client). The receiver is a separate process (uvicorn, raw ASGI) that counts the
requests and, from each payload's event timestamp, the time from event to delivery.

Figures: deliveries/s (first event recorded → last delivery received) and the p50/p99 of
event → delivery. Baseline: bare httpx POSTs of the same bodies to the same receiver with
the same concurrency (no database, no signing).

    python bench/webhooks.py [--quick] [--database sqlite|postgresql|both] [--rate N]

``--quick`` sends 2,000 events. The last line is the figure of the slower database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_context, bench_database, machine, new_workspace

from postroom.events.service import record_many
from postroom.webhooks.outbox import fan_out
from postroom.webhooks.sender import WebhookSender
from postroom.webhooks.service import WebhookService
from postroom.worker.scheduler import Scheduler, TickTask

BATCH = 100
TICK_SECONDS = 1.0  # the worker's pause between scheduler ticks


# --- the receiver (runs in its own process) ------------------------------------------------


def receiver_app() -> Any:
    state: dict[str, Any] = {"count": 0, "latencies": [], "first": None, "last": None}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        now = time.time()
        if scope["path"] == "/stats":
            out = json.dumps(state).encode()
        elif scope["path"] == "/reset":
            state.update(count=0, latencies=[], first=None, last=None)
            out = b"{}"
        else:
            state["count"] += 1
            state["first"] = state["first"] or now
            state["last"] = now
            stamp = json.loads(body).get("timestamp")
            if stamp:
                state["latencies"].append(now - datetime.fromisoformat(stamp).timestamp())
            out = b"ok"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": out})

    return app


def serve_receiver(port: int) -> None:
    import uvicorn

    uvicorn.run(receiver_app(), host="127.0.0.1", port=port, log_level="error", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--receiver", str(self.port)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.post(self.url + "/reset", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the receiver did not start")

    def reset(self) -> None:
        httpx.post(self.url + "/reset", timeout=5)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.post(self.url + "/stats", timeout=30).json()
        return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- runs ---------------------------------------------------------------------------------


def body_of(n: int) -> bytes:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {"type": "signup", "timestamp": stamp, "data": {"n": n, "plan": "pro"}},
        separators=(",", ":"),
    ).encode()


async def bare_httpx(receiver: Receiver, count: int, concurrency: int) -> tuple[float, float]:
    receiver.reset()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def one(n: int) -> None:
            async with gate:
                response = await client.post(receiver.url + "/hook", content=body_of(n))
                response.raise_for_status()

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(n) for n in range(count)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert receiver.stats()["count"] == count
    return count / elapsed, cpu / count


async def through_postroom(
    kind: str, receiver: Receiver, count: int, rate: float
) -> tuple[float, float, float, float, float]:
    async with bench_database(kind) as url:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = await bench_context(url, Path(tmp))
            ctx.settings.webhooks_allow_private = True  # the receiver is on loopback
            try:
                return await _run(ctx, receiver, count, rate)
            finally:
                await ctx.db.dispose()


async def _run(
    ctx: Any, receiver: Receiver, count: int, rate: float
) -> tuple[float, float, float, float, float]:
    workspace_id = await new_workspace(ctx)
    async with ctx.db.transaction() as session:
        service = WebhookService(
            session, workspace_id, ctx.clock.now(), ctx.secret_box, allow_private=True
        )
        await service.create(
            url=receiver.url + "/hook", event_types=["signup"], description=None, enabled=True
        )
    receiver.reset()
    sender = WebhookSender(ctx)
    scheduler = Scheduler(
        ctx, [TickTask("webhook_outbox", fan_out), TickTask("webhook_send", sender.tick)]
    )
    produced = asyncio.Event()

    async def produce() -> None:
        for start in range(0, count, BATCH):
            now = ctx.clock.now()
            rows = [
                {
                    "id": uuid.uuid4(),
                    "workspace_id": workspace_id,
                    "type": "signup",
                    "data": {"n": n, "plan": "pro"},
                    "occurred_at": now,
                }
                for n in range(start, min(count, start + BATCH))
            ]
            async with ctx.db.transaction() as session:
                await record_many(session, rows)
            # Paced (--rate): the next batch waits for its time; else as fast as possible.
            due = started + (start + BATCH) / rate if rate else 0
            await asyncio.sleep(max(0.0, due - time.time()))
        produced.set()

    async def work() -> None:
        while True:
            await scheduler.tick()
            if produced.is_set() and receiver.stats()["count"] >= count:
                return
            await asyncio.sleep(TICK_SECONDS)

    started, cpu = time.time(), time.process_time()
    await asyncio.wait_for(asyncio.gather(produce(), work()), timeout=600)
    cpu = time.process_time() - cpu
    stats = receiver.stats()
    assert stats["count"] == count, stats["count"]
    latencies = sorted(stats["latencies"])
    delivered = count / (stats["last"] - started)
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return delivered, p50, p99, max(latencies), cpu / count


async def main(args: argparse.Namespace) -> None:
    count = 2_000 if args.quick else 10_000
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    receiver = Receiver()
    try:
        concurrency = int(os.environ.get("POSTROOM_WEBHOOKS_ENDPOINT_CONCURRENCY", "8"))
        baseline, base_cpu = await bare_httpx(receiver, count, concurrency)
        print(
            f"bare httpx, {concurrency} in flight: {baseline:.0f} requests/s, "
            f"{base_cpu * 1000:.2f} ms CPU per request"
        )
        rates: list[float] = []
        for kind in kinds:
            rate, p50, p99, worst, cpu = await through_postroom(kind, receiver, count, args.rate)
            # CPU of this process per delivery (producer, outbox, sender; the database
            # server's share not included): comparable even on a busy machine.
            print(
                f"{kind}: {count} events → {rate:.0f} deliveries/s; event → delivery "
                f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms; "
                f"{cpu * 1000:.2f} ms CPU per delivery"
            )
            rates.append(rate)
        # The headline is the slower database (conservative).
        slowest = min(rates)
        print(f"webhooks: {slowest:.0f} deliveries/s (x{slowest / baseline:.2f} vs bare httpx)")
    finally:
        receiver.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--receiver":
        serve_receiver(int(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 events instead of 10,000")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="produce events at this rate (events/s) to see steady-state latency; "
        "default: all at once (the backlog case)",
    )
    asyncio.run(main(parser.parse_args()))
