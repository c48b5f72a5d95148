"""Checking a filter: the field names, operators and limits of the language, and the
analysis that finds every problem at once and builds the typed tree when there are none.

``schema.parse_filter`` runs pydantic for the shape, then ``analyse`` for the meaning: it
walks the filter once, records a ``FilterProblem`` (dotted path, message, code) for each
bad node and builds the ``predicates`` tree as it goes, so what is checked is exactly what
the compiler and the evaluator read. (The wire models live in ``schema``, which imports
this module; here they are only annotations.)
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

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
    Op,
    Predicate,
    RelativeInstant,
    Scalar,
    StatusField,
    Target,
    TextField,
    ascii_fold,
)
from postroom.errors import FieldProblem as FilterProblem
from postroom.events.service import KNOWN_TYPES
from postroom.models.contacts import CONTACT_STATUSES

if TYPE_CHECKING:  # the models import this module
    from postroom.contacts.segments.schema import FilterCondition, FilterGroup, FilterRule

MAX_DEPTH: Final = 5
MAX_FILTERS: Final = 100
MAX_IN_VALUES: Final = 1000
MAX_STRING_LENGTH: Final = 1000
MAX_KEY_LENGTH: Final = 255
# Numbers must be exact in a double (JavaScript's safe integers) so every database agrees.
MAX_NUMBER: Final = 2**53
MAX_RELATIVE: Final = timedelta(days=36_525)
UNITS: Final = {
    "minutes": timedelta(minutes=1),
    "hours": timedelta(hours=1),
    "days": timedelta(days=1),
}

OPERATORS: Final = (
    "equals",
    "notEquals",
    "contains",
    "notContains",
    "startsWith",
    "greaterThan",
    "lessThan",
    "greaterThanOrEqual",
    "lessThanOrEqual",
    "in",
    "between",
    "exists",
    "notExists",
    "within",
    "olderThan",
)
# Operators on events (Mailglyph/Plunk), for ``event.<name>`` fields and the ``email.*``
# engagement types: ever / since N units / before but not since N units (Plunk's meaning) /
# never / not since N units (never included).
EVENT_OPERATORS: Final = frozenset(
    {"triggered", "triggeredWithin", "triggeredOlderThan", "notTriggered", "notTriggeredWithin"}
)
_EVENT_OPERATOR_ORDER: Final = (
    "triggered",
    "triggeredWithin",
    "triggeredOlderThan",
    "notTriggered",
    "notTriggeredWithin",
)
ALL_OPERATORS: Final = (*OPERATORS, *_EVENT_OPERATOR_ORDER)
EVENT_PREFIX: Final = "event."
# Email engagement types that may be named without ``event.`` (``email.opened``).
EMAIL_EVENT_TYPES: Final = frozenset(t for t in KNOWN_TYPES if t.startswith("email."))
MAX_EVENT_NAME: Final = 100

_TEXT_OPERATORS: Final = frozenset(
    {"equals", "notEquals", "contains", "notContains", "startsWith", "in", "exists", "notExists"}
)
ORDERING_OPERATORS: Final[dict[str, Op]] = {
    "greaterThan": "gt",
    "lessThan": "lt",
    "greaterThanOrEqual": "ge",
    "lessThanOrEqual": "le",
}
ALLOWED_OPERATORS: Final[dict[type, frozenset[str]]] = {
    EmailField: frozenset({"equals", "notEquals", "contains", "notContains", "startsWith", "in"}),
    StatusField: frozenset({"equals", "notEquals", "in"}),
    TextField: _TEXT_OPERATORS,
    DateField: frozenset(
        {"equals", "notEquals", "between", "within", "olderThan", *ORDERING_OPERATORS}
    ),
    ListMembership: frozenset({"equals", "notEquals", "in"}),
    Attribute: frozenset(OPERATORS),
    EventActivity: EVENT_OPERATORS,
}
SUBSCRIBED_FIELD: Final = "subscribed"
_COLUMN_FIELDS: Final[dict[str, Target]] = {
    "email": EmailField(),
    "status": StatusField(),
    "first_name": TextField("first_name"),
    "firstName": TextField("first_name"),
    "last_name": TextField("last_name"),
    "lastName": TextField("last_name"),
    "locale": TextField("locale"),
    "timezone": TextField("timezone"),
    "createdAt": DateField("created_at"),
    "created_at": DateField("created_at"),
    "updatedAt": DateField("updated_at"),
    "updated_at": DateField("updated_at"),
    "list": ListMembership(),
}
ATTRIBUTE_PREFIXES: Final = ("data.", "attributes.")
_KEY_CHARACTERS: Final = frozenset(chr(code) for code in range(0x20, 0x7F)) - {'"', "\\", "."}
FIELD_NAMES: Final = (
    *_COLUMN_FIELDS,
    SUBSCRIBED_FIELD,
    "data.<key>",
    "attributes.<key>",
    "event.<name>",
    "email.opened",
    "email.clicked",
    "email.sent",
)


def resolve_field(name: str) -> Target | None:
    """The target a field name designates (``subscribed`` designates the status)."""
    if name == SUBSCRIBED_FIELD:
        return StatusField()
    if name in _COLUMN_FIELDS:
        return _COLUMN_FIELDS[name]
    if name in EMAIL_EVENT_TYPES:
        return EventActivity(name)
    if name.startswith(EVENT_PREFIX):
        event = name[len(EVENT_PREFIX) :]
        if 0 < len(event) <= MAX_EVENT_NAME and event == event.strip() and event.isprintable():
            return EventActivity(event)
        return None
    for prefix in ATTRIBUTE_PREFIXES:
        if name.startswith(prefix):
            path = tuple(name[len(prefix) :].split("."))
            if all(_valid_key(key) for key in path):
                return Attribute(path)
    return None


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and all(char in _KEY_CHARACTERS for char in key)


def analyse(condition: FilterCondition) -> tuple[Node | None, list[FilterProblem]]:
    """The checked tree (``None`` when there are problems) and every problem."""
    return _Analysis().run(condition)


# --- the analysis -------------------------------------------------------------------------


@dataclass
class _Analysis:
    problems: list[FilterProblem] = field(default_factory=list)
    filter_count: int = 0

    def run(self, condition: FilterCondition) -> tuple[Node | None, list[FilterProblem]]:
        node = self._condition(condition, "", depth=1)
        if self.filter_count > MAX_FILTERS:
            self._problem(
                "groups",
                f"a filter holds at most {MAX_FILTERS} conditions, this one {self.filter_count}",
                "too_many_filters",
            )
        return (None if self.problems else node), self.problems

    def _problem(self, path: str, message: str, code: str) -> None:
        self.problems.append(FilterProblem(path, message, code))

    def _condition(self, condition: FilterCondition, path: str, depth: int) -> Node | None:
        if condition.logic not in ("AND", "OR"):
            self._problem(f"{path}logic", "logic must be AND or OR", "invalid_logic")
        if not condition.groups:
            self._problem(f"{path}groups", "at least one group is needed", "empty")
        groups = [
            self._group(group, f"{path}groups.{index}", depth)
            for index, group in enumerate(condition.groups)
        ]
        children = tuple(group for group in groups if group is not None)
        return AnyOf(children) if condition.logic == "OR" else AllOf(children)

    def _group(self, group: FilterGroup, path: str, depth: int) -> Node | None:
        if not group.filters and group.conditions is None:
            self._problem(path, "a group needs filters or nested conditions", "empty_group")
        self.filter_count += len(group.filters)
        parts = [
            self._rule(rule, f"{path}.filters.{index}") for index, rule in enumerate(group.filters)
        ]
        if group.conditions is not None:
            if depth >= MAX_DEPTH:
                self._problem(
                    f"{path}.conditions",
                    f"conditions nest at most {MAX_DEPTH} levels deep",
                    "too_deep",
                )
            else:
                parts.append(self._condition(group.conditions, f"{path}.conditions.", depth + 1))
        return AllOf(tuple(part for part in parts if part is not None))

    def _rule(self, rule: FilterRule, path: str) -> Node | None:
        operator_known = True
        if rule.operator not in ALL_OPERATORS:
            self._problem(
                f"{path}.operator",
                f"unknown operator '{rule.operator}'; use one of {', '.join(ALL_OPERATORS)}",
                "unknown_operator",
            )
            operator_known = False
        target = resolve_field(rule.field)
        if target is None:
            self._unknown_field(rule.field, f"{path}.field")
            return None
        target = self._scoped(rule, path, target)
        if not operator_known or target is None:
            return None
        allowed = ALLOWED_OPERATORS[type(target)]
        if rule.field == SUBSCRIBED_FIELD:
            allowed = frozenset({"equals", "notEquals"})
        if rule.operator not in allowed:
            listed = ", ".join(op for op in ALL_OPERATORS if op in allowed)
            hint = (
                "; event operators apply to event.<name> and email.* fields"
                if rule.operator in EVENT_OPERATORS
                else ""
            )
            self._problem(
                f"{path}.operator",
                f"'{rule.operator}' does not apply to '{rule.field}'; use one of {listed}{hint}",
                "operator_not_allowed",
            )
            return None
        return _RuleBuilder(self, rule, path, target).build()

    def _scoped(self, rule: FilterRule, path: str, target: Target) -> Target | None:
        """The target with the rule's ``campaign`` (email events of one campaign only)."""
        if rule.campaign is None:
            return target
        if not isinstance(target, EventActivity) or not target.type.startswith("email."):
            self._problem(
                f"{path}.campaign",
                "campaign applies to email events only (email.sent, email.opened…)",
                "invalid_campaign",
            )
            return None
        try:
            return EventActivity(target.type, uuid.UUID(str(rule.campaign)))
        except ValueError:
            self._problem(f"{path}.campaign", "must be a campaign id (a UUID)", "invalid_campaign")
            return None

    def _unknown_field(self, name: str, path: str) -> None:
        if name.startswith(EVENT_PREFIX):
            self._problem(
                path,
                f"an event name is 1-{MAX_EVENT_NAME} printable characters, no spaces at "
                "either end",
                "invalid_event_name",
            )
        elif name.startswith(ATTRIBUTE_PREFIXES):
            self._problem(
                path,
                'attribute keys are 1-255 printable ASCII characters other than ", \\ and ".", '
                "joined by dots for nested objects",
                "invalid_attribute_key",
            )
        else:
            self._problem(
                path,
                f"unknown field '{name}'; use one of {', '.join(FIELD_NAMES)}",
                "unknown_field",
            )


