"""Set-based contact upsert: the one path for the API (single and bulk) and imports.

A batch is resolved against the database with ONE query, then written with one multi-row
INSERT and one executemany UPDATE per shape of provided fields — never one ORM object per
row. Rules:

- a row matches by ``external_id`` when it has one, else by email (case-insensitive);
- an external id and an email that point at two different contacts is a conflict, and so
  is an email whose contact already carries another external id: the row fails, the
  others go on;
- only provided fields change; attributes are merged key by key (a ``None`` value deletes
  the key), never replaced wholesale;
- ``bounced`` and ``complained`` are facts reported by mailbox providers: an upsert never
  turns them back into ``subscribed`` (an explicit PATCH of ``status`` can);
- duplicates inside one batch are applied in order (the later row wins), by splitting the
  batch into rounds in which no key repeats.

Imports use ``upsert_prepared``: rows already encoded for the database by
``import_batches`` (one document or one executemany per batch), with the same rules; the
rows whose insert collided are turned back into contacts and resolved as above.

On PostgreSQL the matched rows are locked (``FOR UPDATE``, in id order so concurrent
batches cannot deadlock) so the attribute merge never loses a concurrent write; on SQLite
the write transaction already holds the database lock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from postroom.contacts.contact_fields import ContactInput
from postroom.contacts.import_batches import PREPARED_COLUMNS, PreparedRows
from postroom.events.service import record_many
from postroom.ids import uuid7
from postroom.models.contacts import Contact, email_hash

CONTACTS = cast(Table, Contact.__table__)
# Prepared rows (imports, see import_batches): the batch's workspace, time and consent time
# and the status default come from the statement. Column N of a row is r->N / ?N+1.
_PREPARED_INSERT_COLUMNS = ", ".join(
    (*PREPARED_COLUMNS, "workspace_id", "consent_at", "created_at", "updated_at")
)
_OPT_IN, _CONSENT_SOURCE = (
    PREPARED_COLUMNS.index("opt_in"),
    PREPARED_COLUMNS.index("consent_source"),
)
_PG_VALUE = {
    "id": "(r->>{i})::uuid",
    "attributes": "r->{i}",
    "status": "COALESCE(r->>{i}, 'subscribed')",
    "opt_in": "(r->>{i})::boolean",
}
_PG_PREPARED_INSERT = (
    f"WITH inserted AS (INSERT INTO contacts ({_PREPARED_INSERT_COLUMNS}) SELECT "
    + ", ".join(_PG_VALUE.get(n, "r->>{i}").format(i=i) for i, n in enumerate(PREPARED_COLUMNS))
    + ", CAST(:workspace_id AS uuid), "
    f"CASE WHEN r->>{_OPT_IN} IS NOT NULL OR r->>{_CONSENT_SOURCE} IS NOT NULL "
    "THEN CAST(:now AS timestamptz) END, CAST(:now AS timestamptz), CAST(:now AS timestamptz) "
    "FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS e(r) "
    "ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM inserted"
)
_SQLITE_PREPARED_INSERT = (
    f"INSERT OR IGNORE INTO contacts ({_PREPARED_INSERT_COLUMNS}) VALUES ("
    + ", ".join(
        f"COALESCE(?{i + 1}, 'subscribed')" if n == "status" else f"?{i + 1}"
        for i, n in enumerate(PREPARED_COLUMNS)
    )
    + ", '{workspace}', "
    f"CASE WHEN ?{_OPT_IN + 1} IS NOT NULL OR ?{_CONSENT_SOURCE + 1} IS NOT NULL "
    "THEN '{now}' END, '{now}', '{now}')"
)

# The columns of a new contact row and their PostgreSQL types (see _insert_postgresql).
NEW_ROW_TYPES = {
    "id": "uuid",
    "workspace_id": "uuid",
    "email": "text",
    "email_key": "text",
    "email_hash": "text",
    "external_id": "text",
    "first_name": "text",
    "last_name": "text",
    "phone": "text",
    "locale": "text",
    "timezone": "text",
    "attributes": "jsonb",
    "status": "text",
    "opt_in": "boolean",
    "consent_source": "text",
    "consent_version": "text",
    "consent_at": "timestamptz",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
}
NEW_ROW_COLUMNS_SQL = ", ".join(NEW_ROW_TYPES)
PG_RECORD_TYPES = ", ".join(f"{name} {kind}" for name, kind in NEW_ROW_TYPES.items())
SQLITE_EXTRACTS = ", ".join(
    f"json_extract(value, '$.{name}')"
    if name != "attributes"
    else "json_extract(value, '$.attributes')"
    for name in NEW_ROW_TYPES
)
# SQLAlchemy's storage format for DateTime on SQLite (always six fractional digits, so
# string comparison is time order).
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def _json_row(
    values: dict[str, Any], stamps: dict[datetime, str], *, sqlite: bool
) -> dict[str, Any]:
    """A new contact row as JSON values in the database's storage formats. ``stamps``
    memoises formatted times (a batch shares one ``now``)."""
    out = dict(values)
    for name in ("id", "workspace_id"):
        out[name] = values[name].hex if sqlite else str(values[name])
    for name in ("consent_at", "created_at", "updated_at"):
        moment = values[name]
        if moment is not None:
            text_value = stamps.get(moment)
            if text_value is None:
                utc_moment = moment.astimezone(UTC)
                text_value = (
                    utc_moment.replace(tzinfo=None).strftime(SQLITE_DATETIME)
                    if sqlite
                    else utc_moment.isoformat()
                )
                stamps[moment] = text_value
            out[name] = text_value
    return out


PROVIDER_STATUSES = frozenset({"bounced", "complained"})
# Columns an upsert may set from a ContactInput (email is handled on its own).
PLAIN_FIELDS = (
    "external_id",
    "first_name",
    "last_name",
    "phone",
    "locale",
    "timezone",
    "opt_in",
    "consent_source",
    "consent_version",
)


@dataclass(slots=True)
class RowOutcome:
    index: int
    status: Literal["created", "updated", "failed"]
    contact_id: uuid.UUID | None = None
    field: str | None = None
    message: str | None = None
    code: str | None = None


@dataclass(slots=True)
class _Existing:
    id: uuid.UUID
    email_key: str
    external_id: str | None
    status: str
    attributes: dict[str, Any]


def merge_attributes(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _status_from(row: ContactInput) -> str | None:
    if row.status is not None:
        return row.status
    if row.subscribed is not None:
        return "subscribed" if row.subscribed else "unsubscribed"
    return None


def _rounds(rows: Sequence[ContactInput]) -> list[list[int]]:
    """Split row indexes into rounds in which no email or external id repeats."""
    rounds: list[list[int]] = []
    used: list[set[str]] = []
    for index, row in enumerate(rows):
        keys = {"e:" + row.email_key} | ({"x:" + row.external_id} if row.external_id else set())
        for slot, seen in enumerate(used):
            if not keys & seen:
                rounds[slot].append(index)
                seen.update(keys)
                break
        else:
            rounds.append([index])
            used.append(set(keys))
    return rounds


class ContactUpserter:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID, now: datetime) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.dialect = session.bind.dialect.name if session.bind else "sqlite"

    async def upsert(
        self, rows: Sequence[ContactInput], *, emit_events: bool = True
    ) -> list[RowOutcome]:
        outcomes: dict[int, RowOutcome] = {}
        pending = _rounds(rows)
        attempts = 0
        while pending:
            round_indexes = pending.pop(0)
            retry = await self._round(rows, round_indexes, outcomes)
            if retry:
                attempts += 1
                if attempts > 3:  # a pathological race; report rather than loop
                    for index in retry:
                        outcomes[index] = RowOutcome(
                            index,
                            "failed",
                            field="email",
                            message="changed concurrently; retry",
                            code="conflict",
                        )
                else:
                    pending.insert(0, retry)
        ordered = [outcomes[i] for i in range(len(rows))]
        if emit_events:
            await self._events(ordered)
        return ordered

    async def upsert_prepared(self, batch: PreparedRows) -> dict[int, RowOutcome]:
        """Upsert a prepared batch (no key repeats in it, see :class:`BatchEncoder`).

        Returns the outcomes of the rows that were NOT created with their prepared id (the
        updated and failed ones, and any created on a second attempt): on a fresh import,
        an empty dict after one statement.
        """
        count = len(batch.ids)
        if not count:
            return {}
        if await self._insert_prepared(batch) == count:
            return {}
        inserted = await self._present(batch.ids)
        pending = [index for index, hex_id in enumerate(batch.ids) if hex_id not in inserted]
        rows = batch.contacts()
        outcomes: dict[int, RowOutcome] = {}
        retry = await self._resolve(rows, pending, outcomes)
        attempts = 0
        while retry:
            attempts += 1
            if attempts > 3:  # a pathological race; report rather than loop
                for index in retry:
                    outcomes[index] = RowOutcome(
                        index,
                        "failed",
                        field="email",
                        message="changed concurrently; retry",
                        code="conflict",
                    )
                break
            retry = await self._round(rows, retry, outcomes)
        return outcomes

    async def _insert_prepared(self, batch: PreparedRows) -> int:
        """Insert the rows, skipping any whose email or external id exists; the count."""
        if self.dialect == "postgresql":
            # One JSON document unpacked by the server (jsonb arrays index in O(1)).
            result = await self.session.execute(
                text(_PG_PREPARED_INSERT),
                {"rows": batch.document, "workspace_id": str(self.workspace_id), "now": self.now},
            )
            return int(result.scalar_one())
        # SQLite: executemany of the ready tuples, bound in C. The workspace and time are
        # literals (hex digits; a formatted time) in SQLAlchemy's storage formats.
        now = self.now.astimezone(UTC).replace(tzinfo=None).strftime(SQLITE_DATETIME)
        statement_sql = _SQLITE_PREPARED_INSERT.format(workspace=self.workspace_id.hex, now=now)
        connection = await self.session.connection()
        result = await connection.exec_driver_sql(statement_sql, batch.rows or [])
        return int(result.rowcount)

    async def _present(self, hex_ids: list[str]) -> set[str]:
        ids = [uuid.UUID(hex_id) for hex_id in hex_ids]
        found = await self.session.execute(select(Contact.id).where(Contact.id.in_(ids)))
        return {contact_id.hex for contact_id in found.scalars()}

    async def _fetch(self, rows: Sequence[ContactInput], indexes: list[int]) -> list[_Existing]:
        emails = list({rows[i].email_key for i in indexes})
        external = list({rows[i].external_id for i in indexes if rows[i].external_id})
        condition: ColumnElement[bool] = Contact.email_key.in_(emails)
        if external:
            condition = or_(condition, Contact.external_id.in_(external))
        query = (
            select(
                Contact.id,
                Contact.email_key,
                Contact.external_id,
                Contact.status,
                Contact.attributes,
            )
            .where(Contact.workspace_id == self.workspace_id, condition)
            .order_by(Contact.id)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update()
        result = await self.session.execute(query)
        return [_Existing(*row) for row in result.all()]

    async def _round(
        self, rows: Sequence[ContactInput], indexes: list[int], outcomes: dict[int, RowOutcome]
    ) -> list[int]:
        # Insert first: on a fresh import nearly every row is new, so the batch costs one
        # statement. Rows that collide with an existing email or external id come back
        # and are matched (and locked) below.
        fresh = [(index, self._new_values(rows[index])) for index in indexes]
        indexes = await self._insert(fresh, outcomes)
        if not indexes:
            return []
        return await self._resolve(rows, indexes, outcomes)

    async def _resolve(
        self, rows: Sequence[ContactInput], indexes: list[int], outcomes: dict[int, RowOutcome]
    ) -> list[int]:
        """Rows whose insert collided: match them (locked) and update, or report a conflict.
        Returns the rows to try again (a match vanished and its re-insert collided)."""
        existing = await self._fetch(rows, indexes)
        by_email = {e.email_key: e for e in existing}
        by_external = {e.external_id: e for e in existing if e.external_id}
        creates: list[tuple[int, dict[str, Any]]] = []
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        updated_ids: dict[int, uuid.UUID] = {}
        for index in indexes:
            row = rows[index]
            match_ext = by_external.get(row.external_id) if row.external_id else None
            match_email = by_email.get(row.email_key)
            if match_ext and match_email and match_ext.id != match_email.id:
                outcomes[index] = RowOutcome(
                    index,
                    "failed",
                    field="external_id",
                    message=(
                        f"external_id '{row.external_id}' belongs to contact {match_ext.id} but "
                        f"{row.email} belongs to contact {match_email.id}"
                    ),
                    code="conflict",
                )
                continue
            target = match_ext or match_email
            if (
                target is match_email
                and target is not None
                and row.external_id
                and target.external_id not in (None, row.external_id)
            ):
                outcomes[index] = RowOutcome(
                    index,
                    "failed",
                    field="external_id",
                    message=(
                        f"{row.email} belongs to contact {target.id}, whose external_id is "
                        f"'{target.external_id}', not '{row.external_id}'"
                    ),
                    code="conflict",
                )
                continue
            if target is None:
                # It collided a moment ago but is gone now (deleted concurrently).
                creates.append((index, self._new_values(row)))
                continue
            values = self._update_values(row, target)
            shape = tuple(sorted(values))
            updates.setdefault(shape, []).append({"_id": target.id, **values})
            updated_ids[index] = target.id

        for shape, params in updates.items():
            table = CONTACTS
            statement = (
                update(table)
                .where(table.c.id == bindparam("_id"))
                .values({name: bindparam(name) for name in shape})
            )
            await self.session.execute(statement, params)
        for index, contact_id in updated_ids.items():
            outcomes[index] = RowOutcome(index, "updated", contact_id)
        return await self._insert(creates, outcomes)

    def _new_values(self, row: ContactInput) -> dict[str, Any]:
        values: dict[str, Any] = {name: getattr(row, name) for name in PLAIN_FIELDS}
        values.update(
            id=uuid7(),
            workspace_id=self.workspace_id,
            email=row.email,
            email_key=row.email_key,
            email_hash=email_hash(row.email_key),
            attributes={k: v for k, v in row.attributes.items() if v is not None},
            status=_status_from(row) or "subscribed",
            consent_at=self.now if row.opt_in is not None or row.consent_source else None,
            created_at=self.now,
            updated_at=self.now,
        )
        return values

    def _update_values(self, row: ContactInput, target: _Existing) -> dict[str, Any]:
        values: dict[str, Any] = {"updated_at": self.now}
        for name in PLAIN_FIELDS:
            value = getattr(row, name)
            if value is not None:
                values[name] = value
        if row.email_key != target.email_key:
            values.update(
                email=row.email, email_key=row.email_key, email_hash=email_hash(row.email_key)
            )
        elif row.email:
            values["email"] = row.email
        status = _status_from(row)
        if status is not None and target.status not in PROVIDER_STATUSES:
            values["status"] = status
        if row.attributes:
            values["attributes"] = merge_attributes(target.attributes or {}, row.attributes)
        if row.opt_in is not None or row.consent_source:
            values["consent_at"] = self.now
        return values

    async def _insert(
        self, creates: list[tuple[int, dict[str, Any]]], outcomes: dict[int, RowOutcome]
    ) -> list[int]:
        """Insert new contacts, skipping any key a concurrent writer inserted meanwhile
        (those rows are returned for another round, where they become updates)."""
        if not creates:
            return []
        rows = [values for _, values in creates]
        if self.dialect == "postgresql":
            inserted = await self._insert_postgresql(rows)
        else:
            inserted = await self._insert_sqlite(rows)
        retry: list[int] = []
        for index, values in creates:
            if values["id"] in inserted:
                outcomes[index] = RowOutcome(index, "created", values["id"])
            else:
                retry.append(index)
        return retry

    async def _insert_postgresql(self, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
        # The whole batch travels as ONE JSON document that the server turns back into
        # rows: no per-row bind processing in Python, and no statement with tens of
        # thousands of placeholders for the driver to parse.
        statement = text(
            f"INSERT INTO contacts ({NEW_ROW_COLUMNS_SQL}) "
            f"SELECT {NEW_ROW_COLUMNS_SQL} FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
            f"AS r({PG_RECORD_TYPES}) ON CONFLICT DO NOTHING RETURNING id"
        )
        stamps: dict[datetime, str] = {}
        document = json.dumps([_json_row(row, stamps, sqlite=False) for row in rows], default=str)
        result = await self.session.execute(statement, {"rows": document})
        return {row[0] for row in result.all()}

    async def _insert_sqlite(self, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
        # The same single JSON document, unpacked by json_each in SQLite's C code; values
        # are written in exactly the storage formats SQLAlchemy's types use on SQLite.
        stamps: dict[datetime, str] = {}
        document = json.dumps([_json_row(row, stamps, sqlite=True) for row in rows], default=str)
        statement = text(
            f"INSERT OR IGNORE INTO contacts ({NEW_ROW_COLUMNS_SQL}) "
            f"SELECT {SQLITE_EXTRACTS} FROM json_each(:rows)"
        )
        result = await self.session.execute(statement, {"rows": document})
        ids = [row["id"] for row in rows]
        if int(getattr(result, "rowcount", -1)) == len(rows):
            return set(ids)
        found = await self.session.execute(select(Contact.id).where(Contact.id.in_(ids)))
        return set(found.scalars())

    async def _events(self, outcomes: list[RowOutcome]) -> None:
        rows = [
            {
                "workspace_id": self.workspace_id,
                "type": f"contact.{o.status}",
                "contact_id": o.contact_id,
                "resource_type": "contact",
                "resource_id": o.contact_id,
                "occurred_at": self.now,
            }
            for o in outcomes
            if o.status != "failed"
        ]
        await record_many(self.session, rows)
