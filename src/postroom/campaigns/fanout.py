"""Fan-out: a campaign's audience into the ledger, one ``INSERT … SELECT`` per chunk.

Chunks are ranges of contact ids: the upper bound of a chunk is found on the
``(workspace_id, id)`` index alone (``OFFSET chunk - 1``), then one statement inserts the
audience's contacts of that range as queued deliveries. The cursor (the last contact id
done) is written in the same transaction as the rows, and the insert ignores rows that
already exist (``UNIQUE(send_id, contact_id)``: ``ON CONFLICT DO NOTHING``), so a job
killed at any point and run again resumes without a duplicate or a gap.

Recipients are frozen at send time: contacts created after the campaign started are not
included, and the audience's relative dates are evaluated at the start. Unsubscribes and
suppressions that happen after the start but before a contact's chunk is inserted are
honoured (and the engine checks suppressions again at send time anyway).

No ``email.queued`` event is written per campaign recipient (a million events would
double the fan-out's cost); the campaign's ``campaign.sending`` event stands for them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, Uuid, bindparam, cast, func, literal, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.schema import Table

from postroom.campaigns.repository import CampaignRepository
from postroom.contacts.audience import Audience, audience_where
from postroom.contacts.lists_repository import dialect_insert
from postroom.contacts.segments.schema import FilterCondition, parse_filter
from postroom.ids import uuid7
from postroom.jobs.registry import JobContext, JobKind
from postroom.models.base import UTCDateTime
from postroom.models.campaigns import Campaign
from postroom.models.contacts import Contact, Segment
from postroom.models.delivery import Delivery, Send

FANOUT_JOB = "campaigns.fanout"
FANNING = ("sending", "waiting", "paused")


@dataclass(slots=True)
class ChunkResult:
    done: bool
    inserted: int = 0
    note: str | None = None


def _delivery_ids(dialect: str) -> ColumnElement[Any]:
    """Ids computed by the database, in insert order: one fresh UUIDv7 per chunk whose low
    32 bits are replaced by the row's number in the statement.

    Measured (bench/RESULTS.md): random ids (``gen_random_uuid()``/``randomblob``) land all
    over the primary-key btree, so every chunk dirties pages everywhere and PostgreSQL
    writes a full-page image for each one after a checkpoint; ordered ids append to its
    right edge (20-45 % less WAL, 17 % less CPU). ``uuid7()`` is strictly increasing within
    the process in its upper 64 bits, so chunks never overlap and later chunks sort after
    earlier ones; the 30 random bits above the counter separate processes that start a
    chunk in the same millisecond with the same sequence."""
    prefix = uuid7().hex[:24]
    number = func.row_number().over()
    if dialect == "postgresql":
        counter = func.lpad(func.to_hex(number), 8, "0")
        return cast(literal(prefix, String()).op("||")(counter), Uuid())
    # SQLite stores a Uuid as 32 lower-case hex digits.
    return literal(prefix, String()).op("||")(func.printf("%08x", number))


def _table(table: object) -> Table:
    assert isinstance(table, Table)
    return table


async def _segment_filters(
    session: AsyncSession, workspace_id: uuid.UUID, audience: Audience
) -> dict[uuid.UUID, FilterCondition] | None:
    ids = audience.segment_ids()
    if not ids:
        return {}
    rows = await session.execute(
        select(Segment.id, Segment.filter).where(
            Segment.workspace_id == workspace_id, Segment.id.in_(list(ids))
        )
    )
    found = {row[0]: parse_filter(row[1]) for row in rows.all()}
    return found if len(found) == len(ids) else None


async def fanout_chunk(
    session: AsyncSession, dialect: str, campaign_id: uuid.UUID, chunk: int, now: datetime
) -> ChunkResult:
    """Insert the next chunk of the campaign's audience; ``done`` when nothing is left
    (or the campaign stopped). One transaction: the caller's."""
    query = select(Campaign).where(Campaign.id == campaign_id)
    if dialect == "postgresql":
        # Holds off a concurrent cancel until this chunk commits, so the cancel's UPDATE
        # sees (and cancels) every row this chunk adds.
        query = query.with_for_update()
    campaign = (await session.execute(query)).scalar_one_or_none()
    if campaign is None or campaign.send_id is None:
        return ChunkResult(True, note="the campaign is gone")
    if campaign.fanned_out_at is not None:
        return ChunkResult(True, note="already fanned out")
    if campaign.status not in FANNING:
        return ChunkResult(True, note=f"the campaign is {campaign.status}")
    send = await session.get(Send, campaign.send_id)
    if send is None:
        return ChunkResult(True, note="the send is gone")
    workspace_id = campaign.workspace_id
    started = campaign.started_at or now
    audience = Audience.model_validate(campaign.audience)
    filters = await _segment_filters(session, workspace_id, audience)
    if filters is None:
        from postroom.campaigns.service import CampaignService

        await CampaignService(session, workspace_id, now).fail(
            campaign.id, "a segment of the audience was deleted"
        )
        return ChunkResult(True, note="a segment of the audience was deleted")
    cursor = campaign.fanout_cursor
    bound = select(Contact.id).where(Contact.workspace_id == workspace_id)
    if cursor is not None:
        bound = bound.where(Contact.id > cursor)
    upper = (
        await session.execute(bound.order_by(Contact.id).offset(chunk - 1).limit(1))
    ).scalar_one_or_none()

    where = audience_where(
        audience,
        workspace_id=workspace_id,
        now=started,
        dialect_name=dialect,
        segment_filters=filters,
        purpose="marketing",
    )
    conditions = [where, Contact.created_at <= started]
    if cursor is not None:
        conditions.append(Contact.id > cursor)
    if upper is not None:
        conditions.append(Contact.id <= upper)
    moment = bindparam("fanout_now", now, type_=UTCDateTime())
    rows = select(
        _delivery_ids(dialect),
        cast(literal(workspace_id, Uuid()), Uuid()),
        cast(literal(send.id, Uuid()), Uuid()),
        Contact.id,
        Contact.email,
        literal("queued"),
        literal(send.priority),
        literal(0),
        moment,
        moment,
        moment,
    ).where(*conditions)
    statement = (
        # A Core insert into the table: no ORM bulk machinery for a set-based statement.
        dialect_insert(session)(_table(Delivery.__table__))
        .from_select(
            [
                "id",
                "workspace_id",
                "send_id",
                "contact_id",
                "email",
                "status",
                "priority",
                "attempts",
                "next_attempt_at",
                "created_at",
                "updated_at",
            ],
            rows,
        )
        .on_conflict_do_nothing()
    )
    # rowcount of an INSERT … SELECT is only kept when asked for (psycopg reports -1).
    result = await session.execute(statement.execution_options(preserve_rowcount=True))
    inserted = max(int(getattr(result, "rowcount", 0) or 0), 0)
    repo = CampaignRepository(session, workspace_id)
    if upper is None:
        recipients = await repo.delivery_count(send.id)
        await repo.move(
            campaign.id,
            FANNING,
            {"fanned_out_at": now, "recipients": recipients, "updated_at": now},
        )
        return ChunkResult(True, inserted)
    await repo.move(campaign.id, FANNING, {"fanout_cursor": upper})
    return ChunkResult(False, inserted)


