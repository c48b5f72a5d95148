"""A filter compiled to one SQL boolean expression over ``contacts``.

The result goes into a WHERE clause as it is, beside the caller's ``workspace_id`` test; no
row is filtered in Python. Semantics are those of ``schema`` (and of ``evaluate``, which the
tests hold this module to). Each predicate compiles to an expression that is TRUE or FALSE,
never NULL, so ``NOT`` (``notEquals`` and friends) is its exact complement: nullable columns
are tested ``IS NOT NULL`` first, attributes go through ``json_sql``.

Case-insensitive matching folds A-Z only (``predicates.ascii_fold``): ``lower()`` on SQLite,
``lower(x COLLATE "C")`` on PostgreSQL. User text inside LIKE patterns is escaped.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, exists, false, func, not_, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from postroom.contacts.segments.iso_dates import Instant
from postroom.contacts.segments.json_sql import JsonSql, json_sql, like_escape
from postroom.contacts.segments.predicates import (
    AllOf,
    AnyOf,
    Attribute,
    DateField,
    EmailField,
    EventActivity,
    ListMembership,
    Node,
    Not,
    Predicate,
    StatusField,
    TextField,
    instant_at,
)
from postroom.contacts.segments.schema import FilterCondition, filter_predicate
from postroom.models.contacts import Contact, Subscription
from postroom.models.delivery import Delivery, Send
from postroom.models.platform import Event

SUPPORTED_DIALECTS = ("postgresql", "sqlite")
_COMPARE: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def compile_filter(
    filter: FilterCondition,
    *,
    now: datetime,
    dialect_name: str,
) -> ColumnElement[bool]:
    """``filter`` as a boolean expression over ``Contact``; raises ``InvalidFilter``.

    ``now`` settles ``within``/``olderThan``. The ``list`` field compiles to an EXISTS over
    ``subscriptions``."""
    return compile_predicate(filter_predicate(filter), now=now, dialect_name=dialect_name)


def compile_predicate(node: Node, *, now: datetime, dialect_name: str) -> ColumnElement[bool]:
    if dialect_name not in SUPPORTED_DIALECTS:
        raise ValueError(f"unsupported database dialect: {dialect_name}")
    return _Compiler(now, dialect_name).node(node)


class _Compiler:
    def __init__(self, now: datetime, dialect_name: str) -> None:
        self.now = now
        self.dialect_name = dialect_name
        self.json: JsonSql = json_sql(dialect_name)

    def node(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, AllOf):
            return and_(true(), *(self.node(child) for child in node.children))
        if isinstance(node, AnyOf):
            return or_(false(), *(self.node(child) for child in node.children))
        if isinstance(node, Not):
            return not_(self.node(node.child))
        return self.predicate(node)

    def predicate(self, p: Predicate) -> ColumnElement[bool]:
        target = p.target
        if isinstance(target, Attribute):
            return self._attribute(p, target.path)
        if isinstance(target, EventActivity):
            return self._event(p, target)
        if isinstance(target, ListMembership):
            assert isinstance(p.value, tuple)
            return exists().where(
                Subscription.contact_id == Contact.id,
                Subscription.list_id.in_(p.value),
                Subscription.status == "subscribed",
            )
        if isinstance(target, DateField):
            column: InstrumentedAttribute[Any] = getattr(Contact, target.column)
            if p.op == "eq":
                assert isinstance(p.value, Instant)
                return column == p.value.to_datetime()
            moment = instant_at(p.value, self.now).to_datetime()
            return _ordering(column, p.op, moment)
        if isinstance(target, EmailField):
            return self._email(p)
        if isinstance(target, StatusField):
            if p.op == "in":
                assert isinstance(p.value, tuple)
                return Contact.status.in_(p.value)
            return Contact.status == p.value
        assert isinstance(target, TextField)
        return self._text_column(p, getattr(Contact, target.column))

    def _event(self, p: Predicate, target: EventActivity) -> ColumnElement[bool]:
        """A correlated EXISTS over the contact's events of that type (served by the index
        on ``(workspace_id, contact_id, type, occurred_at)``)."""
        conditions: list[ColumnElement[bool]] = [
            Event.workspace_id == Contact.workspace_id,
            Event.contact_id == Contact.id,
            Event.type == target.type,
        ]
        if p.op == "ge":
            conditions.append(Event.occurred_at >= instant_at(p.value, self.now).to_datetime())
        if target.campaign_id is not None:
            # Engagement events point at the delivery they are about; keep the deliveries
            # of the campaign's sends to this contact.
            of_campaign = (
                select(Delivery.id)
                .join(Send, Send.id == Delivery.send_id)
                .where(Delivery.contact_id == Contact.id, Send.campaign_id == target.campaign_id)
            )
            conditions += [Event.resource_type == "delivery", Event.resource_id.in_(of_campaign)]
        return exists().where(*conditions)

    def _email(self, p: Predicate) -> ColumnElement[bool]:
        key = Contact.email_key
        if p.op == "eq":
            return key == p.value
        if p.op == "in":
            assert isinstance(p.value, tuple)
            return key.in_(p.value)
        assert isinstance(p.value, str)
        if p.op == "contains":
            return key.like(f"%{like_escape(p.value)}%", escape="\\")
        if self.dialect_name == "sqlite":
            # A range on the binary-collated key uses the (workspace_id, email_key) index,
            # which SQLite's LIKE cannot (it would need a NOCASE index).
            return _prefix_range(key, p.value)
        return key.like(f"{like_escape(p.value)}%", escape="\\")

    def _text_column(self, p: Predicate, column: InstrumentedAttribute[Any]) -> ColumnElement[bool]:
        present = column.is_not(None)
        if p.op == "exists":
            return present
        if p.op == "eq":
            return and_(present, column == p.value)
        if p.op == "in":
            assert isinstance(p.value, tuple)
            return and_(present, column.in_(p.value))
        assert isinstance(p.value, str)
        escaped = like_escape(p.value)
        pattern = f"%{escaped}%" if p.op == "contains" else f"{escaped}%"
        return and_(present, self._folded(column).like(pattern, escape="\\"))

    def _folded(self, column: InstrumentedAttribute[Any]) -> ColumnElement[str]:
        if self.dialect_name == "postgresql":
            return func.lower(column.collate("C"))
        return func.lower(column)

    def _attribute(self, p: Predicate, path: tuple[str, ...]) -> ColumnElement[bool]:
        if p.op == "exists":
            return self.json.exists(path)
        if p.op == "eq":
            assert isinstance(p.value, str | int | float | bool)
            return self.json.equals(path, p.value)
        if p.op == "contains":
            assert isinstance(p.value, str | int | float | bool)
            return self.json.contains(path, p.value)
        if p.op == "starts_with":
            assert isinstance(p.value, str)
            return self.json.starts_with(path, p.value)
        if isinstance(p.value, int | float) and not isinstance(p.value, bool):
            return self.json.compare_number(path, p.op, p.value)
        return self.json.compare_instant(path, p.op, instant_at(p.value, self.now))


def _ordering(column: InstrumentedAttribute[Any], op: str, value: Any) -> ColumnElement[bool]:
    result: ColumnElement[bool] = _COMPARE[op](column, value)
    return result


def _prefix_range(column: InstrumentedAttribute[Any], prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range in code point order."""
    upper = _successor(prefix)
    if upper is None:
        return column >= prefix
    return and_(column >= prefix, column < upper)


def _successor(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; skip past them
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None
