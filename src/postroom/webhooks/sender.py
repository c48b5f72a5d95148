"""The webhook sender: claims due deliveries, POSTs them signed, records the outcomes.

It runs as a scheduler task (every process that runs a scheduler sends; leases keep them
apart) and opens its own short transactions: one to claim a batch, none while the
requests are in flight, one to record the batch. Requests go out with bounded
concurrency through the guarded client (``ssrf``): a timeout, no redirects (a 3xx is a
failed attempt), every connection's address checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.logging import get_logger
from postroom.webhooks import deliveries as queue
from postroom.webhooks import signing
from postroom.webhooks.deliveries import Attempt, ClaimedDelivery, Target
from postroom.webhooks.outbox import fan_out
from postroom.webhooks.ssrf import build_client

log = get_logger(__name__)

LEASE_MARGIN = timedelta(minutes=1)
# One tick sends until nothing is due or this much wall time has passed, so the other
# scheduler tasks keep their turn.
TICK_BUDGET_SECONDS = 5.0
ERROR_LIMIT = 500
LANES = 2


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payload(row: ClaimedDelivery) -> bytes:
    """``{type, timestamp, data}``; ``data`` is the event's data plus who and what it is
    about. Built from stored columns only, so every retry sends the same bytes."""
    about = {
        "event_id": str(row.event_id) if row.event_id else None,
        "contact_id": str(row.contact_id) if row.contact_id else None,
        "email": row.contact_email,
        "resource_type": row.resource_type,
        "resource_id": str(row.resource_id) if row.resource_id else None,
    }
    body = {
        "type": row.event_type,
        "timestamp": rfc3339(row.occurred_at),
        "data": {**row.data, **{k: v for k, v in about.items() if v is not None}},
    }
    return json.dumps(body, separators=(",", ":"), default=str).encode()


async def attempt(
    client: httpx.AsyncClient, row: ClaimedDelivery, url: str, secrets: list[str], now: datetime
) -> Attempt:
    body = payload(row)
    headers = signing.headers(secrets, str(row.id), int(now.timestamp()), body)
    # httpx's timeout bounds each phase; a receiver dribbling its answer byte by byte
    # could hold a request far longer, so the whole attempt has the same bound too.
    total = client.timeout.read or 10.0
    started = time.perf_counter()
    try:
        async with asyncio.timeout(total):
            response = await client.post(url, content=body, headers=headers)
    except TimeoutError:
        latency = int((time.perf_counter() - started) * 1000)
        return Attempt(row, False, None, latency, f"no complete answer within {total:g} s")
    except httpx.HTTPError as exc:
        latency = int((time.perf_counter() - started) * 1000)
        message = str(exc) or type(exc).__name__
        return Attempt(row, False, None, latency, f"{type(exc).__name__}: {message}"[:ERROR_LIMIT])
    latency = int((time.perf_counter() - started) * 1000)
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(row, True, status, latency, None)
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        error = f"HTTP {status}: redirect to {location!r} not followed"
    else:
        error = f"HTTP {status}"
    return Attempt(row, False, status, latency, error[:ERROR_LIMIT])


class WebhookSender:
    def __init__(self, ctx: AppContext, owner: str | None = None) -> None:
        self.ctx = ctx
        self.owner = owner or f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._ssl: ssl.SSLContext | None = None

    async def tick(self, _session: AsyncSession, ctx: AppContext) -> int:
        """Scheduler task (the scheduler's session is left unused)."""
        return await self.run_due()

    def client(self, max_connections: int | None = None) -> httpx.AsyncClient:
        settings = self.ctx.settings
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return build_client(
            allow_private=settings.webhooks_allow_private,
            timeout=settings.webhooks_timeout_seconds,
            max_connections=max_connections or settings.webhooks_endpoint_concurrency,
            ssl_context=self._ssl,
        )

    async def run_due(self, budget_seconds: float = TICK_BUDGET_SECONDS) -> int:
        """Send what is due, batch after batch; returns the number of attempts made.

        When the queue runs dry the outbox is read again, so events that arrived while
        sending go out in the same tick instead of waiting for the next one."""
        settings = self.ctx.settings
        deadline = time.monotonic() + budget_seconds
        batch = settings.webhooks_claim_batch
        gate = asyncio.Semaphore(settings.webhooks_concurrency)

        async def lane(pools: Pools) -> int:
            made = 0
            while time.monotonic() <= deadline:
                sent = await self.run_batch(pools, batch, gate)
                made += sent
                if sent < batch:
                    async with self.ctx.db.transaction() as session:
                        queued = await fan_out(session, self.ctx)
                    if queued == 0:
                        break
            return made

        pools = Pools(self)
        try:
            # Two lanes: one batch's database work overlaps the other's requests.
            return sum(await asyncio.gather(*(lane(pools) for _ in range(LANES))))
        finally:
            await pools.aclose()

    def lease(self, limit: int) -> timedelta:
        """Long enough for a whole batch to one endpoint that times out on every request,
        so no lease runs out while its delivery is still in flight."""
        settings = self.ctx.settings
        rounds = -(
            -limit // min(settings.webhooks_concurrency, settings.webhooks_endpoint_concurrency)
        )
        return timedelta(seconds=rounds * settings.webhooks_timeout_seconds) + LEASE_MARGIN

    async def run_batch(
        self, pools: Pools, limit: int, gate: asyncio.Semaphore | None = None
    ) -> int:
        db = self.ctx.db
        now = self.ctx.clock.now()
        async with db.transaction() as session:
            claimed = await queue.claim(
                session,
                owner=self.owner,
                now=now,
                lease=self.lease(limit),
                limit=limit,
                dialect=db.dialect,
            )
            if not claimed:
                return 0
            found = await queue.targets(session, list({c.endpoint_id for c in claimed}), now)
        plain = {
            endpoint_id: (target.url, [self.ctx.secret_box.decrypt(s) for s in target.secrets])
            for endpoint_id, target in found.items()
        }
        gate = gate or asyncio.Semaphore(self.ctx.settings.webhooks_concurrency)

        async def one(row: ClaimedDelivery) -> Attempt:
            url, secrets = plain[row.endpoint_id]
            client, own_gate = pools.get(row.endpoint_id)
            # The endpoint's bound first, so a slow endpoint cannot hold the shared slots.
            async with own_gate, gate:
                return await attempt(client, row, url, secrets, self.ctx.clock.now())

        attempts = await asyncio.gather(*(one(row) for row in claimed if row.endpoint_id in plain))
        await self.record(list(attempts))
        return len(claimed)

    async def record(self, attempts: list[Attempt]) -> None:
        now = self.ctx.clock.now()
        async with self.ctx.db.transaction() as session:
            await queue.finish(
                session, self.owner, [queue.outcome_values(a, now) for a in attempts]
            )
            await queue.update_health(session, attempts, now)
        for failed in (a for a in attempts if not a.succeeded):
            log.info(
                "webhook_attempt_failed",
                delivery=str(failed.delivery.id),
                attempt=failed.delivery.attempts,
                error=failed.error,
            )


class Pools:
    """One small HTTP client per endpoint with its own in-flight bound
    (``webhooks_endpoint_concurrency``); ``webhooks_concurrency`` bounds the total.

    httpcore's pool does O(connections²) bookkeeping on every request, so one big shared
    pool costs more CPU per request than the request itself at 32 connections
    (bench/webhooks.py: ~3 ms of CPU per delivery at 32, ~1 ms at 8). Small per-endpoint
    pools keep that cost flat however many endpoints there are."""

    def __init__(self, sender: WebhookSender) -> None:
        self._sender = sender
        self._per_endpoint = sender.ctx.settings.webhooks_endpoint_concurrency
        self._pools: dict[uuid.UUID, tuple[httpx.AsyncClient, asyncio.Semaphore]] = {}

    def get(self, endpoint_id: uuid.UUID) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        found = self._pools.get(endpoint_id)
        if found is None:
            client = self._sender.client(self._per_endpoint)
            found = (client, asyncio.Semaphore(self._per_endpoint))
            self._pools[endpoint_id] = found
        return found

    async def aclose(self) -> None:
        for client, _gate in self._pools.values():
            await client.aclose()
        self._pools.clear()


async def send_now(ctx: AppContext, row: ClaimedDelivery, target: Target) -> Attempt:
    """One attempt outside the queue (``POST /v1/webhooks/{id}/test``)."""
    secrets = [ctx.secret_box.decrypt(s) for s in target.secrets]
    sender = WebhookSender(ctx)
    async with sender.client() as client:
        return await attempt(client, row, target.url, secrets, ctx.clock.now())
