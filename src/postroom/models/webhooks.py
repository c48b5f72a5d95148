"""Outbound webhook endpoints, their deliveries and the outbox cursor (webhooks work).

- ``webhook_endpoints``: a URL, a secret (encrypted with the secret box; ``previous_secret``
  keeps signing for a day after a rotation), an enabled flag and, when Postroom disabled
  it (HTTP 410, or failing for five days), the reason and time.
- ``webhook_event_types``: what an endpoint listens to, one row per pattern: an exact
  type (``email.opened``) or a prefix (``email.*`` is stored as ``email.`` with
  ``is_prefix``; ``*`` as the empty prefix). The outbox matches events against these rows
  in SQL, so fan-out stays one ``INSERT … SELECT``.
- ``webhook_deliveries``: one row per (endpoint, event) — plus test sends and replays —
  claimed with a lease like the mail ledger. The payload is copied from the event when the
  row is made, so retries send the same bytes. ``contact_id`` is no foreign key (a
  ``contact.deleted`` webhook must outlive its contact); GDPR erase deletes by it.
- ``webhook_outbox``: the cursor over ``events.seq`` (one row), with the holes in the
  sequence that may still fill (see ``postroom.webhooks.outbox``).

Also here: the index on ``events`` that engagement segments need (correlated EXISTS per
contact and type, newest first).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column, workspace_fk
from postroom.models.platform import Event
from postroom.security.rotation import register_encrypted_column

WEBHOOK_DELIVERY_STATUSES: Final = ("pending", "sending", "retrying", "succeeded", "failed")
WEBHOOK_DELIVERY_KINDS: Final = ("event", "test", "replay")
CLAIMABLE_WEBHOOK: Final = ("pending", "retrying")

# Engagement segments: EXISTS (events of this contact, of this type, since …).
EVENTS_CONTACT_TYPE_INDEX = Index(
    "ix_events_workspace_id_contact_id_type_occurred_at",
    Event.workspace_id,
    Event.contact_id,
    Event.type,
    Event.occurred_at,
)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500))
    event_types: Mapped[list[str]]
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    disabled_at: Mapped[datetime | None]
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookEventType(Base):
    __tablename__ = "webhook_event_types"

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    event_type: Mapped[str] = mapped_column(String(100), primary_key=True)
    is_prefix: Mapped[bool] = mapped_column(Boolean, primary_key=True)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'sending', 'retrying', 'succeeded', 'failed')", name="status"
        ),
        CheckConstraint("kind IN ('event', 'test', 'replay')", name="kind"),
        # The sender's claim: due rows only (partial, so the delivered history costs nothing).
        Index(
            "ix_webhook_deliveries_claim",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'retrying')"),
            sqlite_where=text("status IN ('pending', 'retrying')"),
        ),
        Index(
            "ix_webhook_deliveries_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_contact_id", "contact_id"),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    event_type: Mapped[str] = mapped_column(String(100))
    contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    contact_email: Mapped[str | None] = mapped_column(String(320))
    resource_type: Mapped[str | None] = mapped_column(String(32))
    resource_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    data: Mapped[dict[str, Any]]
    occurred_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    response_status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookOutbox(Base):
    """The outbox cursor: every event with ``seq <= scanned_seq`` has been fanned out,
    except the ``holes`` (``[[low, high, first_seen_iso], …]``) not yet seen committed."""

    __tablename__ = "webhook_outbox"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    scanned_seq: Mapped[int] = mapped_column(BigInteger)
    holes: Mapped[list[Any]]
    updated_at: Mapped[datetime]


register_encrypted_column(WebhookEndpoint, "id", "secret")
register_encrypted_column(WebhookEndpoint, "id", "previous_secret")
