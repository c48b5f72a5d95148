"""providers: email service providers' webhook credentials and replay keys

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 03:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import postroom.models.base

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROVIDERS = "provider IN ('ses', 'sendgrid', 'mailgun', 'postmark')"


def upgrade() -> None:
    op.create_table(
        "feedback_providers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=True),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column(
            "topic_arns",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("events_received", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("events_applied", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("events_unchanged", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("events_unmatched", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_event_at", postroom.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "subscription_confirmed_at",
            postroom.models.base.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("created_at", postroom.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", postroom.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_PROVIDERS, name=op.f("ck_feedback_providers_provider")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_feedback_providers_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_providers")),
        sa.UniqueConstraint(
            "workspace_id", "provider", name=op.f("uq_feedback_providers_workspace_id_provider")
        ),
    )
    op.create_table(
        "feedback_provider_replays",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", postroom.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_PROVIDERS, name=op.f("ck_feedback_provider_replays_provider")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_feedback_provider_replays_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "workspace_id", "provider", "token_hash", name=op.f("pk_feedback_provider_replays")
        ),
    )
    op.create_index(
        op.f("ix_feedback_provider_replays_expires_at"),
        "feedback_provider_replays",
        ["expires_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_feedback_provider_replays_expires_at"), table_name="feedback_provider_replays"
    )
    op.drop_table("feedback_provider_replays")
    op.drop_table("feedback_providers")
