"""Set-based generation of contacts for the benchmarks (one INSERT … SELECT per chunk:
generate_series on PostgreSQL, a recursive CTE on SQLite)."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from postroom.context import AppContext

CHUNK = 200_000


async def seed_contacts(ctx: AppContext, workspace_id: uuid.UUID, rows: int) -> None:
    now = ctx.clock.now()
    for start in range(0, rows, CHUNK):
        stop = min(rows, start + CHUNK)
        async with ctx.db.transaction() as session:
            if ctx.db.dialect == "postgresql":
                await session.execute(
                    text(
                        """
                        INSERT INTO contacts (id, workspace_id, email, email_key, email_hash,
                            first_name, last_name, attributes, status, created_at, updated_at)
                        SELECT gen_random_uuid(), :ws, 'user' || i || '@example' || (i % 97) || '.com',
                            'user' || i || '@example' || (i % 97) || '.com', md5(i::text) || md5(i::text),
                            'First' || i, 'Last' || i,
                            jsonb_build_object('plan', CASE WHEN i % 3 = 0 THEN 'free' ELSE 'pro' END,
                                'age', 18 + i % 70, 'city', 'City' || (i % 500), 'score', (i % 1000) / 10.0,
                                'vip', i % 10 = 0),
                            'subscribed', :now, :now
                        FROM generate_series(:start, :stop - 1) AS i
                        """
                    ),
                    {"ws": workspace_id, "now": now, "start": start, "stop": stop},
                )
            else:
                await session.execute(
                    text(
                        """
                        WITH RECURSIVE n(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :stop)
                        INSERT INTO contacts (id, workspace_id, email, email_key, email_hash,
                            first_name, last_name, attributes, status, created_at, updated_at)
                        SELECT lower(hex(randomblob(16))), :ws, 'user' || i || '@example' || (i % 97) || '.com',
                            'user' || i || '@example' || (i % 97) || '.com', lower(hex(randomblob(32))),
                            'First' || i, 'Last' || i,
                            json_object('plan', CASE WHEN i % 3 = 0 THEN 'free' ELSE 'pro' END,
                                'age', 18 + i % 70, 'city', 'City' || (i % 500), 'score', (i % 1000) / 10.0,
                                'vip', json(CASE WHEN i % 10 = 0 THEN 'true' ELSE 'false' END)),
                            'subscribed', :now, :now
                        FROM n
                        """
                    ),
                    {
                        "ws": workspace_id.hex,
                        "now": now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f"),
                        "start": start,
                        "stop": stop,
                    },
                )
    # A freshly filled table has no planner statistics until autovacuum gets to it; a
    # running installation has them, so measure that state.
    async with ctx.db.engine.connect() as conn:
        await conn.execute(text("ANALYZE contacts"))
        await conn.commit()
