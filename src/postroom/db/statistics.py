"""Planner statistics kept fresh where a big statement is about to depend on them.

PostgreSQL plans from the statistics ANALYZE gathered; autovacuum refreshes them only
after its threshold is crossed and its next round comes. A workspace that imports 100,000
contacts and sends a campaign a minute later would have the fan-out planned as if the
tables were empty: a nested loop that rescans every subscription of the list for each
contact (measured: 40 s for a 20,000-contact chunk instead of 0.1 s). ``analyze_if_stale``
runs ANALYZE (a sample of ~30,000 rows, well under a second on a million) on the tables
that changed by more than a fraction since their last analysis. SQLite plans without
gathered statistics by default and needs none of this.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

# Stale: changed rows since the last ANALYZE above this share of the live rows (plus a
# floor, so that small tables are not analysed on every call).
STALE_FRACTION = 0.1
STALE_FLOOR = 1000

_STALE = text(
    """
    SELECT relname FROM pg_stat_user_tables
    WHERE relname IN :tables
      AND n_mod_since_analyze > :floor + :fraction * GREATEST(n_live_tup, 0)
    """
).bindparams(bindparam("tables", expanding=True))


async def analyze_if_stale(session: AsyncSession, tables: Sequence[str]) -> list[str]:
    """ANALYZE those of ``tables`` whose statistics are stale; returns their names."""
    if session.get_bind().dialect.name != "postgresql":
        return []
    stale = (
        await session.execute(
            _STALE, {"tables": list(tables), "floor": STALE_FLOOR, "fraction": STALE_FRACTION}
        )
    ).scalars()
    names = sorted(str(name) for name in stale)
    for name in names:
        if name in tables:  # only names we were given reach the statement
            await session.execute(text(f'ANALYZE "{name}"'))
    return names
