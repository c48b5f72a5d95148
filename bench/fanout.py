"""Fan-out of a 1,000,000-recipient campaign into the delivery ledger, on SQLite and
PostgreSQL, through the production path (``postroom.campaigns.fanout.fan_out``: chunks of
contact-id ranges, one ``INSERT … SELECT … ON CONFLICT DO NOTHING`` from the audience
query each, the cursor committed with each chunk), against a baseline: one bare
``INSERT … SELECT`` of the same rows with no audience rules, chunks or cursor.

Contacts are seeded set-based (bench/seed.py), then the campaign is created and started
through ``CampaignService`` (the code ``POST /v1/campaigns/{id}/send`` runs) and its
fan-out is timed; then the ledger is emptied and the baseline timed. Targets: < 15 s on
PostgreSQL, < 30 s on SQLite. Besides wall time each phase reports CPU time (this process
on SQLite; the bench database's backends on a local PostgreSQL), which a shared, loaded
machine inflates much less: it says what an idle machine would need at the least.

    python bench/fanout.py [--quick] [--rows N] [--db sqlite|postgresql|both]

``--quick`` uses 100,000 contacts. The last line is the PostgreSQL figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import PG_ADMIN_URL, bench_context, bench_database, machine, new_workspace
from bench.seed import seed_contacts

from postroom.campaigns.fanout import fan_out
from postroom.campaigns.schemas import CampaignCreate
from postroom.campaigns.service import CampaignService
from postroom.context import AppContext
from postroom.domains.service import DomainService
from postroom.ids import uuid7
from postroom.models.delivery import Delivery

BASELINE_PG = """
INSERT INTO deliveries (id, workspace_id, send_id, contact_id, email, status, priority,
    attempts, next_attempt_at, created_at, updated_at)
SELECT gen_random_uuid(), :ws, :send, c.id, c.email, 'queued', 100, 0, :now, :now, :now
FROM contacts c WHERE c.workspace_id = :ws
"""
BASELINE_SQLITE = """
INSERT INTO deliveries (id, workspace_id, send_id, contact_id, email, status, priority,
    attempts, next_attempt_at, created_at, updated_at)
