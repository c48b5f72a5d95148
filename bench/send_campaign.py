"""Send a campaign to 100,000 contacts through the API into Postfix's smtp-sink, with 1 and
2 ``postroom worker`` processes, on SQLite and PostgreSQL; compared with Postfix's
smtp-source and with the naive sender (stdlib smtplib + EmailMessage) sending the same
number of messages of the same size to the same sink in the same run.

    python bench/send_campaign.py            # 100,000 contacts
    python bench/send_campaign.py --quick    # 10,000 contacts
    python bench/send_campaign.py --db postgresql --workers 2

Per database: a fresh migrated database; the contacts are imported through
``POST /v1/imports`` into a list (the import job run in this process); then, per worker
count, a campaign to that list (``POST /v1/campaigns`` + ``…/send``; fan-out included in
the time) is sent by ``postroom worker`` subprocesses whose ``POSTROOM_SMTP_URL`` is the
sink. The time runs from the send request until the sink has counted every message, so it
is what a user waits for. When the campaigns API is not there, the same recipients are
queued as ``/v1/messages`` batches first and timed from the workers' start to the last
message (the line says which).

Messages are personalised, with open and click tracking (six links rewritten to signed
URLs, an open pixel), List-Unsubscribe and VERP, as a real campaign. The last line is the
headline: ``send_campaign: N msg/s (xR vs naive sender)`` for 2 workers on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from bench._common import SECRET, bench_context, bench_database, machine
from bench._sink import Sink, naive_sender_rate, smtp_sink, smtp_source_rate
from sqlalchemy import func, select

from postroom.context import AppContext

BASE_URL = "https://bench.example"
FROM_DOMAIN = "news.bench.example"
POSTROOM = str(Path(sys.executable).with_name("postroom"))
HTML = """<!doctype html><html><head><style>
.card{border:1px solid #ddd;padding:16px;border-radius:6px}.btn{background:#222;color:#fff;
padding:10px 16px;text-decoration:none}p{line-height:1.5;font-family:Arial,sans-serif}
</style></head><body>
<h1>Hello {{ contact.first_name | default("friend") }}!</h1>
<p>Here is what changed this week at Bench &amp; Co, picked for {{ contact.city | default("you") }}.</p>
<div class="card"><h2>New arrivals</h2><p>Twelve new things you may like. Lorem ipsum dolor sit
amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna
aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip.</p>
<a class="btn" href="https://shop.example.com/new?utm_source=newsletter">See them</a></div>
<div class="card"><h2>Sale</h2><p>Duis aute irure dolor in reprehenderit in voluptate velit esse
cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in
culpa qui officia deserunt mollit anim id est laborum.</p>
<a class="btn" href="https://shop.example.com/sale">Shop the sale</a></div>
<div class="card"><h2>From the blog</h2><p>Sed ut perspiciatis unde omnis iste natus error sit
voluptatem accusantium doloremque laudantium, totam rem aperiam, eaque ipsa quae ab illo.</p>
<a href="https://blog.example.com/posts/1">Read more</a> ·
<a href="https://blog.example.com/posts/2">And more</a></div>
<p><a href="https://example.com/help">Help</a> · <a href="https://example.com/about">About</a></p>
</body></html>"""
SUBJECT = "{{ contact.first_name | default('Hi') }}, this week at Bench & Co"


@dataclass
class Run:
    db: str
    workers: int
    messages: int
    seconds: float
    path: str  # "campaign" | "messages"
    first: float = 0.0  # seconds until the sink saw the first message (fan-out, claim)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


# -- setup through the API ---------------------------------------------------------------


async def workspace_key(ctx: AppContext) -> str:
    from postroom.workspaces.service import WorkspaceService

    async with ctx.db.transaction() as session:
        _workspace, key = await WorkspaceService(session).create("bench", ctx.clock.now())
    return key.plaintext


def contacts_csv(count: int) -> bytes:
    lines = ["email,first_name,last_name,city"]
    lines += [f"user{i}@example{i % 89}.com,First{i},Last{i},City{i % 300}" for i in range(count)]
    return ("\n".join(lines) + "\n").encode()


async def import_contacts(
    ctx: AppContext, http: httpx.AsyncClient, list_id: str, count: int
) -> float:
    from postroom.jobs.runner import JobRunner

    started = time.perf_counter()
    response = await http.post(
        "/v1/imports",
        params={"list_id": list_id},
        headers={"content-type": "text/csv"},
        content=contacts_csv(count),
    )
    response.raise_for_status()
    runner = JobRunner(ctx, ctx.jobs)
    while await runner.run_once():
        pass
    job = (await http.get(f"/v1/imports/{response.json()['id']}")).json()
    if job["status"] != "completed" or job["created"] != count:
        raise RuntimeError(f"import: {job['status']}, created {job['created']} of {count}")
    return time.perf_counter() - started


async def has_campaigns(http: httpx.AsyncClient) -> bool:
    spec = (await http.get("/openapi.json")).json()
    return "/v1/campaigns/{campaign_id}/send" in spec.get("paths", {})


async def create_campaign(http: httpx.AsyncClient, list_id: str, name: str) -> str:
    response = await http.post(
        "/v1/campaigns",
        json={
            "name": name,
            "content": {"subject": SUBJECT, "html": HTML},
            "from": {"email": f"news@{FROM_DOMAIN}", "name": "Bench & Co"},
            "audience": {"lists": [list_id]},
            "track_opens": True,
            "track_clicks": True,
        },
    )
    if response.status_code != 201:
        raise RuntimeError(f"create campaign: {response.status_code} {response.text}")
    return str(response.json()["id"])


async def queue_messages(http: httpx.AsyncClient, count: int) -> None:
    """Fallback without the campaigns API: the same recipients as transactional batches."""
    for start in range(0, count, 100):
        batch = [
            {"to": f"user{i}@example{i % 89}.com"} for i in range(start, min(count, start + 100))
        ]
        response = await http.post(
            "/v1/messages",
            json={
                "from": {"email": f"news@{FROM_DOMAIN}", "name": "Bench & Co"},
                "subject": SUBJECT,
                "html": HTML,
                "batch": batch,
                "track_opens": True,
                "track_clicks": True,
            },
        )
        response.raise_for_status()


# -- worker processes --------------------------------------------------------------------


def start_workers(
    count: int, url: str, sink: Sink, data_dir: Path
) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "POSTROOM_DATABASE_URL": url,
        "POSTROOM_SECRET_KEY": SECRET,
        "POSTROOM_SMTP_URL": sink.url,
        "POSTROOM_BASE_URL": BASE_URL,
        "POSTROOM_DATA_DIR": str(data_dir),
        "POSTROOM_LOG_LEVEL": "warning",
    }
    workers = []
    for index in range(count):
        log = open(data_dir / f"worker-{index}.log", "wb")  # noqa: SIM115 - the child owns it
        workers.append(
            subprocess.Popen(
                [POSTROOM, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir
            )
        )
    deadline = time.monotonic() + 60
    for index, worker in enumerate(workers):
        path = data_dir / f"worker-{index}.log"
        while b"worker started" not in path.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {index} did not start:\n{path.read_text()[-2000:]}")
            time.sleep(0.05)
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def wait_for_sink(sink: Sink, target: int, total: int, within: float) -> tuple[float, float]:
    """Wait until the sink has counted ``target``; returns (time of the first of the
    ``total`` new messages, time of the last)."""
    deadline = time.monotonic() + within
    base = target - total
    first = 0.0
    while (received := sink.received()) < target:
        if not first and received > base:
            first = time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"sink has {received} of {target} after {within:.0f} s")
        await asyncio.sleep(0.01)
    return first or time.perf_counter(), time.perf_counter()


def stuck_after(contacts: int) -> float:
    """How long a send may take before the run is declared stuck (20 msg/s at worst)."""
    return max(120.0, contacts / 20)


async def diagnose(http: httpx.AsyncClient, campaign_id: str, work_dir: Path, workers: int) -> None:
    """What a stuck run looked like: the campaign, its progress, and the workers' logs."""
    campaign = (await http.get(f"/v1/campaigns/{campaign_id}")).json()
    keys = ("status", "recipients", "failure_reason", "progress", "fanout_job_id")
    print("stuck campaign:", {k: campaign.get(k) for k in keys}, flush=True)
    if campaign.get("fanout_job_id"):
        job = (await http.get(f"/v1/jobs/{campaign['fanout_job_id']}")).json()
        print("fan-out job:", job, flush=True)
    for index in range(workers):
        log = (work_dir / f"worker-{index}.log").read_text(errors="replace")
        print(f"--- worker {index} log (tail) ---\n{log[-3000:]}", flush=True)


