"""Workspaces (tenants) and their API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[uuid.UUID] = id_column()
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ApiKey(Base):
    """A key is shown once; only its SHA-256 is stored.

    ``workspace_id`` is null for admin keys (``ak_``), which manage workspaces.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("kind IN ('secret', 'public', 'admin')", name="kind"),
        CheckConstraint("(kind = 'admin') = (workspace_id IS NULL)", name="admin_has_no_workspace"),
        Index("ix_api_keys_workspace_id_created", "workspace_id", "id"),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(100), default="")
    # The first characters of the key, enough to recognise it in a list.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]]
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
