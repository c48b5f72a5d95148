"""The delivery engine end to end: ledger → ``postroom worker`` processes → SMTP sink.

Per configuration (SQLite and PostgreSQL, 1 and 2 worker processes): a fresh database,
contacts seeded set-based, one campaign send (10 KB HTML, 10 tracked links, open pixel,
DKIM off) whose deliveries are queued through the engine's own API
(``postroom.delivery.sends.create_send`` + ``enqueue``, one multi-row INSERT per chunk),
then ``postroom worker`` subprocesses with ``POSTROOM_SMTP_URL`` at Postfix's
``smtp-sink`` on loopback send them all. In the same run, against the same sink:
``smtp-source`` (Postfix's C sender: this machine's raw limit) and a naive sender
(stdlib ``smtplib`` + ``EmailMessage`` over one connection).

    python bench/send_engine.py           # 100,000 deliveries per configuration
    python bench/send_engine.py --quick   # 10,000 (baselines 2,000): ~2-3 minutes here

Rates are deliveries per second of wall-clock time from the first message the sink
received to the last (worker start-up is printed apart). CPU per message is the workers'
own CPU time (user + system, from /proc), that of the PostgreSQL backends serving them,
and the whole machine's (everything else running included). ``--py-spy FILE`` samples a
worker for 8 s (py-spy installed separately). Every run checks that the sink received exactly the count
and that the ledger marks every delivery sent. The last line is the headline: 2 workers
on PostgreSQL, ``send_engine: N msg/s (xR vs naive sender)``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import psycopg
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PG_ADMIN_URL, SECRET, bench_context, bench_database, machine, new_workspace
from _sink import Sink, naive_sender_rate, smtp_sink, smtp_source_rate
from build_messages import _BenchContext, make_send
from seed import seed_contacts

from postroom.context import AppContext
from postroom.delivery.compose import Composer, compiled_for
from postroom.delivery.message import build_message
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.models.contacts import Contact
from postroom.models.delivery import Delivery

ENQUEUE_CHUNK = 5_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POSTROOM = str(Path(sys.executable).with_name("postroom"))


def template() -> tuple[str, str, str]:
    """(subject, html, text): ~10 KB of table-layout HTML with 10 tracked links."""
    blocks = []
    for number in range(1, 9):
        blocks.append(
            f"""<tr><td style="padding:16px 24px;border-bottom:1px solid #eeeeee;font-family:Helvetica,Arial,sans-serif;font-size:15px;line-height:22px;color:#333333">
<h3 style="margin:0 0 6px;font-size:17px;color:#111111">Spring item {number}, limited edition</h3>
<p style="margin:0 0 10px">Hand-finished, made to last, and now {number * 7 + 12} EUR instead of {number * 9 + 20} EUR. Cut from organic cotton in a small workshop in Porto, washed twice for softness, and shipped in recycled packaging with free returns for 60 days.</p>
<p style="margin:0 0 10px;font-size:13px;color:#777777">Colours: sand, moss, slate and a darker charcoal that sold out twice last winter. Sizes XS to XXL, true to size; if you are between sizes, our customers recommend the smaller one. Rated five stars by {number * 13 + 40} customers who wrote about the fabric, the stitching and how it looks after many washes.</p>
<a href="https://shop.example.com/p/{number}?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=spring" style="color:#0b5fff;font-weight:bold;text-decoration:none">Add to basket</a>
</td></tr>"""
        )
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Spring sale</title></head>
<body style="margin:0;padding:0;background:#f4f4f4">
<table role="presentation" width="600" cellpadding="0" cellspacing="0" style="background:#ffffff;max-width:600px;margin:0 auto">
<tr><td style="padding:12px 24px;font-family:Helvetica,Arial,sans-serif;font-size:12px;color:#888888;text-align:right"><a href="{{{{ view_in_browser_url }}}}" style="color:#888888">View in your browser</a></td></tr>
<tr><td style="padding:24px;font-family:Helvetica,Arial,sans-serif;font-size:16px;line-height:24px;color:#333333">
<h1 style="margin:0 0 12px;font-size:26px;color:#111111">Hello {{{{ contact.first_name | default("there") }}}}, spring is here!</h1>
<p style="margin:0 0 16px">Our biggest sale of the season starts today, and every piece below is a little cheaper than usual until Sunday night. Sizes are limited, so do not wait too long.</p>
<a href="https://shop.example.com/sale?utm_source=newsletter&amp;utm_content=hero" style="display:inline-block;padding:12px 24px;background:#0b5fff;color:#ffffff;text-decoration:none;font-weight:bold">Shop the sale</a>
</td></tr>
{"".join(blocks)}
<tr><td style="padding:24px;font-family:Helvetica,Arial,sans-serif;font-size:13px;line-height:20px;color:#888888;text-align:center">
<a href="https://www.example.com/about">About us</a><br>
Example Shop GmbH, Musterstrasse 1, 10115 Berlin. Prices include VAT. Offers valid while stocks last.<br>
<a href="{{{{ unsubscribe_url }}}}" style="color:#888888">Unsubscribe</a>
</td></tr></table>
</body></html>
"""
    text_part = (
        'Hello {{ contact.first_name | default("there") }}, spring is here!\n\n'
        "Shop the sale: https://shop.example.com/sale\n\n"
        "Unsubscribe: {{ unsubscribe_url }}\n"
    )
    return "{{ contact.first_name }}, our spring sale starts now", html, text_part


