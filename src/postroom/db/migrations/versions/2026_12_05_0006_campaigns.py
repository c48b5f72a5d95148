"""campaigns

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 03:40:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import postroom.models.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    utc = postroom.models.base.UTCDateTime(timezone=True)
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("content", _json(), nullable=False),
        sa.Column("subject", sa.String(length=998), nullable=True),
        sa.Column("from_email", sa.String(length=320), nullable=False),
        sa.Column("from_name", sa.String(length=255), nullable=False),
        sa.Column("reply_to", sa.String(length=320), nullable=True),
        sa.Column("audience", _json(), nullable=False),
        sa.Column("track_opens", sa.Boolean(), nullable=False),
        sa.Column("track_clicks", sa.Boolean(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("tags", _json(), nullable=False),
        sa.Column("calendar", _json(), nullable=True),
        sa.Column("scheduled_at", utc, nullable=True),
        sa.Column("send_id", sa.Uuid(), nullable=True),
        sa.Column("fanout_job_id", sa.Uuid(), nullable=True),
        sa.Column("fanout_cursor", sa.Uuid(), nullable=True),
        sa.Column("fanned_out_at", utc, nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("started_at", utc, nullable=True),
        sa.Column("finished_at", utc, nullable=True),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("updated_at", utc, nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'scheduled', 'sending', 'waiting', 'paused', 'sent', "
            "'cancelled', 'failed')",
            name=op.f("ck_campaigns_status"),
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_campaigns_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index("ix_campaigns_workspace_id_id", ["workspace_id", "id"], unique=False)
        batch_op.create_index(
            "ix_campaigns_status_scheduled_at", ["status", "scheduled_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index("ix_campaigns_status_scheduled_at")
        batch_op.drop_index("ix_campaigns_workspace_id_id")
    op.drop_table("campaigns")
