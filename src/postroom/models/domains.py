"""Sending domains and their DKIM keys.

A domain holds the statuses of its last DNS check; its DKIM keys live in ``dkim_keys`` so
that a domain can rotate keys: a new key is published under a new selector while the old
one keeps signing, and becomes the signing (``active``) key once a check has seen its DNS
record. Private keys are stored encrypted with the instance's secret box (and re-encrypted
by ``postroom secrets rotate``); they never leave the server.

Indexes: ``uq(workspace_id, domain)`` (lookups by name, and the per-workspace listing in
id order is small enough to sort), ``uq(domain_id, selector)`` (a domain's keys).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column, workspace_fk
from postroom.security.rotation import register_encrypted_column

RECORD_STATUSES: Final = ("unknown", "verified", "missing", "invalid")


def _status_check(column: str) -> CheckConstraint:
    values = ", ".join(repr(value) for value in RECORD_STATUSES)
    return CheckConstraint(f"{column} IN ({values})", name=column)


def _status_column() -> Mapped[str]:
    return mapped_column(String(16), default="unknown", server_default="unknown")


class SendingDomain(Base):
    __tablename__ = "sending_domains"
    __table_args__ = (
        UniqueConstraint("workspace_id", "domain"),
        _status_check("spf_status"),
        _status_check("dkim_status"),
        _status_check("dmarc_status"),
        _status_check("return_path_status"),
    )

    id: Mapped[uuid.UUID] = id_column()
    # The unique constraint starts with workspace_id, so no index of its own.
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    domain: Mapped[str] = mapped_column(String(253))
    return_path_domain: Mapped[str] = mapped_column(String(253))
    spf_status: Mapped[str] = _status_column()
    dkim_status: Mapped[str] = _status_column()
    dmarc_status: Mapped[str] = _status_column()
    return_path_status: Mapped[str] = _status_column()
    # What the last check found, per record: {"spf": {"found": [...], "detail": "..."}, ...}
    check_details: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    checked_at: Mapped[datetime | None]
    # Sending rate limits of mail from this domain (messages per window; NULL: unlimited)
    # and an optional warm-up plan ({"start_date", "initial_per_day", "growth_factor",
    # "max_per_day"}): see postroom.delivery.rate_limits.
    rate_per_second: Mapped[int | None] = mapped_column(Integer)
    rate_per_hour: Mapped[int | None] = mapped_column(Integer)
    rate_per_day: Mapped[int | None] = mapped_column(Integer)
    warmup: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DkimKey(Base):
    __tablename__ = "dkim_keys"
    __table_args__ = (UniqueConstraint("domain_id", "selector"), _status_check("status"))

    id: Mapped[uuid.UUID] = id_column()
    # The unique constraint starts with domain_id, so no index of its own.
    domain_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("sending_domains.id", ondelete="CASCADE")
    )
    selector: Mapped[str] = mapped_column(String(63))
    private_key: Mapped[str] = mapped_column(Text)  # PEM, encrypted with the secret box
    public_key: Mapped[str] = mapped_column(Text)  # base64 DER, the p= of the DNS record
    bits: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(default=False, server_default=false())
    status: Mapped[str] = _status_column()
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]


register_encrypted_column(DkimKey, "id", "private_key")