@dataclass(slots=True)
class Run:
    database: str
    workers: int
    timing: Timing


def _proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _machine_busy_seconds() -> float:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


async def prepare(url: str, data_dir: Path, count: int) -> None:
    """Contacts, one campaign send, and ``count`` queued deliveries."""
    ctx = await bench_context(url, data_dir)
    try:
        workspace_id = await new_workspace(ctx)
        await seed_contacts(ctx, workspace_id, count)
        subject, html, text_part = template()
        async with ctx.db.transaction() as session:
            send = await create_send(
                session,
                workspace_id,
                SendSpec(
                    kind="campaign",
                    content={"inline": {"subject": subject, "html": html, "text": text_part}},
                    from_email="news@shop.example.com",
                    from_name="Example Shop",
                    reply_to="support@shop.example.com",
                ),
                ctx.clock.now(),
            )
            send_id = send.id
        async with ctx.db.read_sessions() as session:
            rows = (
                await session.execute(
                    select(Contact.id, Contact.email).where(Contact.workspace_id == workspace_id)
                )
            ).all()
        for start in range(0, len(rows), ENQUEUE_CHUNK):
            chunk = rows[start : start + ENQUEUE_CHUNK]
            async with ctx.db.transaction() as session:
                send = await session.get_one(type(send), send_id)
                await enqueue(
                    session,
                    send,
                    [Recipient(email, contact_id) for contact_id, email in chunk],
                    ctx.clock.now(),
                )
        if ctx.db.dialect == "postgresql":
            async with ctx.db.transaction() as session:
                await session.execute(text("ANALYZE"))
    finally:
        await ctx.db.dispose()


async def sent_count(url: str, data_dir: Path) -> int:
    ctx = await bench_context(url, data_dir)
    try:
        async with ctx.db.read_sessions() as session:
            query = select(func.count()).where(Delivery.status == "sent")
            return int((await session.execute(query)).scalar_one())
    finally:
        await ctx.db.dispose()


