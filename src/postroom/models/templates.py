"""Email templates and their versions.

A template is a named message (marketing or transactional); its content lives in numbered
versions. A version is a ``draft`` (editable) until it is published; a ``published``
version is immutable (its compiled HTML and text are what mail is built from) and becomes
``unpublished`` when another version of the same locale is published or it is unpublished.
A template has at most one published version per locale: its locale variants.

Indexes: ``uq(workspace_id, name)`` (names, and the listing in id order by workspace),
``uq(template_id, number)`` (history, newest first), and the partial unique index
``(template_id, locale) WHERE status = 'published'``, which makes "one published version
per locale" a database rule that two concurrent publishes cannot break.
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
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column

from postroom.models.base import Base, id_column, workspace_fk

TEMPLATE_KINDS: Final = ("marketing", "transactional")
VERSION_STATUSES: Final = ("draft", "published", "unpublished")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Template(Base):
    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name"),
        CheckConstraint(_in("kind", TEMPLATE_KINDS), name="kind"),
        Index("ix_templates_workspace_id_id", "workspace_id", "id"),
    )

    id: Mapped[uuid.UUID] = id_column()
    workspace_id: Mapped[uuid.UUID] = workspace_fk(index=False)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)
    default_locale: Mapped[str] = mapped_column(String(35), default="en")
    # The API key that created it; keys are revoked, not deleted, so no foreign key.
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class TemplateVersion(Base):
    __tablename__ = "template_versions"
    __table_args__ = (
        UniqueConstraint("template_id", "number"),
        CheckConstraint(_in("status", VERSION_STATUSES), name="status"),
        Index(
            "uq_template_versions_published_locale",
            "template_id",
            "locale",
            unique=True,
            sqlite_where=sql_text("status = 'published'"),
            postgresql_where=sql_text("status = 'published'"),
        ),
    )

    id: Mapped[uuid.UUID] = id_column()
    # Denormalised from the template so that a version id resolves in one lookup.
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    template_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("templates.id", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    locale: Mapped[str] = mapped_column(String(35), default="en")
    subject: Mapped[str] = mapped_column(Text)
    preheader: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text, default="")
    # The text part as written; when null, publish generates one from the HTML.
    text: Mapped[str | None] = mapped_column(Text)
    # MJML source; when given, publish compiles it into ``html``.
    mjml: Mapped[str | None] = mapped_column(Text)
    # Declared variables: [{"name", "type": string|number|boolean|date, "fallback"}]
    variables: Mapped[list[Any]] = mapped_column(default=list, server_default=sql_text("'[]'"))
    compiled_html: Mapped[str | None] = mapped_column(Text)
    compiled_text: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    published_by: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    published_at: Mapped[datetime | None]
