"""From what happened to each message of a batch to the ledger, in one transaction.

:class:`BatchOutcomes` collects, per claimed delivery, its new ledger values and its
``email.*`` event (plus suppressions and contact statuses for hard bounces), then writes
them all at once: on PostgreSQL one ``UPDATE … FROM unnest(arrays)`` for every row of the
batch (it returns the rows still held), on SQLite (in-process, no round trips) a check of
the rows still held and one ``executemany``; then one multi-row insert for the events.

Rules, besides the transport's classification:

- ``deferred`` and ``uncertain`` retry at ``now + base * 2**(attempts - 1)`` (capped) until
  the delivery's lifetime, counted from when it was queued, runs out: then ``failed``.
- ``relay_error`` is not the recipient's fault: ``deferred`` until the relay's pause ends,
  and the attempt is not counted.
- ``bounced`` suppresses the address (reason ``bounce``) and marks the contact bounced.
- Only rows this worker still holds are written: if the lease ran out and another worker
  took the row, that worker's outcome is the one that counts.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.config import Settings
from postroom.contacts.lists_repository import dialect_insert
from postroom.delivery import ledger
from postroom.delivery.ledger import Claimed
from postroom.delivery.outcomes import OutcomeKind
from postroom.delivery.transport import SendResult
from postroom.events.service import record_many
from postroom.ids import uuid7
from postroom.models.contacts import Contact, Suppression, email_hash
from postroom.models.delivery import Delivery

_RESPONSE_LIMIT = 1000
_MAX_DOUBLINGS = 30  # 2**30 times any base is past every sensible cap


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: timedelta
    cap: timedelta
    lifetime: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base=timedelta(seconds=settings.delivery_retry_base_seconds),
            cap=timedelta(seconds=settings.delivery_retry_max_seconds),
            lifetime=timedelta(hours=settings.delivery_lifetime_hours),
        )

    def backoff(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th attempt: base, 2×base, 4×base… capped."""
        doublings: int = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
        return min(self.cap, self.base * (1 << doublings))

    def expired(self, created_at: datetime, now: datetime) -> bool:
        return now >= created_at + self.lifetime


@dataclass(slots=True)
class _Pending:
    row: Claimed
    values: dict[str, Any]
    event: dict[str, Any] | None