def run_workers(
    url: str, data_dir: Path, sink: Sink, count: int, workers: int, args: argparse.Namespace
) -> Timing:
    env = {
        **os.environ,
        "POSTROOM_DATABASE_URL": url,
        "POSTROOM_DATA_DIR": str(data_dir),
        "POSTROOM_SECRET_KEY": SECRET,
        "POSTROOM_SMTP_URL": sink.url,
        "POSTROOM_BASE_URL": "https://t.shop.example.com",
        "POSTROOM_WORKER_CONCURRENCY": str(args.concurrency),
        "POSTROOM_WORKER_CLAIM_BATCH": str(args.batch),
        "POSTROOM_SMTP_MAX_CONNECTIONS": str(args.connections),
        "POSTROOM_SMTP_MESSAGES_PER_CONNECTION": "100000",
        "POSTROOM_LOG_LEVEL": "WARNING",
    }
    before = sink.received()
    spawned = time.perf_counter()
    processes = [
        subprocess.Popen([POSTROOM, "worker"], env=env, stdout=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    try:
        while sink.received() == before:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited with {process.returncode}")
            time.sleep(0.005)
        first = time.perf_counter()
        if args.py_spy:
            # Sample the first worker while it sends (py-spy installed separately).
            subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "-p",
                 str(processes[0].pid), "-d", "8", "-f", "raw", "--nonblocking",
                 "-o", args.py_spy],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        cpu_start = sum(_proc_cpu_seconds(p.pid) for p in processes)
        busy_start = _machine_busy_seconds()
        backends = _database_backends(url)
        db_start = sum(_proc_cpu_seconds(pid) for pid in backends)
        if not sink.wait_for(before + count, timeout=max(120.0, count / 100), poll=0.005):
            raise RuntimeError(f"the sink got {sink.received() - before} of {count}")
        last = time.perf_counter()
        cpu = sum(_proc_cpu_seconds(p.pid) for p in processes) - cpu_start
        busy = _machine_busy_seconds() - busy_start
        db_cpu = sum(_proc_cpu_seconds(pid) for pid in backends) - db_start
        rss = max(_peak_rss_mb(p.pid) for p in processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    # The first message is not in the interval: count - 1 messages went out in it.
    sent = count - 1
    return Timing(
        sent / (last - first),
        first - spawned,
        cpu * 1000 / sent,
        db_cpu * 1000 / sent,
        busy * 1000 / sent,
        rss,
    )


@dataclass(slots=True)
class Timing:
    rate: float
    startup: float
    worker_cpu_ms: float
    db_cpu_ms: float  # PostgreSQL backends serving the workers (0 on SQLite: in-process)
    machine_cpu_ms: float
    rss_mb: float


def _database_backends(url: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to the bench database (the workers'
    pools are open by the time the first message arrives)."""
    if not url.startswith("postgresql"):
        return []
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return [int(pid) for (pid,) in rows]


async def measure(
    database: str, workers: int, sink: Sink, count: int, args: argparse.Namespace
) -> Run:
    async with bench_database(database) as url:
        with tempfile.TemporaryDirectory(prefix="postroom-bench-") as tmp:
            data_dir = Path(tmp)
            await prepare(url, data_dir, count)
            before = sink.received()
            timing = await asyncio.to_thread(run_workers, url, data_dir, sink, count, workers, args)
            received = sink.wait_idle(quiet=0.5) - before
            sent = await sent_count(url, data_dir)
    if received != count or sent != count:
        raise RuntimeError(f"{database}/{workers}: sink got {received}, ledger sent {sent}")
    return Run(database, workers, timing)


def sample_size() -> int:
    """Bytes of one message of this send as the worker builds it (Composer + builder)."""
    subject, html, text_part = template()
    composer = Composer(cast(AppContext, _BenchContext()))
    send = make_send(subject, html, text_part)
    composed = composer.envelope(
        send,
        compiled_for(send, None),
        delivery_id=uuid.uuid4(),
        email="user1@example1.com",
        contact={"email": "user1@example1.com", "first_name": "First1", "last_name": "Last1"},
        contact_id=uuid.uuid4(),
        variables=None,
        now=datetime.now(UTC),
    )
    return len(build_message(composed.message))


def baselines(sink: Sink, count: int, size: int) -> tuple[float, float, float, float]:
    """(smtp-source msg/s, its CPU ms/msg, naive msg/s, naive CPU ms/msg)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    source = smtp_source_rate(sink, count, size)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    source_cpu = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / count
    own = resource.getrusage(resource.RUSAGE_SELF)
    naive = naive_sender_rate(sink, count, size)
    done = resource.getrusage(resource.RUSAGE_SELF)
    naive_cpu = (done.ru_utime + done.ru_stime - own.ru_utime - own.ru_stime) / count
    return source, source_cpu * 1000, naive, naive_cpu * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 deliveries per setup")
    parser.add_argument("--count", type=int, help="deliveries per configuration")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2", help="worker processes to try")
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight/worker")
    parser.add_argument("--batch", type=int, default=200, help="claim batch size")
    parser.add_argument("--connections", type=int, default=8, help="SMTP connections/worker")
    parser.add_argument("--py-spy", help="write a py-spy raw profile of a worker here")
    args = parser.parse_args()
    count = args.count or (10_000 if args.quick else 100_000)
    baseline_count = min(count, 2_000 if args.quick else 10_000)

    _subject, html, _ = template()
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"message: {len(html.encode()) / 1024:.1f} KB HTML source, {html.count('https://')} "
        f"tracked links + open pixel, DKIM off; {count:,} deliveries per configuration; "
        f"worker: concurrency {args.concurrency}, claim batch {args.batch}, "
        f"{args.connections} SMTP connections"
    )
    runs: list[Run] = []
    with smtp_sink() as sink:
        size = sample_size()  # baselines send messages as big as ours
        source, source_cpu, naive, naive_cpu = baselines(sink, baseline_count, size)
        print(
            f"smtp-source (C, 4 sessions): {source:,.0f} msg/s, {source_cpu:.2f} CPU ms/msg; "
            f"naive sender (smtplib + EmailMessage, one connection): {naive:,.0f} msg/s, "
            f"{naive_cpu:.2f} CPU ms/msg ({baseline_count:,} x {size:,} B)"
        )
        for database in args.databases.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                run = asyncio.run(measure(database, workers, sink, count, args))
                runs.append(run)
                t = run.timing
                print(
                    f"{database:10s} {workers} worker(s): {t.rate:7,.0f} msg/s "
                    f"(x{t.rate / naive:.1f} vs naive, {t.rate / source:.0%} of smtp-source); "
                    f"CPU ms/msg: workers {t.worker_cpu_ms:.2f}, database {t.db_cpu_ms:.2f}, "
                    f"machine {t.machine_cpu_ms:.2f}; worker peak RSS {t.rss_mb:.0f} MB; "
                    f"start-up {t.startup:.1f} s",
                    flush=True,
                )
    headline = next((r for r in runs if r.database == "postgresql" and r.workers == 2), runs[-1])
    rate = headline.timing.rate
    print(f"send_engine: {rate:.0f} msg/s (x{rate / naive:.1f} vs naive sender)")


if __name__ == "__main__":
    main()