async def delivery_counts(ctx: AppContext) -> dict[str, int]:
    from postroom.models.delivery import Delivery

    async with ctx.db.transaction() as session:
        rows = await session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        )
        return {status: int(n) for status, n in rows.all()}


# -- one database ------------------------------------------------------------------------


async def run_database(
    kind: str, contacts: int, worker_counts: list[int], sink: Sink, work_dir: Path
) -> tuple[list[Run], float]:
    from postroom.app import create_app

    runs: list[Run] = []
    async with bench_database(kind) as url:
        ctx = await bench_context(url, work_dir)
        ctx.settings.base_url = BASE_URL
        key = await workspace_key(ctx)
        app = create_app(ctx.settings, ctx=ctx)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://postroom.bench",
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        ) as http:
            domain = await http.post("/v1/domains", json={"domain": FROM_DOMAIN, "bits": 1024})
            domain.raise_for_status()
            list_id = (await http.post("/v1/lists", json={"name": "Newsletter bench"})).json()["id"]
            import_seconds = await import_contacts(ctx, http, list_id, contacts)
            print(
                f"{kind:10}  import {contacts:,} contacts through the API: {import_seconds:.1f} s "
                f"({contacts / import_seconds:,.0f} rows/s)",
                flush=True,
            )
            campaigns = await has_campaigns(http)
            for count in worker_counts:
                expected = sink.received() + contacts
                if campaigns:
                    campaign_id = await create_campaign(http, list_id, f"bench {count}w")
                    workers = start_workers(count, url, sink, work_dir)
                    try:
                        started = time.perf_counter()
                        response = await http.post(f"/v1/campaigns/{campaign_id}/send")
                        if response.status_code != 202:
                            raise RuntimeError(f"send: {response.status_code} {response.text}")
                        try:
                            first, finished = await wait_for_sink(
                                sink, expected, contacts, within=stuck_after(contacts)
                            )
                        except RuntimeError:
                            await diagnose(http, campaign_id, work_dir, count)
                            raise
                    finally:
                        stop_workers(workers)
                    runs.append(
                        Run(kind, count, contacts, finished - started, "campaign", first - started)
                    )
                else:
                    await queue_messages(http, contacts)
                    workers = start_workers(count, url, sink, work_dir)
                    try:
                        started = time.perf_counter()
                        first, finished = await wait_for_sink(
                            sink, expected, contacts, within=stuck_after(contacts)
                        )
                    finally:
                        stop_workers(workers)
                    runs.append(
                        Run(kind, count, contacts, finished - started, "messages", first - started)
                    )
                run = runs[-1]
                print(
                    f"{kind:10}  {count} worker{'s' if count > 1 else ' '}: {run.rate:8,.0f} msg/s "
                    f"({contacts:,} in {run.seconds:.1f} s via {run.path}; first message after "
                    f"{run.first:.1f} s)",
                    flush=True,
                )
            counts = await delivery_counts(ctx)
            if counts.get("sent", 0) != contacts * len(worker_counts):
                print(f"{kind:10}  warning: delivery statuses {counts}", flush=True)
        await ctx.db.dispose()
    return runs, import_seconds