class BatchOutcomes:
    def __init__(self, *, now: datetime, policy: RetryPolicy) -> None:
        self.now = now
        self.policy = policy
        self._pending: dict[uuid.UUID, _Pending] = {}
        self._released: list[uuid.UUID] = []
        self._bounces: dict[uuid.UUID, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()

    # -- collecting ------------------------------------------------------------------

    def release(self, row: Claimed) -> None:
        """Hand the row back untouched (its send is paused, or the worker is stopping)."""
        self._released.append(row.id)

    def cancelled(self, row: Claimed) -> None:
        self._finish(row, "cancelled", response="the send was cancelled", attempts=row.attempts - 1)

    def skipped(self, row: Claimed, reasons: list[str]) -> None:
        self._finish(
            row,
            "skipped",
            response="suppressed: " + ", ".join(reasons),
            attempts=row.attempts - 1,
            data={"reasons": reasons},
        )

    def failed(
        self, row: Claimed, reason: str, *, message_id: str | None = None, relay: str | None = None
    ) -> None:
        self._finish(row, "failed", response=reason, message_id=message_id, relay=relay)

    def outcome(
        self,
        row: Claimed,
        result: SendResult,
        *,
        message_id: str | None,
        relay: str,
        paused_until: datetime | None,
    ) -> None:
        """Record one transport result (see the module docstring for the rules)."""
        outcome = result.outcome
        response = result.response or outcome.detail
        common: dict[str, Any] = {"message_id": message_id, "relay": relay}
        data: dict[str, Any] = {"code": outcome.code, "enhanced": outcome.enhanced}
        kind = outcome.kind
        if kind is OutcomeKind.SENT:
            self._finish(row, "sent", response=response, sent_at=self.now, data=data, **common)
        elif kind is OutcomeKind.BOUNCED:
            self._finish(row, "bounced", response=response, data=data, **common)
            self._bounces[row.id] = {"row": row, "note": response}
        elif kind is OutcomeKind.FAILED:
            self._finish(row, "failed", response=response, data=data, **common)
        elif kind is OutcomeKind.RELAY_ERROR:
            retry_at = paused_until or self.now + self.policy.base
            data["relay_error"] = True
            self._finish(
                row,
                "deferred",
                response=response,
                next_attempt_at=retry_at,
                attempts=row.attempts - 1,
                data=data,
                **common,
            )
        else:  # deferred or uncertain: retried with backoff until the lifetime ends
            status = "uncertain" if kind is OutcomeKind.UNCERTAIN else "deferred"
            if self.policy.expired(row.created_at, self.now):
                reason = f"gave up after {row.attempts} attempts (lifetime over): {response}"
                data["lifetime_exceeded"] = True
                self._finish(row, "failed", response=reason, data=data, **common)
                return
            retry_at = self.now + self.policy.backoff(row.attempts)
            self._finish(
                row, status, response=response, next_attempt_at=retry_at, data=data, **common
            )

    def _finish(
        self,
        row: Claimed,
        status: str,
        *,
        response: str,
        message_id: str | None = None,
        relay: str | None = None,
        sent_at: datetime | None = None,
        next_attempt_at: datetime | None = None,
        attempts: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        response = response[:_RESPONSE_LIMIT]
        values = {
            "_id": row.id,
            "status": status,
            "attempts": row.attempts if attempts is None else max(attempts, 0),
            # Terminal rows keep a due time too (the column is NOT NULL); the claim
            # only looks at claimable statuses.
            "next_attempt_at": next_attempt_at or self.now,
            "smtp_response": response,
            "message_id": message_id,
            "relay": relay,
            "sent_at": sent_at,
            "updated_at": self.now,
        }
        event_data: dict[str, Any] = {
            "send_id": str(row.send_id),
            "email": row.email,
            "attempt": row.attempts,
            "smtp_response": response,
            "message_id": message_id,
            **(data or {}),
        }
        if next_attempt_at is not None and status in ("deferred", "uncertain"):
            event_data["next_attempt_at"] = next_attempt_at.isoformat()
        event = {
            "id": uuid7(),
            "workspace_id": row.workspace_id,
            "type": f"email.{status}",
            "contact_id": row.contact_id,
            "resource_type": "delivery",
            "resource_id": row.id,
            "data": event_data,
            "occurred_at": self.now,
        }
        self._pending[row.id] = _Pending(row, values, event)

    # -- writing ---------------------------------------------------------------------

    async def write(self, session: AsyncSession, owner: str, dialect: str) -> Counter[str]:
        """Write everything collected, only for rows this worker still holds; returns
        the count per new status (``released`` for rows handed back)."""
        if dialect == "postgresql":
            # One UPDATE for the whole batch, whatever the statuses; it reports the rows
            # it changed, which are exactly the ones still held (checked and written in
            # one statement, so a reclaim cannot slip in between).
            updated = await _finish_postgresql(
                session, owner, [item.values for item in self._pending.values()]
            )
            pending = [item for item in self._pending.values() if item.row.id in updated]
            released_count = await ledger.release(session, owner, self._released, self.now)
        else:
            ids = [*self._pending, *self._released]
            held = await _held(session, owner, ids, dialect)
            pending = [item for item in self._pending.values() if item.row.id in held]
            released = [row_id for row_id in self._released if row_id in held]
            await ledger.finish(session, owner, [item.values for item in pending])
            released_count = await ledger.release(session, owner, released, self.now)
        await record_many(session, [item.event for item in pending if item.event is not None])
        await self._write_bounces(
            session, [self._bounces[i.row.id] for i in pending if i.row.id in self._bounces]
        )
        counts: Counter[str] = Counter(item.values["status"] for item in pending)
        if released_count:
            counts["released"] = released_count
        self.counts = counts
        return counts

    async def _write_bounces(self, session: AsyncSession, bounces: list[dict[str, Any]]) -> None:
        if not bounces:
            return
        suppressions: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
        by_workspace: dict[uuid.UUID, tuple[set[uuid.UUID], set[str]]] = {}
        for bounce in bounces:
            row: Claimed = bounce["row"]
            hashed = email_hash(row.email)
            suppressions.setdefault(
                (row.workspace_id, hashed),
                {
                    "id": uuid7(),
                    "workspace_id": row.workspace_id,
                    "email": row.email,
                    "email_hash": hashed,
                    "reason": "bounce",
                    "note": str(bounce["note"])[:_RESPONSE_LIMIT],
                    "created_at": self.now,
                },
            )
            contact_ids, hashes = by_workspace.setdefault(row.workspace_id, (set(), set()))
            if row.contact_id is not None:
                contact_ids.add(row.contact_id)
            hashes.add(hashed)
        insert = dialect_insert(session)(Suppression).values(list(suppressions.values()))
        await session.execute(insert.on_conflict_do_nothing())
        for workspace_id, (contact_ids, hashes) in by_workspace.items():
            await session.execute(
                update(Contact)
                .where(
                    Contact.workspace_id == workspace_id,
                    or_(Contact.id.in_(contact_ids), Contact.email_hash.in_(hashes)),
                )
                .values(status="bounced", updated_at=self.now)
                .execution_options(synchronize_session=False)
            )


# Arrays in, one row per delivery out of unnest(): the statement stays the same size (and
# its plan cached) whatever the batch size, and the server joins on the primary key.
_FINISH_POSTGRESQL = text(
    """
    UPDATE deliveries AS d
    SET status = v.status, attempts = v.attempts, next_attempt_at = v.next_attempt_at,
        smtp_response = v.smtp_response, message_id = v.message_id, relay = v.relay,
        sent_at = v.sent_at, updated_at = v.updated_at,
        lease_owner = NULL, lease_expires_at = NULL
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:statuses AS varchar[]), CAST(:attempts AS integer[]),
        CAST(:next_attempts AS timestamptz[]), CAST(:responses AS text[]),
        CAST(:message_ids AS varchar[]), CAST(:relays AS varchar[]),
        CAST(:sent_ats AS timestamptz[]), CAST(:updated_ats AS timestamptz[])
    ) AS v(id, status, attempts, next_attempt_at, smtp_response, message_id, relay,
           sent_at, updated_at)
    WHERE d.id = v.id AND d.id = ANY(CAST(:ids AS uuid[]))
      AND d.status = 'sending' AND d.lease_owner = :owner
    RETURNING d.id
    """
)


async def _finish_postgresql(
    session: AsyncSession, owner: str, rows: list[dict[str, Any]]
) -> set[uuid.UUID]:
    if not rows:
        return set()
    await ledger.pin_batch_join_plan(session)
    result = await session.execute(
        _FINISH_POSTGRESQL,
        {
            "owner": owner,
            "ids": [row["_id"] for row in rows],
            "statuses": [row["status"] for row in rows],
            "attempts": [row["attempts"] for row in rows],
            "next_attempts": [row["next_attempt_at"] for row in rows],
            "responses": [row["smtp_response"] for row in rows],
            "message_ids": [row["message_id"] for row in rows],
            "relays": [row["relay"] for row in rows],
            "sent_ats": [row["sent_at"] for row in rows],
            "updated_ats": [row["updated_at"] for row in rows],
        },
    )
    return set(result.scalars())


async def _held(
    session: AsyncSession, owner: str, ids: list[uuid.UUID], dialect: str
) -> set[uuid.UUID]:
    """The rows this worker still leases; on PostgreSQL locked until the commit, so a
    reclaim cannot slip in between this check and the writes."""
    if not ids:
        return set()
    query = select(Delivery.id).where(
        Delivery.id.in_(ids), Delivery.status == "sending", Delivery.lease_owner == owner
    )
    if dialect == "postgresql":
        query = query.with_for_update()
    return set((await session.execute(query)).scalars())
