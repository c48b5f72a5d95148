"""Cross-cutting tables: background jobs, the event log, idempotency records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column, workspace_fk

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class Job(Base):
    """Background work, claimed with a lease like the delivery ledger.

    A runner that dies keeps its lease until ``lease_expires_at``; the scheduler then puts
    the job back in the queue, so a killed process loses nothing.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name="status",
        ),
        Index("ix_jobs_claim", "status", "priority", "run_after"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID | None] = workspace_fk(nullable=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=100)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_after: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    progress: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class Event(Base):
    """The one event log: written in the same transaction as the change it tells of.

    Analytics counters and outbound webhooks read from here. ``seq`` is a monotonically
    increasing cursor for consumers (ids are only roughly time-ordered across processes).
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_workspace_id_type_occurred_at", "workspace_id", "type", "occurred_at"),
        Index("ix_events_contact_id_occurred_at", "contact_id", "occurred_at"),
        # Without AUTOINCREMENT SQLite hands out max(seq) + 1, so after a GDPR erase deletes
        # the newest events their seqs come back, and the consumers reading after a seq
        # cursor (analytics, webhooks) would skip the new events. (PostgreSQL: a sequence.)
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), unique=True)
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    type: Mapped[str] = mapped_column(String(100))
    contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    data: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime]


class IdempotencyRecord(Base):
    """One POST with an ``Idempotency-Key``: its request fingerprint and, once done, its
    response. Kept 24 hours."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("owner", "key", "method", "path"),)

    id: Mapped[uuid.UUID] = id_column()
    # "ws:<workspace id>" for workspace keys, "admin:<key id>" for admin keys. Not a
    # foreign key: records expire after a day and are purged by a job.
    owner: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # in_progress | completed
    locked_until: Mapped[datetime]
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any] | None]
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Upload(Base):
    """File contents stored in the database (never on one node's disk), in chunks so a
    large import streams instead of loading whole."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class UploadChunk(Base):
    __tablename__ = "upload_chunks"

    upload_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