def message_size() -> int:
    """Bytes of one message as the engine builds it (personalised, tracked, headers)."""
    from postroom.config import Settings
    from postroom.db.engine import Database, create_engine
    from postroom.delivery.compose import Composer, compiled_for
    from postroom.delivery.message import build_message
    from postroom.models.delivery import Send

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, secret_key=SECRET, base_url=BASE_URL, data_dir=Path(tempfile.gettempdir())
    )
    scratch = Path(tempfile.gettempdir()) / "postroom-bench-size.db"
    ctx = AppContext.build(
        settings, db=Database.from_engine(create_engine(f"sqlite+aiosqlite:///{scratch}"))
    )
    send = Send(
        id=uuid.uuid4(),
        workspace_id=uuid.uuid4(),
        kind="campaign",
        purpose="marketing",
        content={"inline": {"subject": SUBJECT, "html": HTML, "text": None}},
        from_email=f"news@{FROM_DOMAIN}",
        from_name="Bench & Co",
        track_opens=True,
        track_clicks=True,
        list_ids=[str(uuid.uuid4())],
    )
    contact: dict[str, Any] = {
        "email": "user12345@example7.com",
        "first_name": "First12345",
        "last_name": "Last12345",
        "attributes": {"city": "City45"},
    }
    composed = Composer(ctx).envelope(
        send,
        compiled_for(send, None),
        delivery_id=uuid.uuid4(),
        email=contact["email"],
        contact=contact,
        contact_id=uuid.uuid4(),
        variables=None,
        now=ctx.clock.now(),
    )
    return len(build_message(composed.message))


