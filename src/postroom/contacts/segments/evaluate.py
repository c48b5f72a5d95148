"""The filter evaluated in Python on one contact: the oracle the SQL compiler is tested
against (and handy for a single contact, e.g. a sequence's entry condition).

``contact`` holds the ``contacts`` columns by name: ``email_key`` (or ``email``, lower-cased
here), ``status``, ``first_name``, ``last_name``, ``locale``, ``timezone``, ``created_at``,
``updated_at`` (aware datetimes) and ``attributes`` (the JSON object as ``json.loads`` gives
it). ``list_ids`` are the lists the contact is *subscribed* to (status ``subscribed``);
``events`` the contact's events as mappings of ``type``, ``occurred_at`` and
``campaign_id`` (of the delivery an engagement event is about, else ``None``).
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from postroom.contacts.segments.iso_dates import Instant, parse_instant
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
    ascii_fold,
    instant_at,
)
from postroom.contacts.segments.schema import FilterCondition, filter_predicate

_MISSING: Final = object()
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def evaluate_filter(
    filter: FilterCondition,
    contact: Mapping[str, Any],
    *,
    now: datetime,
    list_ids: set[str],
    events: Sequence[Mapping[str, Any]] = (),
) -> bool:
    """Whether ``contact`` matches ``filter``; raises ``InvalidFilter`` for a bad filter."""
    return evaluate_predicate(
        filter_predicate(filter), contact, now=now, list_ids=list_ids, events=events
    )


def evaluate_predicate(
    node: Node,
    contact: Mapping[str, Any],
    *,
    now: datetime,
    list_ids: set[str],
    events: Sequence[Mapping[str, Any]] = (),
) -> bool:
    subscribed = {uuid.UUID(str(list_id)) for list_id in list_ids}
    return _Evaluator(contact, now, subscribed, events).node(node)


class _Evaluator:
    def __init__(
        self,
        contact: Mapping[str, Any],
        now: datetime,
        lists: set[uuid.UUID],
        events: Sequence[Mapping[str, Any]],
    ) -> None:
        self.contact = contact
        self.now = now
        self.lists = lists
        self.events = events

    def node(self, node: Node) -> bool:
        if isinstance(node, AllOf):
            return all(self.node(child) for child in node.children)
        if isinstance(node, AnyOf):
            return any(self.node(child) for child in node.children)
        if isinstance(node, Not):
            return not self.node(node.child)
        return self.predicate(node)

    def predicate(self, p: Predicate) -> bool:
        target = p.target
        if isinstance(target, Attribute):
            return self._attribute(p, _lookup(self.contact.get("attributes"), target.path))
        if isinstance(target, EventActivity):
            found = [
                e
                for e in self.events
                if e["type"] == target.type
                and (target.campaign_id is None or e.get("campaign_id") == target.campaign_id)
            ]
            if p.op == "exists":
                return bool(found)
            since = instant_at(p.value, self.now).micros
            return any(Instant.from_datetime(e["occurred_at"]).micros >= since for e in found)
        if isinstance(target, ListMembership):
            assert isinstance(p.value, tuple)
            return any(list_id in self.lists for list_id in p.value)
        if isinstance(target, DateField):
            moment = Instant.from_datetime(self.contact[target.column]).micros
            if p.op == "eq":
                assert isinstance(p.value, Instant)
                return moment == p.value.micros
            return _COMPARE[p.op](moment, instant_at(p.value, self.now).micros)
        if isinstance(target, EmailField):
            email_key = self.contact.get("email_key") or str(self.contact["email"]).lower()
            return _text(p, email_key, email_key)
        if isinstance(target, StatusField):
            status = self.contact["status"]
            return _text(p, status, status)
        assert isinstance(target, TextField)
        value = self.contact.get(target.column)
        if p.op == "exists":
            return value is not None
        return value is not None and _text(p, value, ascii_fold(value))

    def _attribute(self, p: Predicate, found: Any) -> bool:
        if found is _MISSING:
            return False
        if p.op == "exists":
            return found is not None
        if p.op == "eq":
            return _json_equal(found, p.value)
        if p.op == "contains":
            if isinstance(p.value, str):
                if isinstance(found, str):
                    return p.value in ascii_fold(found)
                return isinstance(found, list) and any(
                    isinstance(item, str) and ascii_fold(item) == p.value for item in found
                )
            return isinstance(found, list) and any(_json_equal(item, p.value) for item in found)
        if p.op == "starts_with":
            assert isinstance(p.value, str)
            return isinstance(found, str) and ascii_fold(found).startswith(p.value)
        compare = _COMPARE[p.op]
        if _is_number(p.value):
            return _is_number(found) and compare(found, p.value)
        if not isinstance(found, str):
            return False
        parsed = parse_instant(found)
        return parsed is not None and compare(
            parsed[0].micros, instant_at(p.value, self.now).micros
        )


def _text(p: Predicate, exact: str, folded: str) -> bool:
    """A text predicate; ``folded`` is what ``contains``/``starts_with`` search."""
    if p.op == "eq":
        return exact == p.value
    if p.op == "in":
        assert isinstance(p.value, tuple)
        return exact in p.value
    assert isinstance(p.value, str)
    if p.op == "contains":
        return p.value in folded
    return folded.startswith(p.value)


def _lookup(attributes: Any, path: tuple[str, ...]) -> Any:
    node = attributes
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(found: Any, wanted: Any) -> bool:
    """Equality with JSON types kept apart (Python has ``True == 1``)."""
    if isinstance(wanted, bool):
        return isinstance(found, bool) and found is wanted
    if _is_number(wanted):
        return _is_number(found) and found == wanted
    return isinstance(found, str) and found == wanted
