"""relays

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import postroom.models.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    utc = postroom.models.base.UTCDateTime(timezone=True)
    op.create_table(
        "relays",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("password", sa.Text(), nullable=True),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("max_connections", sa.Integer(), nullable=False),
        sa.Column("max_messages_per_connection", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("per_second", sa.Integer(), nullable=True),
        sa.Column("per_hour", sa.Integer(), nullable=True),
        sa.Column("per_day", sa.Integer(), nullable=True),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("updated_at", utc, nullable=False),
        sa.CheckConstraint("weight >= 1 AND weight <= 1000", name=op.f("ck_relays_weight")),
        sa.CheckConstraint("max_connections >= 1", name=op.f("ck_relays_max_connections")),
        sa.CheckConstraint(
            "max_messages_per_connection >= 1",
            name=op.f("ck_relays_max_messages_per_connection"),
        ),
        sa.CheckConstraint(
            "per_second IS NULL OR per_second >= 1", name=op.f("ck_relays_per_second")
        ),
        sa.CheckConstraint("per_hour IS NULL OR per_hour >= 1", name=op.f("ck_relays_per_hour")),
        sa.CheckConstraint("per_day IS NULL OR per_day >= 1", name=op.f("ck_relays_per_day")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_relays_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relays")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_relays_workspace_id_name")),
    )
    op.create_table(
        "rate_limit_slots",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("slot", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("expires_at", utc, nullable=False),
        sa.PrimaryKeyConstraint("key", "slot", name=op.f("pk_rate_limit_slots")),
    )
    with op.batch_alter_table("sending_domains") as batch:
        batch.add_column(sa.Column("rate_per_second", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_per_hour", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_per_day", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column(
                "warmup",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("sending_domains") as batch:
        batch.drop_column("warmup")
        batch.drop_column("rate_per_day")
        batch.drop_column("rate_per_hour")
        batch.drop_column("rate_per_second")
    op.drop_table("rate_limit_slots")
    op.drop_table("relays")
