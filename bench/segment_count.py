"""Segment count: SELECT count(*) of a compiled segment over 1,000,000 contacts.

Builds the contacts (5 attributes each) and their list memberships set-based (INSERT …
SELECT from generate_series on PostgreSQL, from a recursive CTE on SQLite), then times the
count of a segment with two attribute conditions and a list condition, compiled by
``postroom.contacts.segments``, against a hand-written SQL count of the same condition.
Targets for 1M contacts: < 1 s on PostgreSQL, < 2 s on SQLite.

    python bench/segment_count.py [--quick] [--explain]

``--quick`` uses 100,000 contacts. PostgreSQL comes from POSTROOM_BENCH_PG_URL (default
postgresql://postgres@127.0.0.1:5432/postgres); a throwaway database is created and dropped.
The last line is the PostgreSQL figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from postroom.contacts.segments import compile_filter, parse_filter
from postroom.models.base import Base
from postroom.models.contacts import Contact, ContactList, Subscription
from postroom.models.workspaces import Workspace

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLES = [
    Base.metadata.tables[name]
    for name in ("workspaces", "contacts", "lists", "subscriptions", "suppressions", "segments")
]
RUNS = 5

# Contact n: plan cycles through four values, score is a scrambled 0-99; list A holds two
# contacts in three (one in eleven of them unsubscribed), list B one in five.
PG_CONTACTS = """
INSERT INTO contacts (id, workspace_id, email, email_key, email_hash, attributes, status,
                      created_at, updated_at)
SELECT lpad(to_hex(n), 32, '0')::uuid, :ws, 'user' || n || '@example.com',
       'user' || n || '@example.com', encode(sha256(('user' || n || '@example.com')::bytea), 'hex'),
       jsonb_build_object(
           'plan', (ARRAY['free', 'pro', 'team', 'enterprise'])[n % 4 + 1],
           'score', (n::bigint * 7919) % 100,
           'country', (ARRAY['FR', 'DE', 'US', 'ES', 'IT'])[(n / 4) % 5 + 1],
           'signup', '2025-' || lpad((n % 12 + 1)::text, 2, '0') || '-'
                     || lpad((n % 28 + 1)::text, 2, '0'),
           'vip', n % 10 = 0),
       CASE WHEN n % 20 = 0 THEN 'unsubscribed' ELSE 'subscribed' END, :at, :at
FROM generate_series(1, :count) AS n
"""
PG_SUBSCRIPTIONS = """
INSERT INTO subscriptions (list_id, contact_id, workspace_id, status, created_at, updated_at)
SELECT :list_a, lpad(to_hex(n), 32, '0')::uuid, :ws,
       CASE WHEN n % 11 = 0 THEN 'unsubscribed' ELSE 'subscribed' END, :at, :at
FROM generate_series(1, :count) AS n WHERE n % 3 <> 0
UNION ALL
SELECT :list_b, lpad(to_hex(n), 32, '0')::uuid, :ws, 'subscribed', :at, :at
FROM generate_series(1, :count) AS n WHERE n % 5 = 0
"""
SQLITE_SEQUENCE = (
    "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :count) "
)
SQLITE_CONTACTS = (
    SQLITE_SEQUENCE
    + """
INSERT INTO contacts (id, workspace_id, email, email_key, email_hash, attributes, status,
                      created_at, updated_at)
SELECT printf('%032x', n), :ws, 'user' || n || '@example.com', 'user' || n || '@example.com',
       printf('%064x', n),
       json_object(
           'plan', CASE n % 4 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' WHEN 2 THEN 'team'
                   ELSE 'enterprise' END,
           'score', (n * 7919) % 100,
           'country', CASE (n / 4) % 5 WHEN 0 THEN 'FR' WHEN 1 THEN 'DE' WHEN 2 THEN 'US'
                      WHEN 3 THEN 'ES' ELSE 'IT' END,
           'signup', printf('2025-%02d-%02d', n % 12 + 1, n % 28 + 1),
           'vip', json(CASE WHEN n % 10 = 0 THEN 'true' ELSE 'false' END)),
       CASE WHEN n % 20 = 0 THEN 'unsubscribed' ELSE 'subscribed' END, :at, :at
FROM seq
"""
)
SQLITE_SUBSCRIPTIONS = (
    SQLITE_SEQUENCE
    + """
INSERT INTO subscriptions (list_id, contact_id, workspace_id, status, created_at, updated_at)
SELECT :list_a, printf('%032x', n), :ws,
       CASE WHEN n % 11 = 0 THEN 'unsubscribed' ELSE 'subscribed' END, :at, :at
FROM seq WHERE n % 3 <> 0
UNION ALL
SELECT :list_b, printf('%032x', n), :ws, 'subscribed', :at, :at FROM seq WHERE n % 5 = 0
"""
)
# The same condition as the segment, as someone who knows the data would write it.
HAND_WRITTEN = {
    "postgresql": """
SELECT count(*) FROM contacts c
WHERE c.workspace_id = :ws
  AND c.attributes ->> 'plan' = 'pro'
  AND (c.attributes ->> 'score')::numeric > 50
  AND EXISTS (SELECT 1 FROM subscriptions s
              WHERE s.contact_id = c.id AND s.list_id = :list_a AND s.status = 'subscribed')
""",
    "sqlite": """
SELECT count(*) FROM contacts c
WHERE c.workspace_id = :ws
  AND json_extract(c.attributes, '$.plan') = 'pro'
  AND json_extract(c.attributes, '$.score') > 50
  AND EXISTS (SELECT 1 FROM subscriptions s
              WHERE s.contact_id = c.id AND s.list_id = :list_a AND s.status = 'subscribed')
