"""Email service providers' event webhooks (SES via SNS, SendGrid, Mailgun, Postmark).

- ``feedback_providers``: one row per (workspace, provider) holding what it takes to
  believe that provider's calls — SendGrid's ECDSA verification key (public, stored
  plain), Mailgun's signing key or Postmark's Basic password (``secret``, encrypted with
  the secret box and re-encrypted by ``postroom secrets rotate``), Postmark's Basic
  username, the SNS topic ARNs a workspace accepts — and counters of what its calls did.
- ``feedback_provider_replays``: signatures, tokens and SNS MessageIds already accepted
  (SHA-256 of the value), kept until ``expires_at`` (past the timestamp tolerance, after
  which a replay is refused as stale anyway), so a captured call is accepted once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column, workspace_fk
from postroom.security.rotation import register_encrypted_column

PROVIDER_NAMES: Final = ("ses", "sendgrid", "mailgun", "postmark")


def _provider_check() -> CheckConstraint:
    values = ", ".join(repr(name) for name in PROVIDER_NAMES)
    return CheckConstraint(f"provider IN ({values})", name="provider")


class FeedbackProvider(Base):
    __tablename__ = "feedback_providers"
    __table_args__ = (UniqueConstraint("workspace_id", "provider"), _provider_check())

    id: Mapped[uuid.UUID] = id_column()
    # The unique constraint starts with workspace_id, so no index of its own.
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    provider: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(200))
    public_key: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str | None] = mapped_column(Text)
    topic_arns: Mapped[list[str]]
    events_received: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    events_applied: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    events_unchanged: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    events_unmatched: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_event_at: Mapped[datetime | None]
    subscription_confirmed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ProviderReplay(Base):
    __tablename__ = "feedback_provider_replays"
    __table_args__ = (_provider_check(),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


register_encrypted_column(FeedbackProvider, "id", "secret")
