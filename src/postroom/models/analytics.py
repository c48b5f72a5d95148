"""Analytics counters maintained as events arrive (``postroom.analytics.consumer``).

The consumer reads ``events`` after a persisted cursor (``analytics_cursor``) and adds each
batch to these tables with one set-based statement per table, so a campaign's stats are a
handful of primary-key reads however many recipients it had.

- ``analytics_send_stats``: one row per send (``campaign_id`` copied from the send, so a
  campaign's numbers are the sum over its sends).
- ``analytics_hourly`` / ``analytics_domains``: the same counters per (send, UTC hour) and
  per (send, recipient domain).
- ``analytics_daily``: the same counters per (workspace, UTC day), for date-range totals.
- ``analytics_links``: clicks per (send, link); ``analytics_link_clickers`` who clicked
  (one row per send, link and delivery, i.e. per recipient).
- ``analytics_firsts``: the first open/click (any, and human) of each delivery; inserted
  with ON CONFLICT DO NOTHING, so "unique" counters only count a recipient once.
- ``analytics_batch``: scratch rows of the batch being applied (classified events); filled
  and emptied inside the consumer's transaction, so it is always empty when committed.

Personal rows (firsts, clickers) reference the delivery with ON DELETE CASCADE and carry
the contact id, so erasing a contact removes them; the counters hold no personal data.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Final

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base

# The counters kept per send, per hour, per domain and per day (same columns in each).
COUNTERS: Final = (
    "sent",
    "late_bounced",  # bounced after it had been sent (a DSN): not delivered after all
    "deferred",
    "bounced",
    "complained",
    "failed",
    "skipped",
    "unsubscribed",
    "replied",
    "opens",
    "machine_opens",
    "unique_opens",
    "unique_human_opens",
    "clicks",
    "machine_clicks",
    "unique_clicks",
    "unique_human_clicks",
)

BigCount = BigInteger().with_variant(Integer(), "sqlite")


def _count() -> Mapped[int]:
    return mapped_column(BigCount, default=0, server_default="0")


class _Counters:
    sent: Mapped[int] = _count()
    late_bounced: Mapped[int] = _count()
    deferred: Mapped[int] = _count()
    bounced: Mapped[int] = _count()
    complained: Mapped[int] = _count()
    failed: Mapped[int] = _count()
    skipped: Mapped[int] = _count()
    unsubscribed: Mapped[int] = _count()
    replied: Mapped[int] = _count()
    opens: Mapped[int] = _count()
    machine_opens: Mapped[int] = _count()
    unique_opens: Mapped[int] = _count()
    unique_human_opens: Mapped[int] = _count()
    clicks: Mapped[int] = _count()
    machine_clicks: Mapped[int] = _count()
    unique_clicks: Mapped[int] = _count()
    unique_human_clicks: Mapped[int] = _count()


def _send_fk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid(), ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True)


class AnalyticsSendStats(_Counters, Base):
    __tablename__ = "analytics_send_stats"
    __table_args__ = (Index("ix_analytics_send_stats_campaign_id", "campaign_id"),)

    send_id: Mapped[uuid.UUID] = _send_fk()
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())


class AnalyticsHourly(_Counters, Base):
    __tablename__ = "analytics_hourly"

    send_id: Mapped[uuid.UUID] = _send_fk()
    hour: Mapped[datetime] = mapped_column(primary_key=True)


class AnalyticsDomain(_Counters, Base):
    __tablename__ = "analytics_domains"

    send_id: Mapped[uuid.UUID] = _send_fk()
    domain: Mapped[str] = mapped_column(String(255), primary_key=True)


class AnalyticsDaily(_Counters, Base):
    __tablename__ = "analytics_daily"

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date(), primary_key=True)


class AnalyticsLink(Base):
    __tablename__ = "analytics_links"

    send_id: Mapped[uuid.UUID] = _send_fk()
    link_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    clicks: Mapped[int] = _count()
    machine_clicks: Mapped[int] = _count()
    unique_clicks: Mapped[int] = _count()


class AnalyticsLinkClicker(Base):
    __tablename__ = "analytics_link_clickers"
    __table_args__ = (
        Index("ix_analytics_link_clickers_first_seq", "first_seq"),
        Index("ix_analytics_link_clickers_contact_id", "contact_id"),
    )

    send_id: Mapped[uuid.UUID] = _send_fk()
    link_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    clicks: Mapped[int] = _count()
    machine_clicks: Mapped[int] = _count()
    first_seq: Mapped[int] = mapped_column(BigCount)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]


class AnalyticsFirst(Base):
    """First open/click of a delivery: ``kind`` is ``open``, ``click`` (any) or
    ``open_h``, ``click_h`` (first human one)."""

    __tablename__ = "analytics_firsts"
    __table_args__ = (
        Index("ix_analytics_firsts_first_seq", "first_seq"),
        Index("ix_analytics_firsts_contact_id", "contact_id"),
    )

    send_id: Mapped[uuid.UUID] = _send_fk()
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    first_seq: Mapped[int] = mapped_column(BigCount)
    first_at: Mapped[datetime]


class AnalyticsCursor(Base):
    """How far the consumer got (``last_seq``). ``horizon_seq`` is the highest event seq
    seen at ``horizon_at``; once that observation is older than the safe lag it becomes
    ``safe_seq``, the limit the consumer may read up to on PostgreSQL (see
    ``postroom.analytics.consumer``)."""

    __tablename__ = "analytics_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigCount)
    safe_seq: Mapped[int] = mapped_column(BigCount)
    horizon_seq: Mapped[int] = mapped_column(BigCount)
    horizon_at: Mapped[datetime]
    events_applied: Mapped[int] = mapped_column(BigCount)
    updated_at: Mapped[datetime]


class AnalyticsBatch(Base):
    """Scratch: the classified events of the batch being applied (always empty at rest)."""

    __tablename__ = "analytics_batch"

    seq: Mapped[int] = mapped_column(BigCount, primary_key=True, autoincrement=False)
    workspace_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    send_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    delivery_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    metric: Mapped[str] = mapped_column(String(16))
    machine: Mapped[int] = mapped_column(Integer)
    late: Mapped[int] = mapped_column(Integer)
    first_any: Mapped[int] = mapped_column(Integer)
    first_human: Mapped[int] = mapped_column(Integer)
    first_link: Mapped[int] = mapped_column(Integer)
    link_id: Mapped[str | None] = mapped_column(String(32))
    url: Mapped[str | None] = mapped_column(Text)
    domain: Mapped[str] = mapped_column(String(255))
    hour: Mapped[datetime]
    day: Mapped[date] = mapped_column(Date())
    second: Mapped[int] = mapped_column(BigCount)
    occurred_at: Mapped[datetime]
