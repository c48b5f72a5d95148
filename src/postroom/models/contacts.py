"""Contacts, lists, subscriptions, suppressions and segments.

Indexes, and the queries each one serves:

- ``contacts``: ``uq(workspace_id, email_key)`` (upsert and lookup by email, and the email
  prefix search: ``text_pattern_ops`` on PostgreSQL for ``LIKE 'abc%'`` under any collation,
  a range on the binary-collated key on SQLite), ``uq(workspace_id, external_id)``,
  ``(workspace_id, id)`` (cursor pagination, fan-out chunks), ``(workspace_id, updated_at)``
  (incremental sync).
- ``subscriptions``: the primary key ``(list_id, contact_id)`` (subscribe/unsubscribe, and the
  per-contact probe of a segment's ``list`` condition), ``(contact_id)`` (a contact's lists;
  the cascade from contacts), ``(list_id, status, contact_id)`` (a list's members in one
  status in contact order, for member pages, counts and fan-out, from the index alone).
- ``suppressions``: ``uq(workspace_id, email_hash, reason)``, also the index of the audience's
  ``NOT EXISTS`` probe by hash.

Measured with ``bench/segment_count.py`` (1M contacts, two attribute conditions and a list
condition): the count is a scan of the workspace's contacts plus a primary-key probe into
``subscriptions`` per candidate, 0.66 s on PostgreSQL and 1.2-1.8 s on SQLite, and neither an
index on ``(list_id, status[, contact_id])`` nor one on the attributes changes it (a condition
true for a quarter of the contacts is cheaper to test on a scan than through an index). So
there is no GIN index on ``attributes``, which spares every contact write its cost; a
workspace that filters often on one rare attribute value may want one
(``USING gin (attributes jsonb_path_ops)``: ``equals`` compiles to ``@>``, which uses it).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.engine import default
from sqlalchemy.orm import Mapped, mapped_column, validates

from postroom.models.base import Base, id_column, workspace_fk

CONTACT_STATUSES: Final = ("subscribed", "unsubscribed", "bounced", "complained")
SUBSCRIPTION_STATUSES: Final = ("subscribed", "unconfirmed", "unsubscribed")
SUPPRESSION_REASONS: Final = ("bounce", "complaint", "unsubscribe", "manual")
# Reasons that block transactional mail too; ``unsubscribe`` blocks marketing mail only.
TRANSACTIONAL_BLOCKING_REASONS: Final = ("bounce", "complaint", "manual")


def _in_list(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def email_hash(email_key: str) -> str:
    """SHA-256 (hex) of the lower-cased email: how suppressions, tombstones included, are
    matched. ``email_key`` is lower-cased again so a caller cannot hash the display form."""
    return hashlib.sha256(email_key.lower().encode("utf-8")).hexdigest()


def _email_hash_default(context: default.DefaultExecutionContext) -> str:
    parameters = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return email_hash(str(parameters["email_key"]))


class Contact(Base):
    """A person in one workspace.

    ``email`` is the normalised display form, ``email_key`` its lower-cased form (uniqueness,
    lookups) and ``email_hash`` the SHA-256 of ``email_key``: audiences exclude suppressed
    addresses by hash, which is all a GDPR tombstone keeps. ``email_hash`` is filled from
    ``email_key`` on insert and when the ORM sets ``email_key``; a Core ``UPDATE`` that
    changes ``email_key`` must set ``email_hash`` too (``email_hash()``).
    """

    __tablename__ = "contacts"
    __table_args__ = (
        # Unique email per workspace. On PostgreSQL its index uses text_pattern_ops, so the
        # same index serves equality (upserts) and `email_key LIKE 'abc%'` (search) under
        # any database collation: one index fewer for every contact write.
        Index(
            "uq_contacts_workspace_id_email_key",
            "workspace_id",
            "email_key",
            unique=True,
            postgresql_ops={"email_key": "text_pattern_ops"},
        ),
        # NULL external ids are distinct from each other on both databases.
        UniqueConstraint("workspace_id", "external_id"),
        CheckConstraint(_in_list("status", CONTACT_STATUSES), name="status"),
        Index("ix_contacts_workspace_id_id", "workspace_id", "id"),
        Index("ix_contacts_workspace_id_updated_at", "workspace_id", "updated_at"),
    )

    id: Mapped[uuid.UUID] = id_column()
    # Every index above starts with workspace_id, so no index of its own.
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320))
    email_hash: Mapped[str] = mapped_column(String(64), default=_email_hash_default)
    external_id: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(32))
    locale: Mapped[str | None] = mapped_column(String(35))
    timezone: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    status: Mapped[str] = mapped_column(String(16), default="subscribed")
    opt_in: Mapped[bool | None]
    consent_source: Mapped[str | None] = mapped_column(String(255))
    consent_version: Mapped[str | None] = mapped_column(String(255))
    consent_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    @validates("email_key")
    def _keep_hash_in_step(self, _key: str, value: str) -> str:
        self.email_hash = email_hash(value)
        return value


class ContactList(Base):
    """A static list. Each workspace has at most one default list (``is_default``), which
    cannot be deleted."""

    __tablename__ = "lists"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name"),
        Index(
            "uq_lists_workspace_id_default",
            "workspace_id",
            unique=True,
            postgresql_where=text("is_default"),
            sqlite_where=text("is_default"),
        ),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    is_default: Mapped[bool] = mapped_column(default=False, server_default=false())
    double_opt_in: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Subscription(Base):
    """A contact on a list. ``unconfirmed`` waits for a double opt-in confirmation;
    ``unsubscribed`` keeps the row (and its dates) rather than deleting it."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(_in_list("status", SUBSCRIPTION_STATUSES), name="status"),
        Index("ix_subscriptions_contact_id", "contact_id"),
        Index("ix_subscriptions_list_id_status_contact_id", "list_id", "status", "contact_id"),
    )

    list_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    subscribed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]


class Suppression(Base):
    """An address that must not be mailed. ``email`` is NULL for a GDPR tombstone: only the
    hash remains, and every check goes through ``email_hash`` so tombstones keep working."""

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("workspace_id", "email_hash", "reason"),
        CheckConstraint(_in_list("reason", SUPPRESSION_REASONS), name="reason"),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    email: Mapped[str | None] = mapped_column(String(320))
    email_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class Segment(Base):
    """A saved filter (``postroom.contacts.segments``), evaluated when it is used."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    filter: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
