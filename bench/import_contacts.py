"""Import 1,000,000 contacts (5 attributes each, ~1% bad rows) through the production
import path (the one `postroom import` uses) on SQLite and PostgreSQL.

Prints rows/s and peak RSS (the importer's process and its reader process) per database, checks the bad-row count the importer reports,
and compares with a bare batched insert of the same already-valid rows (the ceiling).
Each measurement runs in its own process so peak RSS is its own.

    python bench/import_contacts.py [--quick] [--rows N] [--db sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import bench_context, bench_database, machine, new_workspace, peak_rss_mb

HEADER = "email,first_name,last_name,plan,age:number,city,score:number,signup:date\n"


def generate(path: Path, rows: int, seed: int = 7) -> int:
    """Write the CSV; returns how many rows are bad (about 1%)."""
    rng = random.Random(seed)
    bad = 0
    with path.open("w") as out:
        out.write(HEADER)
        for i in range(rows):
            if rng.random() < 0.01:
                bad += 1
                out.write(f"not-an-email-{i},Bad,Row,free,1,X,1,2024-01-01\n")
                continue
            out.write(
                f"user{i}@example{i % 97}.com,First{i},Last{i},{'pro' if i % 3 else 'free'},"
                f"{18 + i % 70},City{i % 500},{(i % 1000) / 10},2024-{1 + i % 12:02d}-{1 + i % 28:02d}\n"
            )
    return bad


async def run_import(kind: str, csv_path: Path, into_list: bool = False) -> dict[str, float]:
    from postroom.contacts.importer import ContactImporter
    from postroom.ids import uuid7
    from postroom.models.contacts import ContactList

    async with bench_database(kind) as url:
        ctx = await bench_context(url, csv_path.parent)
        workspace_id = await new_workspace(ctx)
        list_id = None
        if into_list:
            now = ctx.clock.now()
            async with ctx.db.transaction() as session:
                target = ContactList(
                    id=uuid7(),
                    workspace_id=workspace_id,
                    name="bench",
                    created_at=now,
                    updated_at=now,
                )
                session.add(target)
            list_id = target.id
        started = time.perf_counter()
        with csv_path.open("rb") as handle:
            summary = await ContactImporter(ctx, workspace_id, list_id=list_id).run(handle)
        elapsed = time.perf_counter() - started
        await ctx.db.dispose()
    return {
        "seconds": elapsed,
        "processed": summary.processed,
        "created": summary.created,
        "failed": summary.failed,
        "rss_mb": peak_rss_mb(),
    }


# The importer parses files of 4 MB and more in a reader process. Its peak RSS is measured
# on its own, started from a bare interpreter: RUSAGE_CHILDREN of the importer's process
# would count the copy of that (large) process the child is between fork and exec.
_READER_PEAK = """
import resource, subprocess, sys
with open(sys.argv[1], "rb") as stdin:
    subprocess.run([sys.executable, "-m", "postroom.contacts.import_batches", sys.argv[2]],
                   stdin=stdin, stdout=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def reader_peak_mb(kind: str, csv_path: Path) -> float:
    options = json.dumps({"dialect": kind})
    out = subprocess.run(
        [sys.executable, "-c", _READER_PEAK, str(csv_path), options],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


async def run_baseline(kind: str, csv_path: Path) -> dict[str, float]:
    """The ceiling: already-valid rows, no validation, no upsert logic, one executemany
    INSERT per 2,000 rows."""
    import csv

    from sqlalchemy import insert

    from postroom.ids import uuid7
    from postroom.models.contacts import Contact, email_hash

    async with bench_database(kind) as url:
        ctx = await bench_context(url, csv_path.parent)
        workspace_id = await new_workspace(ctx)
        now = ctx.clock.now()
        with csv_path.open() as handle:
            reader = csv.reader(handle)
            next(reader)
            good = [r for r in reader if "@" in r[0]]
        started = time.perf_counter()
        for start in range(0, len(good), 2000):
            rows = [
                {
                    "id": uuid7(),
                    "workspace_id": workspace_id,
                    "email": r[0],
                    "email_key": r[0],
                    "email_hash": email_hash(r[0]),
                    "first_name": r[1],
                    "last_name": r[2],
                    "attributes": {
                        "plan": r[3],
                        "age": int(r[4]),
                        "city": r[5],
                        "score": float(r[6]),
                        "signup": r[7],
                    },
                    "status": "subscribed",
                    "created_at": now,
                    "updated_at": now,
                }
                for r in good[start : start + 2000]
            ]
            async with ctx.db.transaction() as session:
                await session.execute(insert(Contact), rows)
        elapsed = time.perf_counter() - started
        await ctx.db.dispose()
    return {"seconds": elapsed, "processed": len(good), "rss_mb": peak_rss_mb()}


def child(mode: str, kind: str, csv_path: str) -> None:
    if mode == "baseline":
        result = asyncio.run(run_baseline(kind, Path(csv_path)))
    else:
        result = asyncio.run(run_import(kind, Path(csv_path), into_list=mode == "import-list"))
    print(json.dumps(result))


def measure(mode: str, kind: str, csv_path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, kind, str(csv_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 rows (under a minute)")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--list", action="store_true", help="import into a list (subscriptions written too)"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    print(f"machine: {machine()}; rows: {rows:,}")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "contacts.csv"
        bad = generate(csv_path, rows)
        print(f"generated {rows:,} rows ({bad:,} bad, {csv_path.stat().st_size / 1e6:.0f} MB)")
        headline = None
        for kind in kinds:
            ours = measure("import-list" if args.list else "import", kind, csv_path)
            ours["reader_rss_mb"] = reader_peak_mb(kind, csv_path)
            base = measure("baseline", kind, csv_path)
            assert ours["failed"] == bad, (
                f"importer reported {ours['failed']} bad rows, expected {bad}"
            )
            assert ours["created"] == rows - bad
            rate = rows / ours["seconds"]
            base_rate = base["processed"] / base["seconds"]
            into = " into a list" if args.list else ""
            print(
                f"{kind:10} import{into}: {rate:10,.0f} rows/s  peak RSS {ours['rss_mb']:6.0f} MB "
                f"(+ reader process {ours['reader_rss_mb']:.0f} MB)  "
                f"bad rows reported {ours['failed']:,} (expected {bad:,})"
            )
            print(
                f"{kind:10} bare batched insert (ceiling): {base_rate:10,.0f} rows/s  peak RSS {base['rss_mb']:6.0f} MB"
            )
            headline = (kind, rate, rate / base_rate)
        assert headline is not None
        kind, rate, ratio = headline
        print(f"headline database: {kind}")
        print(f"import_contacts: {rate:.0f} rows/s (x{ratio:.2f} vs bare batched insert)")


if __name__ == "__main__":
    main()
