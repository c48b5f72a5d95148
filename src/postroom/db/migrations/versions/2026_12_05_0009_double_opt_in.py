"""double_opt_in

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postroom.models.base

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "list_confirmations",
        sa.Column("list_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=True),
        sa.Column("subject", sa.String(length=998), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("from_email", sa.String(length=320), nullable=True),
        sa.Column("from_name", sa.String(length=255), nullable=True),
        sa.Column("reply_to", sa.String(length=320), nullable=True),
        sa.Column("created_at", postroom.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", postroom.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["lists.id"],
            name=op.f("fk_list_confirmations_list_id_lists"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_list_confirmations_template_id_templates"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_list_confirmations_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("list_id", name=op.f("pk_list_confirmations")),
    )
    # Partial: the expiry sweep's index holds the unconfirmed subscriptions only.
    op.create_index(
        "ix_subscriptions_unconfirmed_updated_at",
        "subscriptions",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status = 'unconfirmed'"),
        sqlite_where=sa.text("status = 'unconfirmed'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_subscriptions_unconfirmed_updated_at",
        table_name="subscriptions",
        postgresql_where=sa.text("status = 'unconfirmed'"),
        sqlite_where=sa.text("status = 'unconfirmed'"),
    )
    op.drop_table("list_confirmations")