SELECT lower(hex(randomblob(16))), :ws, :send, c.id, c.email, 'queued', 100, 0, :now, :now, :now
FROM contacts c WHERE c.workspace_id = :ws
"""


async def _campaign(ctx: AppContext, workspace_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        await DomainService(
            session, workspace_id, now, ctx.secret_box, ctx.settings.effective_bounce_domain
        ).create("brand.example", None, 1024)
    async with ctx.db.transaction() as session:
        service = CampaignService(session, workspace_id, now)
        campaign = await service.create(
            CampaignCreate.model_validate(
                {
                    "name": "bench",
                    "content": {"subject": "Hello", "html": "<p>Hello</p>"},
                    "from": {"email": "news@brand.example"},
                }
            )
        )
        started = await service.send_now(campaign.id)
        assert started.send_id is not None
        return campaign.id, started.send_id


async def _count(ctx: AppContext, send_id: uuid.UUID) -> int:
    async with ctx.db.transaction() as session:
        query = select(func.count()).where(Delivery.send_id == send_id)
        return int((await session.execute(query)).scalar_one())


async def run(kind: str, rows: int) -> tuple[float, float, float, float]:
    async with bench_database(kind) as url:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = await bench_context(url, Path(tmp))
            try:
                workspace_id = await new_workspace(ctx)
                began = time.perf_counter()
                await seed_contacts(ctx, workspace_id, rows)
                print(f"[{kind}] seeded {rows:,} contacts in {time.perf_counter() - began:.1f} s")
                if kind == "postgresql":
                    # A running installation's autovacuum (its insert threshold) has set the
                    # visibility map of an imported list; a freshly seeded table has not, and
                    # then each chunk's bound query (index-only over (workspace_id, id))
                    # visits the heap for every row it skips (~20 % of the fan-out).
                    began = time.perf_counter()
                    async with ctx.db.engine.connect() as conn:
                        await conn.execution_options(isolation_level="AUTOCOMMIT")
                        await conn.execute(text("VACUUM (ANALYZE) contacts"))
                    print(
                        f"[{kind}] VACUUM (ANALYZE) contacts: {time.perf_counter() - began:.1f} s"
                    )
                campaign_id, send_id = await _campaign(ctx, workspace_id)

                cpu = await _cpu(kind, url)
                began = time.perf_counter()
                summary = await fan_out(ctx, campaign_id)
                production = time.perf_counter() - began
                production_cpu = await _cpu(kind, url, cpu)
                assert await _count(ctx, send_id) == rows, "fan-out missed recipients"
                print(
                    f"[{kind}] fan-out: {production:.2f} s, {summary['chunks']} chunks "
                    f"({rows / production:,.0f} rows/s); {_cpu_label(kind)} {production_cpu:.2f} s"
                )

                async with ctx.db.transaction() as session:
                    await session.execute(
                        text(
                            "TRUNCATE deliveries CASCADE"
                            if kind == "postgresql"
                            else "DELETE FROM deliveries"
                        )
                    )
                baseline_send = uuid7()
                async with ctx.db.transaction() as session:
                    await session.execute(
                        text(
                            "INSERT INTO sends (id, workspace_id, kind, state, priority, purpose, "
                            "content, from_email, from_name, track_opens, track_clicks, list_ids, "
                            "tags, metadata, created_at) SELECT :id, workspace_id, kind, state, "
                            "priority, purpose, content, from_email, from_name, track_opens, "
                            "track_clicks, list_ids, tags, metadata, created_at FROM sends "
                            "WHERE id = :send"
                        ),
                        _params(kind, {"id": baseline_send, "send": send_id}),
                    )
                cpu = await _cpu(kind, url)
                began = time.perf_counter()
                async with ctx.db.transaction() as session:
                    await session.execute(
                        text(BASELINE_PG if kind == "postgresql" else BASELINE_SQLITE),
                        _params(
                            kind,
                            {"ws": workspace_id, "send": baseline_send, "now": ctx.clock.now()},
                        ),
                    )
                baseline = time.perf_counter() - began
                baseline_cpu = await _cpu(kind, url, cpu)
                assert await _count(ctx, baseline_send) == rows
                print(
                    f"[{kind}] bare INSERT … SELECT: {baseline:.2f} s ({rows / baseline:,.0f} "
                    f"rows/s); {_cpu_label(kind)} {baseline_cpu:.2f} s"
                )
                return production, baseline, production_cpu, baseline_cpu
            finally:
                await ctx.db.dispose()


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_label(kind: str) -> str:
    return "server backends CPU" if kind == "postgresql" else "process CPU"


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a local process (/proc/PID/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _cpu(kind: str, url: str, since: float | dict[int, float] | None = None) -> Any:
    """CPU time spent, which the load of a shared machine inflates far less than wall time:
    this process's on SQLite; on PostgreSQL (local server) that of the backends connected to
    the bench database. With ``since`` (an earlier snapshot): the seconds spent since."""
    if kind == "sqlite":
        now = time.process_time()
        return now - since if isinstance(since, float) else now
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchall()
        ]
    snapshot = {pid: _proc_cpu(pid) for pid in pids}
    if not isinstance(since, dict):
        return snapshot
    return sum(cpu - since.get(pid, 0.0) for pid, cpu in snapshot.items())


def _params(kind: str, values: dict[str, object]) -> dict[str, object]:
    if kind == "postgresql":
        return values
    converted: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, uuid.UUID):
            converted[key] = value.hex
        elif hasattr(value, "strftime"):
            converted[key] = value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")  # type: ignore[attr-defined]
        else:
            converted[key] = value
    return converted


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 contacts")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {machine()}; load average at start: {load}; recipients: {rows:,}")
    results = {kind: asyncio.run(run(kind, rows)) for kind in kinds}
    for kind, (production, baseline, production_cpu, baseline_cpu) in results.items():
        target = 15 if kind == "postgresql" else 30
        scaled = production * 1_000_000 / rows
        print(
            f"{kind}: fan-out {production:.2f} s, bare {baseline:.2f} s, "
            f"x{production / baseline:.2f}; per 1M: {scaled:.1f} s (target < {target} s); "
            f"{_cpu_label(kind)}: fan-out {production_cpu:.2f} s, bare {baseline_cpu:.2f} s"
        )
    headline = "postgresql" if "postgresql" in results else kinds[-1]
    production, baseline, _cpu_fanout, _cpu_bare = results[headline]
    print(f"fanout: {production:.2f} s (x{production / baseline:.2f} vs bare INSERT … SELECT)")


if __name__ == "__main__":
    main()