def main() -> None:
    # Other domains' OpenAPI warnings are not this benchmark's output.
    warnings.filterwarnings("ignore", category=UserWarning)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10,000 contacts")
    parser.add_argument("--contacts", type=int, default=None)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--workers", default="1,2", help="worker process counts, e.g. 1,2")
    args = parser.parse_args()
    contacts = args.contacts or (10_000 if args.quick else 100_000)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    worker_counts = [int(n) for n in args.workers.split(",")]
    size = message_size()
    print(
        f"send_campaign: {contacts:,} contacts, one {size:,}-byte message each; {machine()}",
        flush=True,
    )
    runs: list[Run] = []
    with smtp_sink() as sink, tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
        source = smtp_source_rate(sink, contacts, size)
        naive = naive_sender_rate(sink, contacts, size)
        print(f"baseline    smtp-source (C, 4 connections): {source:8,.0f} msg/s", flush=True)
        print(f"baseline    naive sender (smtplib, 1 conn): {naive:8,.0f} msg/s", flush=True)
        for kind in kinds:
            work_dir = Path(tmp) / kind
            work_dir.mkdir()
            found, _import_seconds = asyncio.run(
                run_database(kind, contacts, worker_counts, sink, work_dir)
            )
            runs.extend(found)
    print()
    print(f"{'database':10}  {'workers':>7}  {'msg/s':>8}  {'vs naive':>8}  {'vs smtp-source':>14}")
    for run in runs:
        print(
            f"{run.db:10}  {run.workers:>7}  {run.rate:8,.0f}  x{run.rate / naive:7.1f}  "
            f"{run.rate / source:14.2f}"
        )
    headline = next(
        (r for r in runs if r.db == "postgresql" and r.workers == 2),
        max(runs, key=lambda r: (r.db == "postgresql", r.workers)),
    )
    print(
        f"send_campaign: {headline.rate:.0f} msg/s (x{headline.rate / naive:.1f} vs naive sender)"
    )


if __name__ == "__main__":
    main()
