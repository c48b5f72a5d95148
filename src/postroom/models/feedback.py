"""Inbound mail kept for inspection and feedback bookkeeping (owned by the feedback work).

- ``inbound_messages``: mail the receiver could not turn into an effect (unclassifiable,
  or its handling failed), kept with its envelope and the raw bytes (capped) so an operator
  can look at it (``/v1/inbound``). ``workspace_id`` is NULL when nothing in the message
  named one of our deliveries; such rows are only visible through the CLI.
  ``sender_hash`` (SHA-256 of the lower-cased envelope or From address) lets GDPR erase
  find a person's rows without keeping a plain address index.
- ``feedback_soft_bounces``: one row per delivery that soft-bounced (unique per delivery,
  so the same DSN twice counts once); N of them for one address within M days suppress it.
- ``inbound_counters``: instance-wide counters of the receiver (messages per class, forged
  VERP addresses, rejected recipients), bumped with an upsert.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column, workspace_fk

INBOUND_KINDS: Final = ("unclassified", "error")


class InboundMessage(Base):
    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index("ix_inbound_messages_workspace_id_id", "workspace_id", "id"),
        Index("ix_inbound_messages_workspace_id_sender_hash", "workspace_id", "sender_hash"),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID | None] = workspace_fk(nullable=True, index=False)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    mail_from: Mapped[str] = mapped_column(String(320))
    rcpt_to: Mapped[list[str]]
    subject: Mapped[str | None] = mapped_column(String(255))
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), index=True)
    sender_hash: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    truncated: Mapped[bool]
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(index=True)


class SoftBounce(Base):
    __tablename__ = "feedback_soft_bounces"
    __table_args__ = (
        UniqueConstraint("workspace_id", "delivery_id"),
        Index(
            "ix_feedback_soft_bounces_workspace_id_email_hash_occurred_at",
            "workspace_id",
            "email_hash",
            "occurred_at",
        ),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    delivery_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    email_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(16))
    occurred_at: Mapped[datetime]


class InboundCounter(Base):
    __tablename__ = "inbound_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]
