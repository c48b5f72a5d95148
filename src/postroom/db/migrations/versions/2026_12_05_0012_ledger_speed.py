"""ledger_speed: cheaper fan-out inserts into deliveries; AUTOINCREMENT events.seq on SQLite

- deliveries loses its foreign keys to contacts and workspaces. Their per-row checks were
  a third of the cost of fanning a campaign out (bench/RESULTS.md). A workspace's
  deliveries still go with it through sends (ON DELETE CASCADE); a contact's are deleted
  explicitly by contact delete and GDPR erase.
- ix_deliveries_message_id becomes partial (WHERE message_id IS NOT NULL): queued rows,
  which have none, no longer enter it.
- SQLite: events is rebuilt so its seq is AUTOINCREMENT and never reused after the newest
  events are deleted (consumers read events after a seq cursor).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 04:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FOREIGN_KEYS = (
    ("fk_deliveries_contact_id_contacts", "contact_id", "contacts"),
    ("fk_deliveries_workspace_id_workspaces", "workspace_id", "workspaces"),
)
_CLAIM = "status IN ('queued', 'deferred', 'uncertain')"
_LEASE = "status = 'sending'"
_HAS_MESSAGE_ID = "message_id IS NOT NULL"


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _partial_index(name: str, columns: list[str], where: str | None) -> None:
    if where is None:
        op.create_index(name, "deliveries", columns)
        return
    op.create_index(
        name,
        "deliveries",
        columns,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def _dependents(table: str) -> list[str]:
    """Tables whose rows a DELETE from ``table`` cascades to, parents before children."""
    bind = op.get_bind()
    names = [
        row[0]
        for row in bind.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    found: list[str] = []
    frontier = [table]
    while frontier:
        parent = frontier.pop(0)
        for name in names:
            if name in found or name == table:
                continue
            keys = bind.exec_driver_sql(f'PRAGMA foreign_key_list("{name}")').fetchall()
            # foreign_key_list rows: (id, seq, table, from, to, on_update, on_delete, match)
            if any(key[2] == parent and key[6] in ("CASCADE", "SET NULL") for key in keys):
                found.append(name)
                frontier.append(name)
    return found


def _rebuild_sqlite_deliveries(*, drop: bool) -> None:
    """SQLite cannot add or drop a foreign key: the table is copied. The partial indexes
    are dropped first and made again after, so the copy cannot lose their WHERE.

    The copy ends with DROP TABLE deliveries, which (foreign keys being on, and the pragma
    being a no-op inside the migration's transaction) runs as a DELETE and cascades to the
    tables that reference deliveries (analytics): their rows are kept aside and put back."""
    kept = _dependents("deliveries")
    for name in kept:
        op.execute(f'CREATE TEMP TABLE "_keep_{name}" AS SELECT * FROM "{name}"')
    for name in ("ix_deliveries_claim", "ix_deliveries_lease", "ix_deliveries_message_id"):
        op.drop_index(name, table_name="deliveries")
    with op.batch_alter_table("deliveries", recreate="always") as batch_op:
        for name, column, table in _FOREIGN_KEYS:
            if drop:
                batch_op.drop_constraint(name, type_="foreignkey")
            else:
                batch_op.create_foreign_key(name, table, [column], ["id"], ondelete="CASCADE")
    _partial_index("ix_deliveries_claim", ["priority", "next_attempt_at"], _CLAIM)
    _partial_index("ix_deliveries_lease", ["lease_expires_at"], _LEASE)
    _partial_index("ix_deliveries_message_id", ["message_id"], _HAS_MESSAGE_ID if drop else None)
    for name in kept:
        op.execute(f'DELETE FROM "{name}"')
        op.execute(f'INSERT INTO "{name}" SELECT * FROM "_keep_{name}"')
        op.execute(f'DROP TABLE "_keep_{name}"')


def upgrade() -> None:
    if _sqlite():
        _rebuild_sqlite_deliveries(drop=True)
        with op.batch_alter_table(
            "events", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
        return
    for name, _column, _table in _FOREIGN_KEYS:
        op.drop_constraint(name, "deliveries", type_="foreignkey")
    op.drop_index("ix_deliveries_message_id", table_name="deliveries")
    _partial_index("ix_deliveries_message_id", ["message_id"], _HAS_MESSAGE_ID)


def downgrade() -> None:
    # Rows a cascade would have removed (none, if every contact delete went through the
    # service) would make the foreign key fail to validate.
    op.execute(
        "DELETE FROM deliveries WHERE contact_id IS NOT NULL "
        "AND contact_id NOT IN (SELECT id FROM contacts)"
    )
    op.execute("DELETE FROM deliveries WHERE workspace_id NOT IN (SELECT id FROM workspaces)")
    if _sqlite():
        with op.batch_alter_table(
            "events", recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
        _rebuild_sqlite_deliveries(drop=False)
        return
    op.drop_index("ix_deliveries_message_id", table_name="deliveries")
    _partial_index("ix_deliveries_message_id", ["message_id"], None)
    for name, column, table in _FOREIGN_KEYS:
        op.create_foreign_key(name, "deliveries", table, [column], ["id"], ondelete="CASCADE")
