"""The delivery ledger: sends (frozen pieces of outgoing work) and deliveries (one row per
send and recipient). Everything that needs to know what happened to a message reads here:
retries, resume after a crash, cancel, per-recipient history, analytics, tracking and
unsubscribe links.

Statuses of a delivery: ``queued`` → ``sending`` (claimed, leased) → ``sent`` | ``deferred``
(retried at ``next_attempt_at``) | ``uncertain`` (dropped after DATA; retried with the same
Message-ID) | ``failed`` | ``bounced`` | ``cancelled`` | ``skipped`` (suppressed at send time).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column, workspace_fk

SEND_KINDS: Final = ("campaign", "sequence_step", "transactional", "test")
SEND_STATES: Final = ("active", "paused", "cancelled")
DELIVERY_STATUSES: Final = (
    "queued",
    "sending",
    "sent",
    "deferred",
    "uncertain",
    "failed",
    "bounced",
    "cancelled",
    "skipped",
)
# Lower runs first: a password reset never waits behind a broadcast.
PRIORITY_TRANSACTIONAL: Final = 10
PRIORITY_TEST: Final = 20
PRIORITY_SEQUENCE: Final = 50
PRIORITY_CAMPAIGN: Final = 100
CLAIMABLE: Final = ("queued", "deferred", "uncertain")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Send(Base):
    """One frozen piece of outgoing work. ``content`` is either
    ``{"inline": {"subject", "html", "text", "preheader"}}`` or
    ``{"versions": {locale: version_id}, "default_locale": "en"}`` (a template's published
    locale variants frozen when sending started)."""

    __tablename__ = "sends"
    __table_args__ = (
        CheckConstraint(_in("kind", SEND_KINDS), name="kind"),
        CheckConstraint(_in("state", SEND_STATES), name="state"),
        Index("ix_sends_workspace_id_id", "workspace_id", "id"),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(16), default="active")
    priority: Mapped[int] = mapped_column(Integer, default=PRIORITY_CAMPAIGN)
    purpose: Mapped[str] = mapped_column(String(16), default="marketing")
    content: Mapped[dict[str, Any]]
    from_email: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str] = mapped_column(String(255), default="")
    reply_to: Mapped[str | None] = mapped_column(String(320))
    track_opens: Mapped[bool] = mapped_column(default=True)
    track_clicks: Mapped[bool] = mapped_column(default=True)
    list_ids: Mapped[list[str]]
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), index=True)
    step_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    tags: Mapped[list[str]]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    created_at: Mapped[datetime]


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        UniqueConstraint("send_id", "contact_id"),
        UniqueConstraint("send_id", "email"),
        # The claim query: due work by priority. Partial, so finished rows cost nothing.
        Index(
            "ix_deliveries_claim",
            "priority",
            "next_attempt_at",
            postgresql_where=text("status IN ('queued', 'deferred', 'uncertain')"),
            sqlite_where=text("status IN ('queued', 'deferred', 'uncertain')"),
        ),
        Index(
            "ix_deliveries_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
        Index("ix_deliveries_send_id_status", "send_id", "status"),
        # Serves the explicit delete of a contact's deliveries (no foreign key, see below).
        Index("ix_deliveries_contact_id", "contact_id"),
        # Only sent rows have a Message-ID: a fan-out's million queued rows stay out.
        Index(
            "ix_deliveries_message_id",
            "message_id",
            postgresql_where=text("message_id IS NOT NULL"),
            sqlite_where=text("message_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = id_column()
    # No foreign keys to workspaces or contacts (migration 0012): their per-row checks were
    # a third of a fan-out's cost. A workspace's deliveries still go with it through
    # sends (ON DELETE CASCADE); a contact's are deleted explicitly by contact delete and
    # GDPR erase (postroom.contacts.service). See docs/architecture.md.
    workspace_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    send_id: Mapped[uuid.UUID] = mapped_column(Uuid(), ForeignKey("sends.id", ondelete="CASCADE"))
    contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=PRIORITY_CAMPAIGN)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(String(255))
    smtp_response: Mapped[str | None] = mapped_column(Text)
    relay: Mapped[str | None] = mapped_column(String(100))
    variables: Mapped[dict[str, Any] | None]
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
