"""analytics

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import postroom.models.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = (
    "sent",
    "late_bounced",
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


def _big() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> postroom.models.base.UTCDateTime:
    return postroom.models.base.UTCDateTime(timezone=True)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, _big(), server_default="0", nullable=False)


def _counters() -> list[sa.Column[int]]:
    return [_count(name) for name in COUNTERS]


def _send_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["send_id"], ["sends.id"], name=op.f(f"fk_{table}_send_id_sends"), ondelete="CASCADE"
    )


def _workspace_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["workspace_id"],
        ["workspaces.id"],
        name=op.f(f"fk_{table}_workspace_id_workspaces"),
        ondelete="CASCADE",
    )


def _delivery_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["delivery_id"],
        ["deliveries.id"],
        name=op.f(f"fk_{table}_delivery_id_deliveries"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "analytics_batch",
        sa.Column("seq", _big(), autoincrement=False, nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("send_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=True),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=True),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("machine", sa.Integer(), nullable=False),
        sa.Column("late", sa.Integer(), nullable=False),
        sa.Column("first_any", sa.Integer(), nullable=False),
        sa.Column("first_human", sa.Integer(), nullable=False),
        sa.Column("first_link", sa.Integer(), nullable=False),
        sa.Column("link_id", sa.String(length=32), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("hour", _time(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("second", _big(), nullable=False),
        sa.Column("occurred_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_analytics_batch")),
    )
    op.create_table(
        "analytics_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_seq", _big(), nullable=False),
        sa.Column("safe_seq", _big(), nullable=False),
        sa.Column("horizon_seq", _big(), nullable=False),
        sa.Column("horizon_at", _time(), nullable=False),
        sa.Column("events_applied", _big(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_analytics_cursor")),
    )
    op.create_table(
        "analytics_daily",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *_counters(),
        _workspace_fk("analytics_daily"),
        sa.PrimaryKeyConstraint("workspace_id", "day", name=op.f("pk_analytics_daily")),
    )
    op.create_table(
        "analytics_domains",
        sa.Column("send_id", sa.Uuid(), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        *_counters(),
        _send_fk("analytics_domains"),
        sa.PrimaryKeyConstraint("send_id", "domain", name=op.f("pk_analytics_domains")),
    )
    op.create_table(
        "analytics_hourly",
        sa.Column("send_id", sa.Uuid(), nullable=False),
        sa.Column("hour", _time(), nullable=False),
        *_counters(),
        _send_fk("analytics_hourly"),
        sa.PrimaryKeyConstraint("send_id", "hour", name=op.f("pk_analytics_hourly")),
    )
    op.create_table(
        "analytics_links",
        sa.Column("send_id", sa.Uuid(), nullable=False),
        sa.Column("link_id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        _count("clicks"),
        _count("machine_clicks"),
        _count("unique_clicks"),
        _send_fk("analytics_links"),
        sa.PrimaryKeyConstraint("send_id", "link_id", name=op.f("pk_analytics_links")),
    )
    op.create_table(
        "analytics_send_stats",
        sa.Column("send_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=True),
        *_counters(),
        _send_fk("analytics_send_stats"),
        _workspace_fk("analytics_send_stats"),
        sa.PrimaryKeyConstraint("send_id", name=op.f("pk_analytics_send_stats")),
    )
    with op.batch_alter_table("analytics_send_stats", schema=None) as batch_op:
        batch_op.create_index("ix_analytics_send_stats_campaign_id", ["campaign_id"], unique=False)

    op.create_table(
        "analytics_firsts",
        sa.Column("send_id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=True),
        sa.Column("first_seq", _big(), nullable=False),
        sa.Column("first_at", _time(), nullable=False),
        _delivery_fk("analytics_firsts"),
        _send_fk("analytics_firsts"),
        sa.PrimaryKeyConstraint("send_id", "delivery_id", "kind", name=op.f("pk_analytics_firsts")),
    )
    with op.batch_alter_table("analytics_firsts", schema=None) as batch_op:
        batch_op.create_index("ix_analytics_firsts_contact_id", ["contact_id"], unique=False)
        batch_op.create_index("ix_analytics_firsts_first_seq", ["first_seq"], unique=False)

    op.create_table(
        "analytics_link_clickers",
        sa.Column("send_id", sa.Uuid(), nullable=False),
        sa.Column("link_id", sa.String(length=32), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=True),
        _count("clicks"),
        _count("machine_clicks"),
        sa.Column("first_seq", _big(), nullable=False),
        sa.Column("first_at", _time(), nullable=False),
        sa.Column("last_at", _time(), nullable=False),
        _delivery_fk("analytics_link_clickers"),
        _send_fk("analytics_link_clickers"),
        sa.PrimaryKeyConstraint(
            "send_id", "link_id", "delivery_id", name=op.f("pk_analytics_link_clickers")
        ),
    )
    with op.batch_alter_table("analytics_link_clickers", schema=None) as batch_op:
        batch_op.create_index("ix_analytics_link_clickers_contact_id", ["contact_id"], unique=False)
        batch_op.create_index("ix_analytics_link_clickers_first_seq", ["first_seq"], unique=False)


def downgrade() -> None:
    for table in (
        "analytics_link_clickers",
        "analytics_firsts",
        "analytics_send_stats",
        "analytics_links",
        "analytics_hourly",
        "analytics_domains",
        "analytics_daily",
        "analytics_cursor",
        "analytics_batch",
    ):
        op.drop_table(table)
