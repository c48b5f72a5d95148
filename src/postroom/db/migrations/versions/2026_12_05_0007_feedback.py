"""feedback

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import postroom.models.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("mail_from", sa.String(length=320), nullable=False),
        sa.Column(
            "rcpt_to",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("delivery_id", sa.Uuid(), nullable=True),
        sa.Column("contact_id", sa.Uuid(), nullable=True),
        sa.Column("sender_hash", sa.String(length=64), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", postroom.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_inbound_messages_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
    )
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbound_messages_contact_id"), ["contact_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_inbound_messages_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(
            "ix_inbound_messages_workspace_id_id", ["workspace_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_inbound_messages_workspace_id_sender_hash",
            ["workspace_id", "sender_hash"],
            unique=False,
        )

    op.create_table(
        "feedback_soft_bounces",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("occurred_at", postroom.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_feedback_soft_bounces_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_soft_bounces")),
        sa.UniqueConstraint(
            "workspace_id",
            "delivery_id",
            name=op.f("uq_feedback_soft_bounces_workspace_id_delivery_id"),
        ),
    )
    with op.batch_alter_table("feedback_soft_bounces", schema=None) as batch_op:
        batch_op.create_index(
            "ix_feedback_soft_bounces_workspace_id_email_hash_occurred_at",
            ["workspace_id", "email_hash", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "inbound_counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", postroom.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_inbound_counters")),
    )


def downgrade() -> None:
    op.drop_table("inbound_counters")
    with op.batch_alter_table("feedback_soft_bounces", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_soft_bounces_workspace_id_email_hash_occurred_at")
    op.drop_table("feedback_soft_bounces")
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_messages_workspace_id_sender_hash")
        batch_op.drop_index("ix_inbound_messages_workspace_id_id")
        batch_op.drop_index(batch_op.f("ix_inbound_messages_received_at"))
        batch_op.drop_index(batch_op.f("ix_inbound_messages_contact_id"))
    op.drop_table("inbound_messages")
