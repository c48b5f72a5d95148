"""Re-encrypt every stored secret under the current key (``postroom secrets rotate``).

Each domain that stores an encrypted column lists it in ``ENCRYPTED_COLUMNS`` as
(ORM model or Table, primary key column name, secret column name). Values are read and rewritten in
batches; a value already under the current key is left alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.security.secret_box import SecretBox

ENCRYPTED_COLUMNS: list[tuple[Any, str, str]] = []


def register_encrypted_column(model: Any, pk: str, column: str) -> None:
    entry = (model, pk, column)
    if entry not in ENCRYPTED_COLUMNS:
        ENCRYPTED_COLUMNS.append(entry)


async def rotate_stored_secrets(
    session: AsyncSession,
    box: SecretBox,
    columns: list[tuple[Any, str, str]] | None = None,
    batch: int = 500,
) -> int:
    rotated = 0
    for model, pk_name, column_name in columns if columns is not None else ENCRYPTED_COLUMNS:
        table = getattr(model, "__table__", model)
        pk = table.c[pk_name]
        column = table.c[column_name]
        last: Any = None
        while True:
            query = select(pk, column).where(column.is_not(None)).order_by(pk).limit(batch)
            if last is not None:
                query = query.where(pk > last)
            rows = (await session.execute(query)).all()
            if not rows:
                break
            for key, value in rows:
                if not box.is_current(value):
                    await session.execute(
                        update(table).where(pk == key).values({column_name: box.rotate(value)})
                    )
                    rotated += 1
            last = rows[-1][0]
    return rotated