class _Bad(Exception):
    """A value problem already recorded; abandons the rule being built."""


@dataclass
class _RuleBuilder:
    analysis: _Analysis
    rule: FilterRule
    path: str
    target: Target

    def build(self) -> Node | None:
        try:
            return self._build()
        except _Bad:
            return None

    def _bad(self, message: str, code: str = "invalid_value", suffix: str = ".value") -> _Bad:
        self.analysis._problem(f"{self.path}{suffix}", message, code)
        return _Bad()

    def _build(self) -> Node:
        operator, target, value = self.rule.operator, self.target, self.rule.value
        if isinstance(target, EventActivity):
            return self._event(operator, target)
        if operator in ("notEquals", "notContains", "notExists"):
            positive = {"notEquals": "equals", "notContains": "contains", "notExists": "exists"}
            return Not(self._positive(positive[operator], target, value))
        return self._positive(operator, target, value)

    def _positive(self, operator: str, target: Target, value: Any) -> Node:
        if operator == "exists":
            return Predicate(target, "exists", None)
        if operator == "equals":
            return self._equals(target, value)
        if operator == "in":
            return self._in(target, value)
        if operator in ("contains", "startsWith"):
            return self._text_match(operator, target, value)
        if operator in ORDERING_OPERATORS:
            return Predicate(
                target, ORDERING_OPERATORS[operator], self._orderable(target, value, "")
            )
        if operator == "between":
            return self._between(target, value)
        delta = self._relative()
        op: Op = "ge" if operator == "within" else "lt"
        return Predicate(target, op, RelativeInstant(delta))

    def _event(self, operator: str, target: EventActivity) -> Node:
        ever = Predicate(target, "exists", None)
        if operator == "triggered":
            return ever
        if operator == "notTriggered":
            return Not(ever)
        recent = Predicate(target, "ge", RelativeInstant(self._relative()))
        if operator == "triggeredWithin":
            return recent
        if operator == "notTriggeredWithin":
            return Not(recent)
        return AllOf((ever, Not(recent)))  # triggeredOlderThan

    def _equals(self, target: Target, value: Any) -> Node:
        if self.rule.field == SUBSCRIBED_FIELD:
            if not isinstance(value, bool):
                raise self._bad("subscribed compares with true or false")
            node = Predicate(StatusField(), "eq", "subscribed")
            return node if value else Not(node)
        if isinstance(target, DateField):
            instant, date_only = self._date(value, "")
            if date_only:
                end = Instant(instant.micros + 86_400_000_000)
                return AllOf((Predicate(target, "ge", instant), Predicate(target, "lt", end)))
            return Predicate(target, "eq", instant)
        if isinstance(target, ListMembership):
            return Predicate(target, "in", (self._list_id(value, ""),))
        if isinstance(target, Attribute):
            return Predicate(target, "eq", self._scalar(value, ""))
        return Predicate(target, "eq", self._column_text(target, value, ""))

    def _in(self, target: Target, value: Any) -> Node:
        if not isinstance(value, list) or not value:
            raise self._bad("in takes a non-empty list of values")
        if len(value) > MAX_IN_VALUES:
            raise self._bad(f"in takes at most {MAX_IN_VALUES} values")
        items = list(enumerate(value))
        if isinstance(target, Attribute):
            scalars = self._each(items, self._scalar)
            return AnyOf(tuple(Predicate(target, "eq", scalar) for scalar in scalars))
        if isinstance(target, ListMembership):
            return Predicate(target, "in", tuple(self._each(items, self._list_id)))
        texts = self._each(items, lambda item, suffix: self._column_text(target, item, suffix))
        return Predicate(target, "in", tuple(texts))

    def _each(
        self,
        items: list[tuple[int, Any]],
        check: Callable[[Any, str], Any],
        *,
        distinct: bool = True,
    ) -> list[Any]:
        """Check every element, recording each bad one before giving up on the rule."""
        checked, failed = [], False
        for index, item in items:
            try:
                checked.append(check(item, f".{index}"))
            except _Bad:
                failed = True
        if failed:
            raise _Bad()
        return list(dict.fromkeys(checked)) if distinct else checked

    def _text_match(self, operator: str, target: Target, value: Any) -> Node:
        op: Op = "contains" if operator == "contains" else "starts_with"
        if isinstance(target, Attribute) and operator == "contains" and not isinstance(value, str):
            # A number or boolean: an element of an array attribute.
            return Predicate(target, "contains", self._scalar(value, ""))
        text = self._string(value, "")
        if not text:
            raise self._bad(f"{operator} needs a non-empty string")
        folded = text.lower() if isinstance(target, EmailField) else ascii_fold(text)
        return Predicate(target, op, folded)

    def _between(self, target: Target, value: Any) -> Node:
        if not isinstance(value, list) or len(value) != 2:
            raise self._bad("between takes a list of two values: [low, high]")
        low, high = self._each(
            [(0, value[0]), (1, value[1])],
            lambda item, suffix: self._orderable(target, item, suffix),
            distinct=False,
        )
        if type(low) is not type(high) and not (
            isinstance(low, int | float) and isinstance(high, int | float)
        ):
            raise self._bad("between needs two numbers or two dates")
        if _order_key(low) > _order_key(high):
            raise self._bad("between takes the lower bound first")
        return AllOf((Predicate(target, "ge", low), Predicate(target, "le", high)))

    def _orderable(self, target: Target, value: Any, suffix: str) -> int | float | Instant:
        if isinstance(target, DateField):
            return self._date(value, suffix)[0]
        if _is_number(value):
            return self._number(value, suffix)
        if isinstance(value, str):
            return self._date(value, suffix)[0]
        raise self._bad("compares with a number or an ISO 8601 date", suffix=f".value{suffix}")

    def _relative(self) -> timedelta:
        operator, unit, amount = self.rule.operator, self.rule.unit, self.rule.value
        unit_ok = unit in UNITS
        if not unit_ok:
            self._bad(f"{operator} needs a unit: minutes, hours or days", "invalid_unit", ".unit")
        if not _is_number(amount) or not math.isfinite(amount) or amount <= 0:
            raise self._bad(f"{operator} needs a positive number of {unit if unit_ok else 'units'}")
        if not unit_ok:
            raise _Bad()
        step = UNITS[str(unit)]
        # Compared as seconds first: a huge amount would overflow timedelta.
        if amount * step.total_seconds() > MAX_RELATIVE.total_seconds():
            raise self._bad(f"{operator} reaches back at most {MAX_RELATIVE.days} days")
        delta: timedelta = amount * step
        return delta

    # --- single values ---

    def _date(self, value: Any, suffix: str) -> tuple[Instant, bool]:
        parsed = parse_instant(value) if isinstance(value, str) else None
        if parsed is None:
            raise self._bad(
                "must be an ISO 8601 date (2024-05-01) or date and time (2024-05-01T09:30:00Z)",
                suffix=f".value{suffix}",
            )
        try:
            parsed[0].to_datetime()
        except OverflowError:
            raise self._bad("the date is out of range", suffix=f".value{suffix}") from None
        return parsed

    def _number(self, value: Any, suffix: str) -> int | float:
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise self._bad(
                "numbers must be finite and at most 2^53 in size", suffix=f".value{suffix}"
            )
        return value  # type: ignore[no-any-return]

    def _string(self, value: Any, suffix: str) -> str:
        if not isinstance(value, str):
            raise self._bad("must be a string", suffix=f".value{suffix}")
        if len(value) > MAX_STRING_LENGTH:
            raise self._bad(
                f"strings are at most {MAX_STRING_LENGTH} characters", suffix=f".value{suffix}"
            )
        if "\x00" in value:
            raise self._bad("strings cannot hold NUL", suffix=f".value{suffix}")
        return value

    def _scalar(self, value: Any, suffix: str) -> Scalar:
        if isinstance(value, bool):
            return value
        if _is_number(value):
            return self._number(value, suffix)
        if isinstance(value, str):
            return self._string(value, suffix)
        raise self._bad("must be a string, a number or a boolean", suffix=f".value{suffix}")

    def _column_text(self, target: Target, value: Any, suffix: str) -> str:
        text = self._string(value, suffix)
        if isinstance(target, StatusField) and text not in CONTACT_STATUSES:
            raise self._bad(
                f"status is one of {', '.join(CONTACT_STATUSES)}", suffix=f".value{suffix}"
            )
        return text.lower() if isinstance(target, EmailField) else text

    def _list_id(self, value: Any, suffix: str) -> uuid.UUID:
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
        raise self._bad("must be a list id (a UUID)", suffix=f".value{suffix}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _order_key(value: int | float | Instant) -> float | int:
    return value.micros if isinstance(value, Instant) else value
