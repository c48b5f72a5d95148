"""Contact exports: the one code path behind the API job and ``postroom export``.

Contacts are read in keyset pages by id (no long-lived cursor, the same on SQLite and
PostgreSQL) and encoded by ``export_writer`` into ~64 KB chunks handed to a sink, so memory
stays flat whatever the size. An export is a backup, not an audience: by default it holds
every contact, whatever their status.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Row, exists, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from postroom.contacts.export_sql import csv_cells_query, sql_renderable
from postroom.contacts.export_writer import (
    EXPORT_COLUMNS,
    CsvCellsEncoder,
    csv_export_chunks_async,
    jsonl_export_chunks_async,
)
from postroom.contacts.segments.compiler import compile_filter
from postroom.contacts.segments.schema import parse_filter
from postroom.context import AppContext
from postroom.models.contacts import Contact, Subscription

PAGE_SIZE = 5000
# JSON value types as jsonb_typeof (PostgreSQL) and json_each.type (SQLite) name them.
JSON_KINDS = {
    "number": "number",
    "integer": "number",
    "real": "number",
    "boolean": "boolean",
    "true": "boolean",
    "false": "boolean",
}
ExportFormat = Literal["csv", "jsonl"]
Sink = Callable[[bytes], Awaitable[None]]
_COLUMNS = [getattr(Contact, name) for name in EXPORT_COLUMNS]


@dataclass(slots=True)
class ExportSelection:
    list_id: uuid.UUID | None = None
    status: str | None = None
    filter: dict[str, Any] | None = None

    def where(self, workspace_id: uuid.UUID, ctx: AppContext) -> ColumnElement[bool]:
        condition: ColumnElement[bool] = Contact.workspace_id == workspace_id
        if self.status:
            condition = condition & (Contact.status == self.status)
        if self.list_id:
            condition = condition & exists().where(
                Subscription.contact_id == Contact.id,
                Subscription.list_id == self.list_id,
                Subscription.status == "subscribed",
            )
        if self.filter:
            compiled = compile_filter(
                parse_filter(self.filter), now=ctx.clock.now(), dialect_name=ctx.db.dialect
            )
            condition = condition & compiled
        return condition


class ContactExporter:
    def __init__(
        self, ctx: AppContext, workspace_id: uuid.UUID, selection: ExportSelection
    ) -> None:
        self.ctx = ctx
        self.workspace_id = workspace_id
        self.where = selection.where(workspace_id, ctx)
        self.rows = 0

    async def attribute_types(self) -> dict[str, str | None]:
        """Every attribute key in use with the one JSON type all its values share
        (``number`` / ``boolean``), or ``None`` when mixed or text: one pass, in SQL."""
        async with self.ctx.db.read_sessions() as session:
            if self.ctx.db.dialect == "postgresql":
                each = func.jsonb_each(Contact.attributes).table_valued("key", "value")
                kind: ColumnElement[Any] = func.jsonb_typeof(each.c.value)
            else:
                each = func.json_each(Contact.attributes).table_valued("key", "type")
                kind = each.c.type
            pairs = (
                select(each.c.key.label("key"), kind.label("kind"))
                .select_from(Contact)
                .join(each, text("1 = 1"))
                .where(self.where)
                .distinct()
                .subquery()
            )
            rows = (await session.execute(select(pairs.c.key, pairs.c.kind))).all()
        seen: dict[str, set[str]] = {}
        for key, found in rows:
            seen.setdefault(str(key), set()).add(JSON_KINDS.get(str(found), "text"))
        return {
            key: next(iter(kinds)) if len(kinds) == 1 and kinds <= {"number", "boolean"} else None
            for key, kinds in sorted(seen.items())
        }

    async def contacts(self) -> AsyncIterator[dict[str, Any]]:
        after: uuid.UUID | None = None
        while True:
            query = (
                select(Contact.id, Contact.attributes, *_COLUMNS)
                .where(self.where)
                .order_by(Contact.id)
                .limit(PAGE_SIZE)
            )
            if after is not None:
                query = query.where(Contact.id > after)
            async with self.ctx.db.read_sessions() as session:
                page = (await session.execute(query)).all()
            if not page:
                return
            for row in page:
                item = dict(zip(EXPORT_COLUMNS, row[2:], strict=True))
                item["attributes"] = row[1] or {}
                self.rows += 1
                yield item
            after = page[-1][0]

    async def csv_pages(
        self, attribute_keys: Sequence[str], attribute_types: Mapping[str, str] | None = None
    ) -> AsyncIterator[list[Row[Any]]]:
        """Pages of ready CSV cells (see :mod:`export_sql`). The next page is read while
        the caller writes this one, so the database and the encoder overlap."""
        query = csv_cells_query(self.where, attribute_keys, self.ctx.db.dialect, attribute_types)

        async def read(after: uuid.UUID | None) -> list[Row[Any]]:
            page_query = query.limit(PAGE_SIZE)
            if after is not None:
                page_query = page_query.where(Contact.id > after)
            async with self.ctx.db.read_sessions() as session:
                return list((await session.execute(page_query)).all())

        pending = asyncio.ensure_future(read(None))
        try:
            while True:
                page = await pending
                if not page:
                    return
                last = page[-1][0]
                after = last if isinstance(last, uuid.UUID) else uuid.UUID(str(last))
                pending = asyncio.ensure_future(read(after))
                self.rows += len(page)
                yield page
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending

    async def run(self, fmt: ExportFormat, sink: Sink) -> int:
        if fmt == "csv":
            types = await self.attribute_types()
            if not sql_renderable(list(types)):
                chunks = csv_export_chunks_async(
                    self.contacts(),
                    list(types),
                    attribute_types={k: v for k, v in types.items() if v is not None},
                )
                async for chunk in chunks:
                    await sink(chunk)
                return self.rows
            typed = {k: v for k, v in types.items() if v is not None}
            encoder = CsvCellsEncoder(list(types), typed)
            async for page in self.csv_pages(list(types), typed):
                if (piece := encoder.write_page(page)) is not None:
                    await sink(piece)
            if (piece := encoder.take(at_least=1)) is not None:
                await sink(piece)
            return self.rows
        async for chunk in jsonl_export_chunks_async(self.contacts()):
            await sink(chunk)
        return self.rows
