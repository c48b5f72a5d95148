"""Double opt-in: the confirmation mail a list sends, when it is not the default one.

A list with ``double_opt_in`` puts new subscriptions in ``unconfirmed`` and mails a signed
``/c/{token}`` link. By default the mail is a built-in inline message; a list may give its
own subject/HTML/text, a template (its published versions, frozen per mail) and sender.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, workspace_fk
from postroom.models.contacts import Subscription


class ListConfirmation(Base):
    """Per-list confirmation mail settings (one row per list, only when customised)."""

    __tablename__ = "list_confirmations"

    list_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid(), ForeignKey("templates.id", ondelete="SET NULL")
    )
    subject: Mapped[str | None] = mapped_column(String(998))
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    from_email: Mapped[str | None] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(255))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


# The expiry sweep finds unconfirmed subscriptions older than the cutoff across every
# workspace; partial, so the (few) unconfirmed rows are all it holds and confirmed
# subscribers cost nothing.
Index(
    "ix_subscriptions_unconfirmed_updated_at",
    Subscription.updated_at,
    postgresql_where=text("status = 'unconfirmed'"),
    sqlite_where=text("status = 'unconfirmed'"),
)
