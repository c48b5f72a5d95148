"""Broadcast campaigns (owned by the campaigns work).

A campaign is the editable description of a broadcast: content (a template, a pinned
version or inline subject/HTML/text), sender, audience, tracking, timezone and an optional
send calendar. When it starts sending it creates its ``send`` (``send_id``), which freezes
content, lists and tracking; from then on the ledger is the truth and the campaign only
carries the lifecycle status.

Statuses: ``draft`` → ``scheduled`` → ``sending`` ⇄ ``waiting`` (outside the send calendar)
⇄ ``paused`` → ``sent`` | ``cancelled`` | ``failed`` (see ``postroom.campaigns.states``).

Indexes: ``(workspace_id, id)`` (listing in id order), ``(status, scheduled_at)`` (the
scheduler's due-campaign claim and the sweeps over sending/waiting campaigns, which touch
only the few live campaigns rather than the whole history).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import CheckConstraint, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column, workspace_fk

CAMPAIGN_STATUSES: Final = (
    "draft",
    "scheduled",
    "sending",
    "waiting",
    "paused",
    "sent",
    "cancelled",
    "failed",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Campaign(Base):
    """``content`` is one of ``{"template_id": …}``, ``{"version_id": …}`` or
    ``{"inline": {"subject", "html", "text", "preheader"}}``. ``calendar`` is ``None`` or
    ``{"weekdays": [1..7 ISO], "start_hour": h, "end_hour": h}`` in ``timezone``."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(_in("status", CAMPAIGN_STATUSES), name="status"),
        Index("ix_campaigns_workspace_id_id", "workspace_id", "id"),
        Index("ix_campaigns_status_scheduled_at", "status", "scheduled_at"),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    content: Mapped[dict[str, Any]]
    subject: Mapped[str | None] = mapped_column(String(998))
    from_email: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str] = mapped_column(String(255), default="")
    reply_to: Mapped[str | None] = mapped_column(String(320))
    audience: Mapped[dict[str, Any]]
    track_opens: Mapped[bool] = mapped_column(default=True)
    track_clicks: Mapped[bool] = mapped_column(default=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    tags: Mapped[list[str]]
    calendar: Mapped[dict[str, Any] | None]
    scheduled_at: Mapped[datetime | None]
    # The campaign's send, created when it starts sending (no FK: sends outlive nothing
    # here, and the campaign row is deleted only in states whose send is finished).
    send_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    fanout_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    # Fan-out progress: the last contact id whose range is in the ledger (a resumed job
    # starts after it), when it finished, and how many deliveries it made.
    fanout_cursor: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    fanned_out_at: Mapped[datetime | None]
    recipients: Mapped[int | None] = mapped_column(Integer)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
