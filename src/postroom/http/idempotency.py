"""``Idempotency-Key`` on POST: the first response is kept 24 hours and replayed.

The record is claimed in its own committed transaction (so a concurrent duplicate sees
it and gets a 409), and completed in the same transaction as the work itself, so a
stored response always describes committed work. A request that fails releases its
claim, so the client may retry. A claim whose process died expires after
``CLAIM_SECONDS`` and may be taken over.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from postroom.db.engine import Database
from postroom.errors import FieldProblem, IdempotencyInFlight, IdempotencyMismatch, ValidationFailed
from postroom.models.platform import IdempotencyRecord

MAX_KEY_LENGTH = 255
CLAIM_SECONDS = 60
REPLAYED_HEADERS = ("content-type", "location")


@dataclass(frozen=True, slots=True)
class Claim:
    owner: str
    key: str
    method: str
    path: str


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode()):
        digest.update(part + b"\x00")
    digest.update(body)
    return digest.hexdigest()


def check_key(key: str) -> None:
    # Printable only: a NUL (which PostgreSQL cannot store) or another control character
    # in a header is never a client's real key.
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            [
                FieldProblem(
                    "Idempotency-Key",
                    f"must be 1 to {MAX_KEY_LENGTH} printable characters",
                    "invalid",
                )
            ]
        )


def _replay(record: IdempotencyRecord) -> Response:
    headers = dict(record.response_headers or {})
    headers["idempotent-replayed"] = "true"
    return Response(
        content=record.response_body or b"",
        status_code=record.response_status or 200,
        headers=headers,
    )


async def claim(
    db: Database, claim: Claim, request_hash: str, now: datetime, ttl: timedelta
) -> Response | None:
    """Claim the key; returns a replayed response when the work was already done."""
    check_key(claim.key)
    where = (
        (IdempotencyRecord.owner == claim.owner)
        & (IdempotencyRecord.key == claim.key)
        & (IdempotencyRecord.method == claim.method)
        & (IdempotencyRecord.path == claim.path)
    )
    async with db.transaction() as session:
        existing = (
            await session.execute(select(IdempotencyRecord).where(where))
        ).scalar_one_or_none()
        if existing is not None and existing.expires_at <= now:
            await session.delete(existing)
            await session.flush()
            existing = None
        if existing is None:
            session.add(
                IdempotencyRecord(
                    owner=claim.owner,
                    key=claim.key,
                    method=claim.method,
                    path=claim.path,
                    request_hash=request_hash,
                    status="in_progress",
                    locked_until=now + timedelta(seconds=CLAIM_SECONDS),
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
            try:
                await session.flush()
            except IntegrityError:
                # Another request claimed it between our read and write.
                raise IdempotencyInFlight(
                    "a request with this Idempotency-Key is still being processed; retry later"
                ) from None
            return None
        if existing.request_hash != request_hash:
            raise IdempotencyMismatch(
                [
                    FieldProblem(
                        "Idempotency-Key", "was already used with a different request", "reused"
                    )
                ],
                "this Idempotency-Key was already used with a different request body",
            )
        if existing.status == "completed":
            return _replay(existing)
        if existing.locked_until > now:
            raise IdempotencyInFlight(
                "a request with this Idempotency-Key is still being processed; retry later"
            )
        existing.locked_until = now + timedelta(seconds=CLAIM_SECONDS)
        return None


async def complete(session: AsyncSession, claim: Claim, response: Response) -> None:
    """Store the response in the caller's (work) transaction."""
    headers = {k: v for k, v in response.headers.items() if k.lower() in REPLAYED_HEADERS}
    await session.execute(
        update(IdempotencyRecord)
        .where(
            (IdempotencyRecord.owner == claim.owner)
            & (IdempotencyRecord.key == claim.key)
            & (IdempotencyRecord.method == claim.method)
            & (IdempotencyRecord.path == claim.path)
        )
        .values(
            status="completed",
            response_status=response.status_code,
            response_headers=json.loads(json.dumps(headers)),
            response_body=bytes(response.body),
        )
    )


async def release(db: Database, claim: Claim) -> None:
    async with db.transaction() as session:
        await session.execute(
            delete(IdempotencyRecord).where(
                (IdempotencyRecord.owner == claim.owner)
                & (IdempotencyRecord.key == claim.key)
                & (IdempotencyRecord.method == claim.method)
                & (IdempotencyRecord.path == claim.path)
                & (IdempotencyRecord.status == "in_progress")
            )
        )


async def purge_expired(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
    )
    return int(getattr(result, "rowcount", 0) or 0)
