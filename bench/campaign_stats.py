"""Campaign stats: ``GET /v1/campaigns/{id}/stats`` of a 1,000,000-recipient campaign.

Builds the campaign's send, its deliveries and ~1.8 events per recipient set-based
(INSERT … SELECT from generate_series on PostgreSQL, from a recursive CTE on SQLite):
sent, bounced at the relay, bounced later, deferred, human opens (some repeated), Apple
MPP opens, human clicks on four links, scanner clicks two seconds after sending,
unsubscribes and complaints. Then runs the analytics consumer once over all of it
(its throughput is reported) and times the stats route through the ASGI app (median of
several calls) against the baseline: the same totals, hourly series and domain breakdown
computed by scanning the events table. The totals of both are compared, so a fast but
wrong answer fails the run. Target: < 100 ms.

    python bench/campaign_stats.py [--quick] [--db sqlite|postgresql|both]

``--quick`` uses 100,000 recipients. PostgreSQL comes from POSTROOM_BENCH_PG_URL; a
throwaway database is created and dropped. The last line is the PostgreSQL figure when
both databases run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SECRET, bench_database, machine

from postroom.analytics.consumer import consume
from postroom.app import create_app
from postroom.config import Settings
from postroom.context import AppContext
from postroom.delivery.sends import SendSpec, create_send
from postroom.ids import uuid7
from postroom.models.campaigns import Campaign
from postroom.tracking.links import link_id
from postroom.workspaces.service import WorkspaceService

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LINKS = [f"https://shop.example/p/{i}" for i in range(4)]
RUNS = 7
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148"

# (code, type, condition on n, seconds after T0, extra JSON pairs)
SEND_AT = "(n % 21600)"
EVENTS: list[tuple[int, str, str, str, str]] = [
    (1, "email.sent", "n % 50 <> 0", SEND_AT, ""),
    (2, "email.bounced", "n % 50 = 0", SEND_AT, "'code', 550"),
    (3, "email.bounced", "n % 200 = 1", f"{SEND_AT} + 7200", "'source', 'dsn'"),
    (4, "email.deferred", "n % 25 = 0 AND n % 50 <> 0", f"{SEND_AT} - 30", "'code', 451"),
    (
        5,
        "email.opened",
        "n % 3 = 0 AND n % 50 <> 0",
        f"{SEND_AT} + 3600 + n % 1800",
        "'user_agent', :ua",
    ),
    (6, "email.opened", "n % 6 = 0 AND n % 50 <> 0", f"{SEND_AT} + 60", "'machine', 'apple_mpp'"),
    (7, "email.opened", "n % 9 = 0 AND n % 50 <> 0", f"{SEND_AT} + 7200", "'user_agent', :ua"),
    (8, "email.clicked", "n % 10 = 0 AND n % 50 <> 0", f"{SEND_AT} + 3700", "LINK(n % 4)"),
    (9, "email.clicked", "n % 40 = 0 AND n % 50 <> 0", f"{SEND_AT} + 2", "LINK((n / 40) % 4)"),
    (10, "email.unsubscribed", "n % 500 = 7", f"{SEND_AT} + 4000", "'method', 'one-click'"),
    (11, "email.complained", "n % 1000 = 3", f"{SEND_AT} + 5000", "'source', 'arf'"),
]


class Sql:
    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    def source(self) -> tuple[str, str]:
        """(prefix, FROM clause) giving n = 1..:count."""
        if self.pg:
            return "", "FROM generate_series(1, :count) AS g(n)"
        prefix = (
            "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :count) "
        )
        return prefix, "FROM seq"

    def uuid(self, code: int) -> str:
        base = code * (1 << 40)
        if self.pg:
            return f"CAST(lpad(to_hex({base} + n), 32, '0') AS uuid)"
        return f"printf('%032x', {base} + n)"

    def at(self, seconds: str) -> str:
        if self.pg:
            return f"(CAST(:t0 AS timestamptz) + make_interval(secs => ({seconds})))"
        return f"strftime('%Y-%m-%d %H:%M:%S.000000', :t0, printf('%+d seconds', {seconds}))"

    def json(self, pairs: str) -> str:
        fn = "jsonb_build_object" if self.pg else "json_object"
        if pairs.startswith("LINK("):
            index = pairs[5:-1]
            url = "CASE " + " ".join(f"WHEN {index} = {i} THEN '{u}'" for i, u in enumerate(LINKS))
            lid = "CASE " + " ".join(
                f"WHEN {index} = {i} THEN '{link_id(u)}'" for i, u in enumerate(LINKS)
            )
            pairs = f"'url', {url} END, 'link_id', {lid} END"
        if self.pg:  # jsonb_build_object cannot infer a parameter's type
            pairs = pairs.replace(":ua", "CAST(:ua AS text)")
        send = "CAST(:send_text AS text)" if self.pg else ":send_text"
        return f"{fn}('send_id', {send}{', ' + pairs if pairs else ''})"

    def domain(self) -> str:
        if self.pg:
            return "lower(split_part(d.email, '@', 2))"
        return "lower(substr(d.email, instr(d.email, '@') + 1))"

    def hour(self) -> str:
        if self.pg:
            return "date_trunc('hour', e.occurred_at AT TIME ZONE 'UTC')"
        return "strftime('%Y-%m-%d %H', e.occurred_at)"

    def machine(self) -> str:
        flag = "(e.data ->> 'machine')" if self.pg else "json_extract(e.data, '$.machine')"
        fast = (
            "e.occurred_at < d.sent_at + make_interval(secs => 10)"
            if self.pg
            else "julianday(e.occurred_at) < julianday(d.sent_at) + 10 / 86400.0"
        )
        return (
            f"CASE WHEN {flag} IS NOT NULL OR (e.type = 'email.clicked' AND d.sent_at IS NOT NULL "
            f"AND {fast}) THEN 1 ELSE 0 END"
        )


async def build(ctx: AppContext, count: int) -> tuple[str, uuid.UUID, float, int]:
    """Workspace, key, campaign, send, deliveries and events; returns (key, campaign id,
    seconds, events)."""
    now = T0
    async with ctx.db.transaction() as session:
        workspace, key = await WorkspaceService(session).create("bench", now)
        campaign = Campaign(
            id=uuid7(),
            workspace_id=workspace.id,
            name="1M",
            status="sent",
            content={"inline": {"subject": "s", "html": "<p>x</p>", "text": None}},
            from_email="news@brand.example",
            audience={},
            tags=[],
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
        send = await create_send(
            session,
            workspace.id,
            SendSpec(
                kind="campaign",
                content={"inline": {"subject": "s", "html": "<p>x</p>", "text": None}},
                from_email="news@brand.example",
                campaign_id=campaign.id,
            ),
            now,
        )
    sql = Sql(ctx.db.dialect)
    prefix, source = sql.source()
    ids = {
        "ws": workspace.id if sql.pg else workspace.id.hex,
        "send": send.id if sql.pg else send.id.hex,
    }
    t0: Any = T0 if sql.pg else "2026-03-02 09:00:00"
    params: dict[str, Any] = {
        "count": count,
        "t0": t0,
        **ids,
        "send_text": str(send.id),
        "ua": IPHONE,
    }
    started = time.perf_counter()
    async with ctx.db.transaction() as session:
        await session.execute(
            text(
                prefix
                + "INSERT INTO deliveries (id, workspace_id, send_id, contact_id, email, status, "
                "priority, attempts, next_attempt_at, sent_at, created_at, updated_at) "
                f"SELECT {sql.uuid(0)}, :ws, :send, NULL, 'user' || n || '@d' || (n % 10) || '.example', "
                "CASE WHEN n % 50 = 0 OR n % 200 = 1 THEN 'bounced' ELSE 'sent' END, 100, 1, "
                f"{sql.at('0')}, CASE WHEN n % 50 = 0 THEN NULL ELSE {sql.at(SEND_AT)} END, "
                f"{sql.at('0')}, {sql.at('0')} {source}"
            ),
            params,
        )
    for code, kind, condition, seconds, pairs in EVENTS:
        async with ctx.db.transaction() as session:
            await session.execute(
                text(
                    prefix
                    + "INSERT INTO events (id, workspace_id, type, contact_id, resource_type, "
                    "resource_id, data, occurred_at) "
                    f"SELECT {sql.uuid(code)}, :ws, '{kind}', NULL, 'delivery', {sql.uuid(0)}, "
                    f"{sql.json(pairs)}, {sql.at(seconds)} {source} WHERE {condition}"
                ),
                {k: v for k, v in params.items() if k != "send" and (k != "ua" or ":ua" in pairs)},
            )
    async with ctx.db.transaction() as session:
        await session.execute(text("ANALYZE"))
        events = int((await session.execute(text("SELECT count(*) FROM events"))).scalar_one())
    return key.plaintext, campaign.id, time.perf_counter() - started, events


async def baseline(ctx: AppContext, campaign_id: uuid.UUID) -> dict[str, int]:
    """The same numbers from the events table: totals, hourly series, domains."""
    sql = Sql(ctx.db.dialect)
    cid: Any = campaign_id if sql.pg else campaign_id.hex
    scope = (
        "FROM events e JOIN deliveries d ON d.id = e.resource_id JOIN sends s ON s.id = d.send_id "
        "WHERE e.resource_type = 'delivery' AND s.campaign_id = :cid AND s.kind <> 'test'"
    )
    machine = sql.machine()
    async with ctx.db.read_sessions() as session:
        rows = await session.execute(
            text(
                "SELECT e.type, count(*), count(DISTINCT e.resource_id), "
                f"sum({machine}), count(DISTINCT CASE WHEN {machine} = 0 THEN e.resource_id END), "
                "sum(CASE WHEN e.type = 'email.bounced' AND d.sent_at IS NOT NULL THEN 1 ELSE 0 END) "
                f"{scope} GROUP BY e.type"
            ),
            {"cid": cid},
        )
        totals: dict[str, int] = {}
        for kind, n, unique, machines, unique_human, late in rows:
            name = kind.split(".", 1)[1]
            totals[name] = int(n)
            totals[f"unique_{name}"] = int(unique)
            totals[f"machine_{name}"] = int(machines or 0)
            totals[f"unique_human_{name}"] = int(unique_human)
            if name == "bounced":
                totals["late_bounced"] = int(late or 0)
        hourly = await session.execute(
            text(f"SELECT {sql.hour()}, e.type, count(*), sum({machine}) {scope} GROUP BY 1, 2"),
            {"cid": cid},
        )
        totals["hourly_rows"] = len(hourly.all())
        domains = await session.execute(
            text(
                f"SELECT {sql.domain()}, e.type, count(*), count(DISTINCT e.resource_id) "
                f"{scope} GROUP BY 1, 2"
            ),
            {"cid": cid},
        )
        totals["domain_rows"] = len(domains.all())
    return totals


async def run(kind: str, count: int) -> tuple[float, float]:
    async with bench_database(kind) as url:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                database_url=url,
                data_dir=Path(tmp),
                secret_key=SECRET,
                analytics_lag_seconds=0,  # nothing else writes: no in-flight seqs to wait for
            )
            ctx = AppContext.build(settings)
            try:
                return await _run(ctx, kind, count)
            finally:
                await ctx.db.dispose()


async def _run(ctx: AppContext, kind: str, count: int) -> tuple[float, float]:
    key, campaign_id, built, events = await build(ctx, count)
    print(f"[{kind}] built {count:,} deliveries and {events:,} events in {built:.1f} s")

    started = time.perf_counter()
    batches = 0
    while True:
        async with ctx.db.transaction() as session:
            read = await consume(session, ctx, batch_size=50_000, max_batches=1)
        if read == 0:
            break
        batches += 1
    consumed = time.perf_counter() - started
    print(
        f"[{kind}] consumer: {events:,} events in {consumed:.1f} s "
        f"({events / consumed:,.0f} events/s, {batches} batches of ≤ 50,000)"
    )
    async with ctx.db.transaction() as session:
        await session.execute(text("ANALYZE"))

    app = create_app(ctx.settings, ctx=ctx)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    timings: list[float] = []
    body: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(RUNS):
            t = time.perf_counter()
            response = await client.get(f"/v1/campaigns/{campaign_id}/stats", headers=headers)
            timings.append(time.perf_counter() - t)
            assert response.status_code == 200, response.text
            body = response.json()
    stats_ms = statistics.median(timings) * 1000

    t = time.perf_counter()
    scanned = await baseline(ctx, campaign_id)
    baseline_ms = (time.perf_counter() - t) * 1000

    totals = body["totals"]
    checks = {
        "sent": (totals["sent"], scanned["sent"]),
        "bounced": (totals["bounced"], scanned["bounced"]),
        "late_bounced": (totals["late_bounced"], scanned["late_bounced"]),
        "opens": (totals["opens"]["total"], scanned["opened"]),
        "machine opens": (totals["opens"]["machine"], scanned["machine_opened"]),
        "unique opens": (totals["opens"]["unique"], scanned["unique_opened"]),
        "unique human opens": (totals["opens"]["unique_human"], scanned["unique_human_opened"]),
        "clicks": (totals["clicks"]["total"], scanned["clicked"]),
        "machine clicks": (totals["clicks"]["machine"], scanned["machine_clicked"]),
        "unique clicks": (totals["clicks"]["unique"], scanned["unique_clicked"]),
        "unsubscribed": (totals["unsubscribed"], scanned["unsubscribed"]),
        "complained": (totals["complained"], scanned["complained"]),
    }
    wrong = {k: v for k, v in checks.items() if v[0] != v[1]}
    assert not wrong, f"counters disagree with the events table: {wrong}"
    print(
        f"[{kind}] stats: median {stats_ms:.1f} ms of {RUNS} "
        f"(min {min(timings) * 1000:.1f}, max {max(timings) * 1000:.1f}); "
        f"{len(body['hourly'])} hourly buckets, {len(body['domains'])} domains; "
        f"baseline scan of events: {baseline_ms:.0f} ms; all {len(checks)} totals agree"
    )
    return stats_ms, baseline_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 recipients")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--count", type=int, default=None)
    args = parser.parse_args()
    count = args.count or (100_000 if args.quick else 1_000_000)
    print(f"campaign_stats: {count:,} recipients on {machine()}")
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    headlines = []
    for kind in kinds:
        stats_ms, baseline_ms = asyncio.run(run(kind, count))
        headlines.append(
            f"campaign_stats: {stats_ms:.1f} ms (x{baseline_ms / stats_ms:.0f} vs scanning events)"
        )
        print(f"[{kind}] {headlines[-1]}")
    print(headlines[-1])  # the headline: the last database (PostgreSQL when both)


if __name__ == "__main__":
    main()
