"""CSV cells computed by the database, so the export loop only hands tuples of text to the
C csv writer.

Formatting a million rows cell by cell in Python (timestamps, JSON attributes, the formula
guard) cost four times the bare read; the same rules written as SQL expressions run inside
the query on both databases. The rules are exactly those of :mod:`export_writer`:

- text: a value whose first character after any leading ``'`` is one of ``= + - @ TAB CR``
  gets one more leading ``'`` (the importer takes exactly one off);
- timestamps: RFC 3339 UTC with ``Z``, microseconds only when not zero (as
  ``datetime.isoformat`` writes them);
- attributes: strings as text (guarded), numbers as their JSON literal, booleans
  ``true``/``false``, ``null`` and missing keys empty, objects and arrays as JSON text.

Two renderings differ from the Python encoder on PostgreSQL only, both still readable by the
importer: ``jsonb`` normalises numbers (``1e20`` comes out as ``100000000000000000000``) and
prints objects with a space after ``:`` and ``,``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import String, case, cast, func, literal, select, type_coerce
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from postroom.contacts.export_writer import EXPORT_COLUMNS
from postroom.models.contacts import Contact

_TIMESTAMPS = ("created_at", "updated_at")
Text = ColumnElement[str]


def _guarded(value: Text, dialect: str) -> Text:
    """SQL for ``neutralise_cell(value)``; NULL stays NULL (an empty cell)."""
    char = func.char if dialect == "sqlite" else func.chr
    first = func.substr(func.ltrim(value, "'"), 1, 1)
    triggers = [literal("="), literal("+"), literal("-"), literal("@"), char(9), char(13)]
    return case((first.in_(triggers), literal("'") + value), else_=value)


def _timestamp(column: ColumnElement[Any], dialect: str) -> Text:
    if dialect == "sqlite":
        # Stored as naive UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
        stored = type_coerce(column, String)
        whole = func.substr(stored, 1, 10) + "T" + func.substr(stored, 12, 8) + "Z"
        fraction = func.substr(stored, 1, 10) + "T" + func.substr(stored, 12) + "Z"
        return case(
            (stored.is_(None), None),
            (func.substr(stored, 20).in_(["", ".000000"]), whole),
            else_=fraction,
        )
    utc = func.timezone("UTC", column)
    micros = case((func.date_trunc("second", column) == column, ""), else_=func.to_char(utc, ".US"))
    return func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS') + micros + "Z"


def _attribute(key: str, kind: str | None, dialect: str) -> Text:
    attributes = type_coerce(Contact.attributes, String)
    if kind in ("number", "boolean"):
        # Every value of the key has this JSON type: its JSON text is the cell, with one
        # JSON lookup per row instead of one per CASE branch.
        if dialect == "sqlite":
            return attributes.op("->", return_type=String)(literal(f'$."{key}"', String))
        return attributes.op("->>", return_type=String)(literal(key, String))
    if dialect == "sqlite":
        # SQLite's JSON paths quote a label but cannot escape inside it: keys holding '"'
        # take the Python encoder instead (see ``sql_renderable``).
        path = literal(f'$."{key}"', String)
        as_json = attributes.op("->", return_type=String)(path)
        as_text = attributes.op("->>", return_type=String)(path)
        return case(
            (func.json_type(attributes, path) == "text", _guarded(as_text, dialect)),
            (func.json_type(attributes, path) == "null", None),
            (func.json_type(attributes, path).in_(["object", "array"]), _guarded(as_json, dialect)),
            else_=as_json,
        )
    member = attributes.op("->", return_type=String)(literal(key, String))
    member_text = attributes.op("->>", return_type=String)(literal(key, String))
    json_kind = func.jsonb_typeof(member)
    return case(
        (json_kind == "string", _guarded(member_text, dialect)),
        (json_kind == "null", None),
        else_=cast(member, String),
    )


def sql_renderable(attribute_keys: Sequence[str]) -> bool:
    """Whether every key can be addressed by a JSON path on both databases."""
    return not any('"' in key for key in attribute_keys)


def csv_cells_query(
    where: ColumnElement[bool],
    attribute_keys: Sequence[str],
    dialect: str,
    attribute_types: Mapping[str, str] | None = None,
) -> Select[Any]:
    """``SELECT id as text, <one text cell per CSV column>`` over the contacts of
    ``where``, in id order; the caller adds the keyset condition and the limit."""
    cells: list[ColumnElement[Any]] = []
    for name in EXPORT_COLUMNS:
        column = getattr(Contact, name)
        if name in _TIMESTAMPS:
            cells.append(_timestamp(column, dialect).label(name))
        else:
            cells.append(_guarded(type_coerce(column, String), dialect).label(name))
    for index, key in enumerate(attribute_keys):
        kind = (attribute_types or {}).get(key)
        cells.append(_attribute(key, kind, dialect).label(f"attr_{index}"))
    return (
        select(type_coerce(Contact.id, String).label("id_text"), *cells)
        .where(where)
        .order_by(Contact.id)
    )
