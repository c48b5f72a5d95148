"""A delivery engine in its own process, for kill -9 and multi-worker tests.

Usage: python -m tests.support.engine_process --db URL --secret KEY --smtp URL --now ISO
       --owner NAME [--batch 50] [--concurrency 2] [--ready FILE --go FILE]

Runs the real engine (the production claim, composer, builder and SMTP pool) against the
test database and the test SMTP server, on a clock frozen at ``--now`` (the test's
clock), until no delivery is due. With ``--ready``/``--go`` it writes the ready file once
started and waits for the go file, so several processes start claiming together. Prints
its totals as one JSON line when it finishes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime
from pathlib import Path

from postroom.clock import FrozenClock
from postroom.config import Settings
from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.relay_url import parse_relay_url
from postroom.delivery.smtp_pool import SmtpRelayPool
from postroom.delivery.transports import SingleTransport


async def main(options: argparse.Namespace) -> None:
    settings = Settings(
        _env_file=None,
        database_url=options.db,
        secret_key=options.secret,
        data_dir=Path(options.data_dir),
        base_url="https://postroom.test",
    )
    ctx = AppContext.build(settings, clock=FrozenClock(datetime.fromisoformat(options.now)))
    pool = SmtpRelayPool(
        parse_relay_url(options.smtp + "?timeout=10"),
        max_connections=4,
        max_messages_per_connection=1000,
    )
    engine = DeliveryEngine(
        ctx,
        SingleTransport(pool),
        owner=options.owner,
        batch_size=options.batch,
        concurrency=options.concurrency,
    )
    if options.ready:
        Path(options.ready).write_text("ready")
        while not Path(options.go).exists():
            await asyncio.sleep(0.01)
    try:
        totals = await engine.run_until_idle()
    finally:
        await engine.close()
        await ctx.db.dispose()
    print(json.dumps({"owner": options.owner, **totals}), flush=True)


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--smtp", required=True)
    parser.add_argument("--now", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--data-dir", default="/tmp")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--ready")
    parser.add_argument("--go")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_options()))