async def fan_out(
    ctx: Any,
    campaign_id: uuid.UUID,
    *,
    chunk: int | None = None,
    max_chunks: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run chunks (each its own transaction) until done, or ``max_chunks`` (tests and the
    benchmark use that to stop half-way, as a crash would)."""
    size = chunk or ctx.settings.campaign_fanout_chunk
    inserted = chunks = 0
    note = None
    while max_chunks is None or chunks < max_chunks:
        async with ctx.db.transaction() as session:
            if ctx.db.dialect == "postgresql":
                # The chunk's rows and the cursor commit together, so a commit lost in a
                # crash (the last few hundred ms) loses both, and the job redoes that chunk:
                # no need to wait for the WAL flush at each commit.
                await session.execute(text("SET LOCAL synchronous_commit = off"))
            result = await fanout_chunk(session, ctx.db.dialect, campaign_id, size, ctx.clock.now())
        chunks += 1
        inserted += result.inserted
        note = result.note
        if result.done:
            break
        if progress is not None:
            await progress({"chunks": chunks, "inserted": inserted})
    summary: dict[str, Any] = {"chunks": chunks, "inserted": inserted}
    if note:
        summary["note"] = note
    return summary


async def run_fanout(job: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    return await fan_out(job.ctx, uuid.UUID(payload["campaign_id"]), progress=job.report_progress)


JOB_KINDS = [JobKind(FANOUT_JOB, run_fanout, scope="campaigns:read", max_attempts=10)]
