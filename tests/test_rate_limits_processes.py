"""A relay's rate limit held by two real ``postroom worker`` processes sharing only the
database, measured where it matters: the receive times at the SMTP server.

This is the one rate-limit test on real time (the limit is per second, and the workers
are separate processes on the system clock); it takes 10-25 s per database: starting
two processes, then at least 4.4 s of sending.
"""

from __future__ import annotations

import bisect
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from postroom.clock import FrozenClock
from postroom.context import AppContext
from postroom.delivery.sends import Recipient
from tests.conftest import TEST_SECRET, WorkspaceHandle
from tests.support.smtp_server import TestSmtpServer
from tests.test_engine import addresses, deliveries, queue_send

LIMIT = 20  # messages per second at the relay
COUNT = 100
BURST = LIMIT // 5
# The limiter grants at most LIMIT in any 1.1 s, in paced bursts of at most LIMIT / 5
# (4) per 175 ms. The server sees each burst a little after its grant, and that delay
# varies with the machine's load (here: the rest of the suite on 2 cores) by up to a few
# hundred ms, so a late burst can land in the next second's window: 20-24 in the busiest
# second in most runs, 28 (two late bursts) seen once during a full suite run. Jitter
# moves messages between neighbouring windows but cannot create them, so the test holds
# the limit over 3 s (3 x LIMIT plus two late bursts) and bounds any single second below
# 2 x LIMIT. A limiter that is not shared sends 2 x LIMIT per second (120 in 3 s) and
# fails both.


def _worker(db_url: str, data_dir: Path, name: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(
        POSTROOM_DATABASE_URL=db_url,
        POSTROOM_DATA_DIR=str(data_dir / name),
        POSTROOM_SECRET_KEY=TEST_SECRET,
        POSTROOM_BASE_URL="https://postroom.test",
        # One batch in flight per process: a second batch composing on the same event loop
        # would delay the sends of a batch already granted (the processes give the
        # parallelism here).
        POSTROOM_WORKER_CONCURRENCY="1",
        POSTROOM_WORKER_CLAIM_BATCH="25",
        POSTROOM_WORKER_POLL_SECONDS="0.05",
        POSTROOM_RELAY_REFRESH_SECONDS="1",
        POSTROOM_LOG_LEVEL="warning",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "postroom", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_two_worker_processes_share_a_relays_per_second_limit(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    db_url: str,
    tmp_path: Path,
) -> None:
    clock.set(datetime.now(UTC))  # the workers run on the system clock
    created = await client.post(
        "/v1/relays",
        headers=workspace.headers,
        json={"url": smtp_server.url + "?timeout=10", "per_second": LIMIT, "max_connections": 4},
    )
    assert created.status_code == 201, created.text
    relay_id = created.json()["id"]
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(COUNT)])

    received: list[float] = []
    lock = threading.Lock()

    def note(address: str) -> None:  # RCPT time: the message is at the server
        with lock:
            received.append(time.monotonic())

    smtp_server.behaviour.rcpt_reply_fn = note
    workers = [_worker(db_url, tmp_path, name) for name in ("w1", "w2")]
    try:
        deadline = time.monotonic() + 60
        while smtp_server.count() < COUNT and time.monotonic() < deadline:
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            time.sleep(0.2)
        time.sleep(0.5)  # nothing more may arrive
        assert all(w.poll() is None for w in workers)  # both ran throughout
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=30)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    rcpts = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert rcpts == sorted(addresses(COUNT)), "every recipient exactly once"
    rows = await deliveries(ctx, send.id)
    assert {row.status for row in rows.values()} == {"sent"}
    assert {row.relay for row in rows.values()} == {f"relay:{relay_id}"}
    assert {row.attempts for row in rows.values()} == {1}  # waiting was never an attempt

    times = sorted(received)

    def busiest(seconds: float) -> int:
        return max(bisect.bisect_left(times, t + seconds) - i for i, t in enumerate(times))

    elapsed = times[-1] - times[0]
    print(f"\nbusiest windows: 1 s {busiest(1.0)}, 3 s {busiest(3.0)}; {COUNT} in {elapsed:.2f} s")
    assert busiest(3.0) <= 3 * LIMIT + 2 * BURST
    assert busiest(1.0) < 2 * LIMIT
    # At most LIMIT per second: the first LIMIT within a second, then LIMIT per 1.1 s at
    # best (the 0.1 s margin is left for arrival jitter).
    assert elapsed >= (COUNT - LIMIT) / LIMIT
    # ... and the limit is used, not starved: at least a third of it on average even on
    # this shared machine (about 15/s when it is quiet).
    assert elapsed <= COUNT / (LIMIT / 3)
