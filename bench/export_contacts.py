"""Export 1,000,000 contacts to CSV through the production exporter (the path behind
`postroom export` and the export job) on SQLite and PostgreSQL; print rows/s and memory
growth, against a bare SELECT streamed to CSV with the stdlib csv module.

    python bench/export_contacts.py [--quick] [--rows N] [--db sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import bench_context, bench_database, machine, new_workspace, peak_rss_mb
from bench.seed import seed_contacts

from postroom.contacts.exporter import ContactExporter, ExportSelection


def bare_export(url: str, workspace_hex: str, kind: str) -> tuple[int, float]:
    """The baseline: one SELECT, rows fetched in pages, written by the stdlib csv module."""
    sink = io.StringIO()
    writer = csv.writer(sink)
    started = time.perf_counter()
    rows = 0
    query = (
        "SELECT email, external_id, first_name, last_name, phone, locale, timezone, status, "
        "created_at, updated_at, attributes FROM contacts WHERE workspace_id = {p} ORDER BY id"
    )
    if kind == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        cursor = conn.execute(query.format(p="?"), (workspace_hex,))
    else:
        conn = psycopg.connect(url)  # type: ignore[assignment]
        cursor = conn.cursor(name="bare_export")  # type: ignore[call-arg]
        cursor.execute(query.format(p="%s"), (workspace_hex,))
    while True:
        page = cursor.fetchmany(5000)
        if not page:
            break
        writer.writerows(page)
        rows += len(page)
        sink.seek(0)
        sink.truncate()
    conn.close()
    return rows, time.perf_counter() - started


async def run(kind: str, rows: int) -> tuple[float, float]:
    async with bench_database(kind) as url:
        ctx = await bench_context(url, Path(tempfile.gettempdir()))
        workspace_id = await new_workspace(ctx)
        await seed_contacts(ctx, workspace_id, rows)
        exporter = ContactExporter(ctx, workspace_id, ExportSelection())
        written = 0
        rss_before = peak_rss_mb()

        async def sink(chunk: bytes) -> None:
            nonlocal written
            written += len(chunk)

        started = time.perf_counter()
        exported = await exporter.run("csv", sink)
        elapsed = time.perf_counter() - started
        growth = peak_rss_mb() - rss_before
        await ctx.db.dispose()
        assert exported == rows, (exported, rows)
        key = workspace_id.hex if kind == "sqlite" else str(workspace_id)
        bare_rows, bare_seconds = bare_export(url, key, kind)
        assert bare_rows == rows
    rate, bare_rate = rows / elapsed, rows / bare_seconds
    print(
        f"{kind:10} export: {rate:10,.0f} rows/s  {written / 1e6:6.0f} MB  peak RSS growth {growth:5.0f} MB | "
        f"bare SELECT + stdlib csv: {bare_rate:10,.0f} rows/s"
    )
    return rate, rate / bare_rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    print(f"machine: {machine()}; rows: {rows:,}")
    result = (0.0, 0.0)
    for kind in ["sqlite", "postgresql"] if args.db == "both" else [args.db]:
        result = asyncio.run(run(kind, rows))
    rate, ratio = result
    print(f"export_contacts: {rate:.0f} rows/s (x{ratio:.2f} vs bare SELECT + stdlib csv)")


if __name__ == "__main__":
    main()
