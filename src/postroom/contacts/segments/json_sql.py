"""Attribute predicates (``contacts.attributes``) in SQL, one class per database.

Every expression here is TRUE or FALSE, never NULL (so ``NOT`` of it is the exact
complement), and never raises, whatever JSON a contact holds: each comparison sits behind a
test of the JSON type (``jsonb_typeof`` on PostgreSQL, ``json_type`` on SQLite), and on
PostgreSQL, which does not promise to evaluate ``AND`` left to right, every operation that
could fail on the wrong type is guarded inside a CASE instead.
"""

from __future__ import annotations

import operator
from typing import Any, Final, Protocol

from sqlalchemy import (
    String,
    Text,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from postroom.contacts.segments.iso_dates import sql_instant_key
from postroom.contacts.segments.predicates import Scalar
from postroom.models.contacts import Contact

_MISSING: Final = "missing"


def like_escape(text: str) -> str:
    """``text`` as a literal piece of a LIKE pattern with ``ESCAPE '\\'``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class JsonSql(Protocol):
    def exists(self, path: tuple[str, ...]) -> ColumnElement[bool]: ...

    def equals(self, path: tuple[str, ...], value: Scalar) -> ColumnElement[bool]: ...

    def contains(self, path: tuple[str, ...], value: Scalar) -> ColumnElement[bool]: ...

    def starts_with(self, path: tuple[str, ...], prefix: str) -> ColumnElement[bool]: ...

    def compare_number(
        self, path: tuple[str, ...], op: str, number: int | float
    ) -> ColumnElement[bool]: ...

    def compare_instant(
        self, path: tuple[str, ...], op: str, micros: int
    ) -> ColumnElement[bool]: ...


def _compare(left: ColumnElement[Any], op: str, right: Any) -> ColumnElement[bool]:
    comparisons = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
    result: ColumnElement[bool] = comparisons[op](left, right)
    return result


def _nested(path: tuple[str, ...], value: Any) -> Any:
    for key in reversed(path):
        value = {key: value}
    return value


class PostgresJson:
    def _value(self, path: tuple[str, ...]) -> ColumnElement[Any]:
        return func.jsonb_extract_path(Contact.attributes, *path, type_=JSONB)

    def _text(self, path: tuple[str, ...]) -> ColumnElement[str]:
        return func.jsonb_extract_path_text(Contact.attributes, *path, type_=Text)

    def _type(self, path: tuple[str, ...]) -> ColumnElement[str]:
        return func.coalesce(func.jsonb_typeof(self._value(path)), _MISSING)

    def _folded(self, text: ColumnElement[str]) -> ColumnElement[str]:
        # The C collation makes lower() fold A-Z only, as SQLite's does (predicates.ascii_fold).
        return func.lower(text.collate("C"))

    def _contains_json(self, document: Any) -> ColumnElement[bool]:
        # Containment keeps JSON types apart and may use a GIN index.
        return Contact.attributes.op("@>", is_comparison=True)(literal(document, JSONB))

    def exists(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return self._type(path).not_in([_MISSING, "null"])

    def equals(self, path: tuple[str, ...], value: Scalar) -> ColumnElement[bool]:
        return self._contains_json(_nested(path, value))

    def contains(self, path: tuple[str, ...], value: Scalar) -> ColumnElement[bool]:
        if not isinstance(value, str):
            return self._contains_json(_nested(path, [value]))
        kind = self._type(path)
        as_array = case((kind == "array", self._value(path)), else_=literal([], JSONB))
        element = func.jsonb_array_elements(as_array).table_valued("value").alias("element")
        element_text = element.c.value.op("#>>")(literal_column("'{}'"))
        return or_(
            and_(
                kind == "string",
                self._folded(self._text(path)).like(f"%{like_escape(value)}%", escape="\\"),
            ),
            exists(
                select(1)
                .select_from(element)
                .where(
                    func.jsonb_typeof(element.c.value) == "string",
                    self._folded(element_text) == value,
                )
            ),
        )

    def starts_with(self, path: tuple[str, ...], prefix: str) -> ColumnElement[bool]:
        return and_(
            self._type(path) == "string",
            self._folded(self._text(path)).like(f"{like_escape(prefix)}%", escape="\\"),
        )

    def compare_number(
        self, path: tuple[str, ...], op: str, number: int | float
    ) -> ColumnElement[bool]:
        # jsonb orders numbers numerically; the type test keeps strings out.
        value = self._value(path)
        right = literal(number, JSONB)
        return and_(self._type(path) == "number", value.op(_SQL_OPS[op], is_comparison=True)(right))

    def compare_instant(self, path: tuple[str, ...], op: str, micros: int) -> ColumnElement[bool]:
        key = sql_instant_key(self._text(path), "postgresql")
        return func.coalesce(_compare(key, op, micros), false())


class SqliteJson:
    def _path(self, path: tuple[str, ...]) -> ColumnElement[str]:
        # Keys are checked to hold no '"' or '\' (schema._valid_key), so quoting is enough.
        return literal("$" + "".join(f'."{key}"' for key in path), String)

    def _value(self, path: tuple[str, ...]) -> ColumnElement[Any]:
        return func.json_extract(Contact.attributes, self._path(path))

    def _type(self, path: tuple[str, ...]) -> ColumnElement[str]:
        return func.coalesce(func.json_type(Contact.attributes, self._path(path)), _MISSING)

    def _typed(self, path: tuple[str, ...], value: Scalar) -> ColumnElement[bool]:
        kind = self._type(path)
        if isinstance(value, bool):
            return kind == ("true" if value else "false")
        if isinstance(value, str):
            return and_(kind == "text", self._value(path) == value)
        return and_(kind.in_(["integer", "real"]), self._value(path) == value)

    def exists(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return self._type(path).not_in([_MISSING, "null"])

    def equals(self, path: tuple[str, ...], value: Scalar) -> ColumnElement[bool]:
        return self._typed(path, value)

    def contains(self, path: tuple[str, ...], value: Scalar) -> ColumnElement[bool]:
        element = (
            func.json_each(Contact.attributes, self._path(path))
            .table_valued("value", "type")
            .alias("element")
        )
        if isinstance(value, bool):
            element_matches = element.c.type == ("true" if value else "false")
        elif isinstance(value, str):
            element_matches = and_(element.c.type == "text", func.lower(element.c.value) == value)
        else:
            element_matches = and_(
                element.c.type.in_(["integer", "real"]), element.c.value == value
            )
        # json_each over a scalar yields the scalar itself: the array test comes first.
        in_array = and_(
            self._type(path) == "array",
            exists(select(1).select_from(element).where(element_matches)),
        )
        if not isinstance(value, str):
            return in_array
        in_text = and_(
            self._type(path) == "text",
            func.lower(self._value(path)).like(f"%{like_escape(value)}%", escape="\\"),
        )
        return or_(in_text, in_array)

    def starts_with(self, path: tuple[str, ...], prefix: str) -> ColumnElement[bool]:
        return and_(
            self._type(path) == "text",
            func.lower(self._value(path)).like(f"{like_escape(prefix)}%", escape="\\"),
        )

    def compare_number(
        self, path: tuple[str, ...], op: str, number: int | float
    ) -> ColumnElement[bool]:
        return and_(
            self._type(path).in_(["integer", "real"]), _compare(self._value(path), op, number)
        )

    def compare_instant(self, path: tuple[str, ...], op: str, micros: int) -> ColumnElement[bool]:
        key = sql_instant_key(self._value(path), "sqlite")
        return func.coalesce(_compare(key, op, micros), false())


_SQL_OPS: Final = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def json_sql(dialect_name: str) -> JsonSql:
    if dialect_name == "postgresql":
        return PostgresJson()
    if dialect_name == "sqlite":
        return SqliteJson()
    raise ValueError(f"unsupported database dialect: {dialect_name}")
