"""Planner statistics refreshed before big statements (PostgreSQL; a no-op on SQLite)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from postroom.context import AppContext
from postroom.db.statistics import analyze_if_stale


async def _stale_after_settling(ctx: AppContext, tables: tuple[str, ...]) -> list[str]:
    """Backends report their row counts to the statistics system within about a second:
    ask until the answer comes (or five seconds pass)."""
    found: list[str] = []
    for _ in range(50):
        async with ctx.db.transaction() as session:
            found = await analyze_if_stale(session, tables)
        if found:
            break
        await asyncio.sleep(0.1)
    return found


async def test_a_table_filled_since_its_last_analysis_is_analysed_once(ctx: AppContext) -> None:
    if ctx.db.dialect != "postgresql":
        async with ctx.db.transaction() as session:
            assert await analyze_if_stale(session, ("contacts", "subscriptions")) == []
        return
    async with ctx.db.transaction() as session:
        await session.execute(text("DROP TABLE IF EXISTS stats_probe"))
        await session.execute(text("CREATE TABLE stats_probe (n integer)"))
    try:
        async with ctx.db.transaction() as session:
            # Under the floor (1,000 changed rows): not worth an ANALYZE.
            await session.execute(text("INSERT INTO stats_probe SELECT generate_series(1, 500)"))
        await asyncio.sleep(1.5)
        async with ctx.db.transaction() as session:
            assert await analyze_if_stale(session, ("stats_probe",)) == []
        async with ctx.db.transaction() as session:
            await session.execute(text("INSERT INTO stats_probe SELECT generate_series(1, 5000)"))
        assert await _stale_after_settling(ctx, ("stats_probe", "no_such_table")) == ["stats_probe"]
        async with ctx.db.transaction() as session:
            analysed = (
                await session.execute(
                    text("SELECT reltuples FROM pg_class WHERE relname = 'stats_probe'")
                )
            ).scalar_one()
        assert analysed == 5500
        await asyncio.sleep(1.5)
        async with ctx.db.transaction() as session:
            assert await analyze_if_stale(session, ("stats_probe",)) == []
    finally:
        async with ctx.db.transaction() as session:
            await session.execute(text("DROP TABLE IF EXISTS stats_probe"))
