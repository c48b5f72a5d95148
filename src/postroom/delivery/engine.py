"""The sender: claims due deliveries from the ledger and hands them to a transport.

One batch is: claim (its own short transaction) → load sends, contacts and suppressions
(:mod:`batch_loader`) → skip the suppressed, hand back the rows of paused sends, cancel
those of cancelled sends → compose and build each message (a render error fails that
delivery, never the loop) → send through the workspace's transport → write every outcome
and its event in one transaction (:mod:`outcomes_apply`).

``concurrency`` coroutines each run that loop, so several batches are in flight at once;
the SMTP pool bounds the connections they share. ``stop()`` lets batches in flight
finish; a batch cancelled before it sent anything hands its rows back at once, and one
cancelled mid-send leaves them to the lease, after which they are retried as
``uncertain`` with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from postroom.campaigns.content import subject_adjusted
from postroom.campaigns.send_states import GATED_KINDS, ConnectionSlots, SendStates
from postroom.context import AppContext
from postroom.delivery import ledger
from postroom.delivery.batch_loader import BatchData, BatchLoader, SendBundle
from postroom.delivery.compose import Composer, compiled_for, version_for
from postroom.delivery.ledger import Claimed
from postroom.delivery.message import build_message
from postroom.delivery.outcomes import Outcome, OutcomeKind
from postroom.delivery.outcomes_apply import BatchOutcomes, RetryPolicy
from postroom.delivery.rate_limits import SendGate
from postroom.delivery.transport import Envelope, SendResult, Transport
from postroom.delivery.transports import RelayPauses, TransportFor, relay_label
from postroom.errors import PostroomError
from postroom.logging import get_logger
from postroom.models.templates import TemplateVersion
from postroom.templates.errors import TemplateProblem
from postroom.templates.variables import apply_fallbacks

log = get_logger(__name__)

# A recipient name given to the transactional API (``{"to": {"email", "name"}}``) travels
# in the delivery's variables under this name: templates may use it, the To header does.
TO_NAME_VARIABLE = "to_name"


@dataclass(slots=True)
class BatchReport:
    claimed: int = 0
    counts: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Outgoing:
    row: Claimed
    envelope: Envelope
    message_id: str | None


class DeliveryEngine:
    def __init__(
        self,
        ctx: AppContext,
        transport_for: TransportFor,
        *,
        owner: str,
        batch_size: int,
        concurrency: int = 1,
        lease: timedelta | None = None,
    ) -> None:
        self.ctx = ctx
        self.transport_for = transport_for
        self.owner = owner
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)
        self.lease = lease or timedelta(seconds=ctx.settings.worker_lease_seconds)
        self.policy = RetryPolicy.from_settings(ctx.settings)
        self.pauses = RelayPauses(timedelta(seconds=ctx.settings.relay_pause_seconds))
        self.gate = SendGate(ctx, transport_for, self.pauses)  # relay choice + rate limits
        # campaigns: send states read before each campaign transaction (cached <= 1 s)
        self.send_states = SendStates(ctx)
        self.connection_slots = ConnectionSlots(ctx.settings.smtp_max_connections)
        self.loader = BatchLoader(ctx)
        self.composer = Composer(ctx)
        self.totals: Counter[str] = Counter()
        self._stopping = asyncio.Event()

    # -- one batch -----------------------------------------------------------------------

    async def claim(self) -> list[Claimed]:
        async with self.ctx.db.transaction() as session:
            return await ledger.claim(
                session,
                owner=self.owner,
                now=self.ctx.clock.now(),
                lease=self.lease,
                limit=self.batch_size,
                dialect=self.ctx.db.dialect,
            )

    async def run_once(self) -> BatchReport:
        """Claim one batch and see it through; an empty report when nothing was due."""
        claimed = await self.claim()
        if not claimed:
            return BatchReport()
        return await self.process(claimed)

    async def process(self, claimed: Sequence[Claimed]) -> BatchReport:
        """Send claimed rows and record their outcomes (public so tests can change the
        world between the claim and the send)."""
        sending_started = False
        try:
            batch = await self.loader.load(claimed)
            now = self.ctx.clock.now()
            outcomes = BatchOutcomes(now=now, policy=self.policy)
            outgoing = self._prepare(claimed, batch, outcomes, now)
            sending_started = True
            await self._send(outgoing, batch, outcomes, now)
            async with self.ctx.db.transaction() as session:
                counts = await outcomes.write(session, self.owner, self.ctx.db.dialect)
        except BaseException:
            if not sending_started:
                # Nothing went out: hand the rows back now rather than at lease expiry.
                await asyncio.shield(self._release([row.id for row in claimed]))
            raise
        self.totals.update(counts)
        return BatchReport(len(claimed), counts)

    def _prepare(
        self,
        claimed: Sequence[Claimed],
        batch: BatchData,
        outcomes: BatchOutcomes,
        now: datetime,
    ) -> dict[uuid.UUID, list[_Outgoing]]:
        """Decide each row's fate before any SMTP: skip, hand back, cancel, fail to
        build, or an envelope to send (grouped by workspace, i.e. by transport)."""
        outgoing: dict[uuid.UUID, list[_Outgoing]] = {}
        for row in claimed:
            state = batch.states.get(row.send_id, "cancelled")  # a deleted send: cancelled
            bundle = batch.bundles.get(row.send_id)
            if state == "paused":
                outcomes.release(row)
                continue
            if state != "active" or bundle is None:
                outcomes.cancelled(row)
                continue
            blocking = batch.blocking(row, bundle.send.purpose)
            if blocking:
                outcomes.skipped(row, blocking)
                continue
            message_id = bundle.message_id(row.id)
            try:
                envelope = self._envelope(
                    bundle, row, batch.contacts.get(row.contact_id or _NO_ID), now
                )
            except (TemplateProblem, PostroomError, LookupError, ValueError) as exc:
                outcomes.failed(
                    row, f"the message could not be built: {exc}", message_id=message_id
                )
                continue
            except Exception as exc:  # a bug must cost one delivery, not the loop
                log.exception("compose_failed", delivery_id=str(row.id), error=repr(exc))
                outcomes.failed(
                    row, f"the message could not be built: {exc!r}", message_id=message_id
                )
                continue
            outgoing.setdefault(row.workspace_id, []).append(_Outgoing(row, envelope, message_id))
        return outgoing

    def _envelope(
        self,
        bundle: SendBundle,
        row: Claimed,
        contact: dict[str, Any] | None,
        now: datetime,
    ) -> Envelope:
        send = bundle.send
        locale = contact.get("locale") if contact else None
        variables = row.variables
        # A send's content never changes: pick and compile it once per send and locale.
        cached = bundle.compiled.get(locale)
        if cached is None:
            version: TemplateVersion | None = None
            if bundle.versions:
                version = version_for(send, locale, bundle.versions)
                compiled = compiled_for(send, locale, bundle.versions)
            else:
                compiled = compiled_for(send, locale)
            compiled = subject_adjusted(send, compiled)  # campaigns: subject override, "[Test] "
            cached = bundle.compiled[locale] = (compiled, version)
        compiled, version = cached
        if version is not None and version.variables:
            fields, variables = apply_fallbacks(contact, variables, version.variables)
            contact = fields or None
        composed = self.composer.envelope(
            send,
            compiled,
            delivery_id=row.id,
            email=row.email,
            contact=contact,
            contact_id=row.contact_id,
            variables=variables,
            now=now,
        )
        message = replace(composed.message, message_id=bundle.message_id(row.id))
        given_name = (variables or {}).get(TO_NAME_VARIABLE)
        if not message.to_name and isinstance(given_name, str):
            message = replace(message, to_name=given_name)
        data = build_message(message, bundle.signer)
        return Envelope(composed.mail_from, composed.rcpt_to, data, str(row.id))

    async def _send(
        self,
        outgoing: dict[uuid.UUID, list[_Outgoing]],
        batch: BatchData,
        outcomes: BatchOutcomes,
        now: datetime,
    ) -> None:
        # --- relay choice and rate limits (delivery/rate_limits.py): rows over a relay's or
        # sending domain's allowance go back to the queue until their window reopens. ---
        groups = await self.gate.route(outgoing, batch, self.owner)
        # --- campaigns: which rows must re-check their send's state before SMTP ---
        self.send_states.seed(batch.states)
        gated = {sid for sid, b in batch.bundles.items() if b.send.kind in GATED_KINDS}
        results = await asyncio.gather(
            *(self._send_group(transport, items, now, gated) for transport, items in groups)
        )
        for (transport, items), (group_results, paused_until) in zip(groups, results, strict=True):
            relay = relay_label(transport)
            for item, result in zip(items, group_results, strict=True):
                if isinstance(result, str):  # campaigns: paused or cancelled meanwhile
                    (outcomes.release if result == "paused" else outcomes.cancelled)(item.row)
                    continue
                outcomes.outcome(
                    item.row,
                    result,
                    message_id=item.message_id,
                    relay=relay,
                    paused_until=paused_until,
                )

    async def _send_group(
        self,
        transport: Transport,
        items: list[_Outgoing],
        now: datetime,
        gated: set[uuid.UUID] | None = None,
    ) -> tuple[list[SendResult | str], datetime | None]:
        """Send through one transport, unless it is resting; a relay failure starts
        its rest. Returns the results and the end of the relay's pause (if any)."""
        paused_until = self.pauses.paused_until(transport, now)
        if paused_until is not None:
            return [_not_attempted(item, paused_until) for item in items], paused_until
        results = await self._send_checked(transport, items, gated or set())
        if any(
            isinstance(result, SendResult) and result.outcome.kind is OutcomeKind.RELAY_ERROR
            for result in results
        ):
            paused_until = self.pauses.pause_relay(transport, self.ctx.clock.now())
            log.warning(
                "relay_paused", relay=relay_label(transport), until=paused_until.isoformat()
            )
        return results, paused_until

    # --- campaigns: cancel and pause take effect before each SMTP transaction -------------

    async def _send_checked(
        self, transport: Transport, items: list[_Outgoing], gated: set[uuid.UUID]
    ) -> list[SendResult | str]:
        """Rows of campaign sends go out one by one, each holding one of the transport's
        connection slots and sent only if its send is still active (state cached <= 1 s);
        a held row's result is the state (``paused``/``cancelled``). Other rows go out as
        one batch."""
        checked = [i for i, item in enumerate(items) if item.row.send_id in gated]
        if not checked:
            return list(await transport.send_many([item.envelope for item in items]))
        slots = self.connection_slots.of(transport)

        async def one(item: _Outgoing) -> SendResult | str:
            async with slots:
                state = await self.send_states.state(item.row.send_id)
                if state != "active":
                    return state
                return (await transport.send_many([item.envelope]))[0]

        rest = [i for i, item in enumerate(items) if item.row.send_id not in gated]
        results: list[SendResult | str | None] = [None] * len(items)

        async def bulk() -> None:
            sent = await transport.send_many([items[i].envelope for i in rest])
            for i, result in zip(rest, sent, strict=True):
                results[i] = result

        async def gated_one(i: int) -> None:
            results[i] = await one(items[i])

        await asyncio.gather(*(gated_one(i) for i in checked), *([bulk()] if rest else []))
        return [r for r in results if r is not None]

    # --- end campaigns ----------------------------------------------------------------------

    async def _release(self, ids: list[uuid.UUID]) -> None:
        try:
            async with self.ctx.db.transaction() as session:
                await ledger.release(session, self.owner, ids, self.ctx.clock.now())
        except Exception as exc:  # the lease will hand them back anyway
            log.warning("release_failed", error=repr(exc))

    # -- the pool of senders ---------------------------------------------------------------

    async def run(self) -> None:
        """``concurrency`` claim→send loops until :meth:`stop`."""
        await asyncio.gather(*(self._loop() for _ in range(self.concurrency)))

    async def _loop(self) -> None:
        poll = self.ctx.settings.worker_poll_seconds
        while not self._stopping.is_set():
            try:
                report = await self.run_once()
            except Exception as exc:
                log.exception("delivery_batch_failed", error=repr(exc))
                report = BatchReport()
            if report.claimed < self.batch_size:
                # Drained (or failing): wait before asking again, waking early on stop.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), poll)

    async def run_until_idle(self) -> Counter[str]:
        """Run ``concurrency`` loops until no delivery is due; the totals of this run."""
        before = Counter(self.totals)

        async def drain() -> None:
            while not self._stopping.is_set():
                if (await self.run_once()).claimed == 0:
                    return

        await asyncio.gather(*(drain() for _ in range(self.concurrency)))
        return self.totals - before

    def stop(self) -> None:
        """Claim nothing more; batches in flight finish."""
        self._stopping.set()

    async def close(self) -> None:
        """Close the transports, when ``transport_for`` owns any (it has ``close()``)."""
        closer = getattr(self.transport_for, "close", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


_NO_ID = uuid.UUID(int=0)


def _not_attempted(item: _Outgoing, paused_until: datetime) -> SendResult:
    detail = f"not attempted: the relay is paused until {paused_until.isoformat()}"
    outcome = Outcome(OutcomeKind.RELAY_ERROR, None, None, detail, False)
    return SendResult(item.envelope.delivery_id, outcome, detail, 0.0)


async def reclaim_deliveries(session: AsyncSession, ctx: AppContext) -> int:
    """Scheduler task: deliveries whose worker died go back to the queue as uncertain."""
    return await ledger.reclaim_expired(session, ctx.clock.now())
