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

from postroom.contacts.segments.iso_dates import Instant, sql_instant_text
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
        self, path: tuple[str, ...], op: str, instant: Instant
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

    def compare_instant(
        self, path: tuple[str, ...], op: str, instant: Instant
    ) -> ColumnElement[bool]:
        # Fixed-width UTC texts compare as instants, byte by byte (the C collation).
        moment = sql_instant_text(self._text(path), "postgresql").collate("C")
        return func.coalesce(_compare(moment, op, instant.utc_text()), false())


class SqliteJson:
    """SQLite parses the JSON again at every call, so each predicate starts with the one
    test that decides most rows (the value itself) and reads the type only for the rows
    that pass it; ``IS`` and ``coalesce`` keep the result TRUE or FALSE."""

    def _path(self, path: tuple[str, ...]) -> ColumnElement[str]:
        # Keys are checked to hold no '"' or '\' (schema._valid_key), so quoting is enough.
        return literal("$" + "".join(f'."{key}"' for key in path), String)

    def _value(self, path: tuple[str, ...]) -> ColumnElement[Any]:
        return func.json_extract(Contact.attributes, self._path(path))

    def _raw_type(self, path: tuple[str, ...]) -> ColumnElement[str]:
        """NULL when the key is missing; only read once the value matched."""
        return func.json_type(Contact.attributes, self._path(path))

    def _type(self, path: tuple[str, ...]) -> ColumnElement[str]:
        return func.coalesce(self._raw_type(path), _MISSING)

    def exists(self, path: tuple[str, ...]) -> ColumnElement[bool]:
        return self._type(path).not_in([_MISSING, "null"])

    def equals(self, path: tuple[str, ...], value: Scalar) -> ColumnElement[bool]:
        if isinstance(value, bool):
            return self._raw_type(path).is_not_distinct_from("true" if value else "false")
        # json_extract gives a JSON true as 1 and an array as its text: the type decides.
        kinds = ["text"] if isinstance(value, str) else ["integer", "real"]
        return and_(self._value(path).is_not_distinct_from(value), self._raw_type(path).in_(kinds))

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
        return or_(self._text_like(path, f"%{like_escape(value)}%"), in_array)

    def starts_with(self, path: tuple[str, ...], prefix: str) -> ColumnElement[bool]:
        return self._text_like(path, f"{like_escape(prefix)}%")

    def _text_like(self, path: tuple[str, ...], pattern: str) -> ColumnElement[bool]:
        matched = func.lower(self._value(path)).like(pattern, escape="\\")
        return and_(func.coalesce(matched, false()), self._raw_type(path) == "text")

    def compare_number(
        self, path: tuple[str, ...], op: str, number: int | float
    ) -> ColumnElement[bool]:
        # SQLite orders any text above any number: the type test keeps strings out.
        compared = func.coalesce(_compare(self._value(path), op, number), false())
        return and_(compared, self._raw_type(path).in_(["integer", "real"]))

    def compare_instant(
        self, path: tuple[str, ...], op: str, instant: Instant
    ) -> ColumnElement[bool]:
        # The date test reads the value a dozen times; from a derived table SQLite extracts
        # it once per contact (40% faster). PostgreSQL's scalar subquery would cost more.
        extracted = select(self._value(path).label("value")).correlate(Contact).subquery()
        moment = sql_instant_text(extracted.c.value, "sqlite")
        compared = select(_compare(moment, op, instant.utc_text())).select_from(extracted)
        return func.coalesce(compared.scalar_subquery(), false())


_SQL_OPS: Final = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def json_sql(dialect_name: str) -> JsonSql:
    if dialect_name == "postgresql":
        return PostgresJson()
    if dialect_name == "sqlite":
        return SqliteJson()
    raise ValueError(f"unsupported database dialect: {dialect_name}")