""",
}


def segment_filter(list_id: uuid.UUID) -> dict[str, Any]:
    return {
        "logic": "AND",
        "groups": [
            {
                "filters": [
                    {"field": "data.plan", "operator": "equals", "value": "pro"},
                    {"field": "data.score", "operator": "greaterThan", "value": 50},
                    {"field": "list", "operator": "equals", "value": str(list_id)},
                ]
            }
        ],
    }


def build(engine: Engine, count: int) -> tuple[uuid.UUID, uuid.UUID, float]:
    """Create the tables and the data; returns (workspace id, list A id, seconds)."""
    dialect = engine.dialect.name
    Base.metadata.create_all(engine, tables=TABLES)
    workspace_id, list_a, list_b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            insert(Workspace).values(id=workspace_id, name="bench", created_at=NOW, updated_at=NOW)
        )
        for list_id, name in ((list_a, "A"), (list_b, "B")):
            conn.execute(
                insert(ContactList).values(
                    id=list_id, workspace_id=workspace_id, name=name, created_at=NOW, updated_at=NOW
                )
            )
        # Raw SQL gets raw values: the ids and times as each database stores them.
        if dialect == "postgresql":
            params: dict[str, Any] = {
                "ws": workspace_id,
                "list_a": list_a,
                "list_b": list_b,
                "at": NOW,
                "count": count,
            }
            conn.execute(text(PG_CONTACTS), params)
            conn.execute(text(PG_SUBSCRIPTIONS), params)
        else:
            params = {
                "ws": workspace_id.hex,
                "list_a": list_a.hex,
                "list_b": list_b.hex,
                "at": NOW.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds"),
                "count": count,
            }
            conn.execute(text(SQLITE_CONTACTS), params)
            conn.execute(text(SQLITE_SUBSCRIPTIONS), params)
    # Fresh statistics (and, on PostgreSQL, a visibility map for index-only scans), as the
    # autovacuum of a running system would have.
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return workspace_id, list_a, time.perf_counter() - started


def timed(run: Callable[[], int]) -> tuple[float, int]:
    """Median milliseconds of RUNS runs after one warm-up, and the count."""
    result = run()
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        again = run()
        times.append((time.perf_counter() - started) * 1000)
        assert again == result
    return statistics.median(times), result


def measure(engine: Engine, count: int, explain: bool) -> tuple[float, float]:
    dialect = engine.dialect.name
    workspace_id, list_a, build_seconds = build(engine, count)
    with engine.connect() as conn:
        subscriptions = conn.execute(select(func.count()).select_from(Subscription)).scalar_one()
    print(
        f"{dialect}: {count:,} contacts, 5 attributes each, {subscriptions:,} subscriptions"
        f" (built in {build_seconds:.1f} s)"
    )
    condition = parse_filter(segment_filter(list_a))

    def compiled() -> int:
        # Compiling is part of the cost: the API compiles a segment on every count.
        where = compile_filter(condition, now=NOW, dialect_name=dialect)
        query = (
            select(func.count())
            .select_from(Contact)
            .where(Contact.workspace_id == workspace_id, where)
        )
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    raw_ids = (workspace_id, list_a) if dialect == "postgresql" else (workspace_id.hex, list_a.hex)

    def hand_written() -> int:
        with engine.connect() as conn:
            statement = text(HAND_WRITTEN[dialect])
            params = {"ws": raw_ids[0], "list_a": raw_ids[1]}
            return int(conn.execute(statement, params).scalar_one())

    compiled_ms, matched = timed(compiled)
    baseline_ms, expected = timed(hand_written)
    assert matched == expected, (matched, expected)
    print(
        f"{dialect}: segment of {matched:,} contacts: compiled {compiled_ms:.0f} ms,"
        f" hand-written {baseline_ms:.0f} ms (x{compiled_ms / baseline_ms:.2f})"
    )
    if explain:
        where = compile_filter(condition, now=NOW, dialect_name=dialect)
        query = (
            select(func.count())
            .select_from(Contact)
            .where(Contact.workspace_id == workspace_id, where)
        )
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if dialect == "postgresql" else "EXPLAIN QUERY PLAN "
        with engine.connect() as conn:
            for row in conn.execute(Explain(query, prefix)):
                print("   ", " | ".join(str(part) for part in row))
    return compiled_ms, baseline_ms


class Explain(Executable, ClauseElement):
    """``EXPLAIN`` in front of a statement, its parameters bound as usual."""

    inherit_cache = False

    def __init__(self, statement: ClauseElement, prefix: str) -> None:
        self.statement = statement
        self.prefix = prefix


@compiles(Explain)
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return element.prefix + compiler.process(element.statement, **kw)


def run_sqlite(count: int, explain: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="segment-bench-") as directory:
        engine = create_engine(f"sqlite:///{Path(directory) / 'bench.db'}")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            return measure(engine, count, explain)
        finally:
            engine.dispose()


def run_postgresql(count: int, explain: bool) -> tuple[float, float]:
    admin = os.environ.get("POSTROOM_BENCH_PG_URL", DEFAULT_PG_URL)
    name = f"segbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rpartition("/")[0] + "/" + name
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        return measure(engine, count, explain)
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 contacts instead of 1M")
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    args = parser.parse_args(argv)
    count = 100_000 if args.quick else 1_000_000
    run_sqlite(count, args.explain)
    compiled_ms, baseline_ms = run_postgresql(count, args.explain)
    print(
        f"segment_count: {compiled_ms:.0f} ms (x{compiled_ms / baseline_ms:.2f} vs hand-written SQL)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
