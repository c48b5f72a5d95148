"""Per-workspace SMTP relays and the shared rate-limit counters.

A relay's ``url`` is stored with its password masked (``smtp://user:***@host:587``): that
is the form the API and CLI show. The password itself sits in ``password``, encrypted
with the instance's secret box and re-encrypted by ``postroom secrets rotate``.

``rate_limit_slots`` holds the rate-limit counters every worker process shares: one row
per (limit key, time slot) with the number of messages granted in that slot. A limit
counts the slots of its window (see :mod:`postroom.delivery.rate_limits`); ``expires_at``
is when a row stops counting, so it can be deleted.

Indexes: ``uq(workspace_id, name)`` (the per-workspace listing and name lookups),
the primary key ``(key, slot)`` of the counters (every read and write names the key).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Integer, String, Text, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column, workspace_fk
from postroom.security.rotation import register_encrypted_column

MAX_WEIGHT = 1000


class Relay(Base):
    __tablename__ = "relays"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name"),
        CheckConstraint(f"weight >= 1 AND weight <= {MAX_WEIGHT}", name="weight"),
        CheckConstraint("max_connections >= 1", name="max_connections"),
        CheckConstraint("max_messages_per_connection >= 1", name="max_messages_per_connection"),
        CheckConstraint("per_second IS NULL OR per_second >= 1", name="per_second"),
        CheckConstraint("per_hour IS NULL OR per_hour >= 1", name="per_hour"),
        CheckConstraint("per_day IS NULL OR per_day >= 1", name="per_day"),
    )

    id: Mapped[uuid.UUID] = id_column()
    # The unique constraint starts with workspace_id, so no index of its own.
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    name: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(2048))  # the password masked as ***
    password: Mapped[str | None] = mapped_column(Text)  # encrypted with the secret box
    weight: Mapped[int] = mapped_column(Integer, default=1)
    max_connections: Mapped[int] = mapped_column(Integer)
    max_messages_per_connection: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    # Messages per window; NULL is unlimited.
    per_second: Mapped[int | None] = mapped_column(Integer)
    per_hour: Mapped[int | None] = mapped_column(Integer)
    per_day: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RateLimitSlot(Base):
    __tablename__ = "rate_limit_slots"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    slot: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    used: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime]


register_encrypted_column(Relay, "id", "password")
