"""The segment filter language: the Mailglyph/Plunk ``FilterCondition``, extended.

Shape::

    {"logic": "AND" | "OR",
     "groups": [{"filters": [{"field": ..., "operator": ..., "value": ..., "unit": ...}],
                 "conditions": <a nested FilterCondition, optional>}]}

Filters inside a group and the group's nested ``conditions`` are ANDed; ``logic`` combines
the groups. ``logic`` defaults to ``AND`` (the Mailglyph docs' examples omit it). At most
100 filters in all and 5 levels of conditions. Unknown keys in the JSON are ignored.

Entry points: ``parse_filter(data)`` (JSON → checked
``FilterCondition``), ``check_filter`` (every problem, as ``FilterProblem(field, message,
code)`` with the dotted path of the bad node, e.g.
``groups.0.conditions.groups.1.filters.0.value``), ``validate_filter`` (raises
``InvalidFilter``) and ``filter_predicate`` (the checked tree of ``predicates``, read by the
compiler and the evaluator).

Fields: ``email``, ``subscribed`` (bool: status is ``subscribed``), ``status``,
``first_name``/``firstName``, ``last_name``/``lastName``, ``locale``, ``timezone``,
``createdAt``/``created_at``, ``updatedAt``/``updated_at``, ``list`` (value: a list id;
``equals``/``in`` mean "subscribed to it", ``notEquals`` "not subscribed to it"), and
``data.<key>`` (alias ``attributes.<key>``). The rest after ``data.`` is split at dots into a
path through nested objects (``data.address.city``), so a key that itself holds a dot cannot
be filtered on. Keys are printable ASCII without ``"`` or ``\\``: SQLite matches JSON keys on
their escaped text, and a non-ASCII key is stored escaped.

Semantics (the SQL compiler and the Python evaluator implement exactly these):

- ``notEquals``, ``notContains`` and ``notExists`` are the negation of their positive form,
  so a contact whose field is missing or null matches them.
- ``equals`` on a text column or attribute is exact (case-sensitive); on ``email`` it is
  case-insensitive (the value is lower-cased and compared with the lower-cased address).
- ``contains``/``startsWith`` are case-insensitive for ASCII letters A-Z; other letters compare
  exactly, on both databases (SQLite cannot fold more without extensions).
- Attributes keep JSON types strict: ``equals 5`` matches the number 5 (or 5.0), not the string
  "5"; ``equals true`` matches the boolean only. Ordering operators with a number match number
  attributes only; with an ISO date string (``iso_dates``) they match string attributes that
  are such dates, compared as instants. Anything else simply does not match.
- ``contains`` on an array attribute tests its elements: a string element equal to the value
  (ASCII case-insensitively), or a number/boolean element equal to it.
- ``exists``: present and not null. Text columns: not NULL (an empty string exists).
- Date columns: ``equals``/``notEquals`` with a date alone mean that whole UTC day; with a date
  and time, that instant. A date alone elsewhere is midnight UTC; no offset means UTC.
- ``within N unit``: at or after ``now - N``; ``olderThan N unit``: before ``now - N`` (Plunk's
  meaning; on a present date exactly one of the two holds). ``unit`` is minutes, hours or
  days, N a positive number (fractions allowed) reaching back at most 100 years; ``unit`` is
  ignored by the other operators.
- ``between [lo, hi]``: inclusive at both ends; two numbers or two dates, ``lo <= hi``.
- ``in``: equal to one of the values (1 to 1000).
- Numbers in a filter are finite and at most 2^53 in size, so every database agrees on them.

Cost: everything compiles to plain column, JSON and EXISTS tests over one scan of the
workspace's contacts. A date comparison on an attribute validates and normalises the string
of every contact (``iso_dates``): a few times the cost of a number comparison.

Events: ``event.<name>`` (any event type, custom names included) and the shorthand
``email.opened``/``email.clicked``/``email.sent`` (every ``email.*`` type) take the event
operators only: ``triggered`` (at least once), ``notTriggered`` (never),
``triggeredWithin N unit`` (at least once at or after ``now - N``), ``notTriggeredWithin``
(its negation; never-triggered contacts match) and ``triggeredOlderThan N unit`` (at least
once, but not within the last N: Plunk's "occurred, but not recently"). On ``email.*``
fields a ``campaign`` (id) keeps the events of that campaign's deliveries only. Each
compiles to a correlated EXISTS over ``events`` (index
``(workspace_id, contact_id, type, occurred_at)``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from postroom.contacts.segments.predicates import Node
from postroom.contacts.segments.validation import (
    EVENT_OPERATORS,
    FIELD_NAMES,
    MAX_DEPTH,
    MAX_FILTERS,
    OPERATORS,
    analyse,
    resolve_field,
)
from postroom.errors import FieldProblem, ValidationFailed

__all__ = [
    "EVENT_OPERATORS",
    "FIELD_NAMES",
    "MAX_DEPTH",
    "MAX_FILTERS",
    "OPERATORS",
    "FilterCondition",
    "FilterGroup",
    "FilterProblem",
    "FilterRule",
    "InvalidFilter",
    "check_filter",
    "filter_predicate",
    "parse_filter",
    "resolve_field",
    "validate_filter",
]


# --- the wire models ----------------------------------------------------------------------


class FilterRule(BaseModel):
    """One condition. Only the shape is checked here; ``check_filter`` checks the meaning."""

    model_config = ConfigDict(extra="ignore")

    field: str
    operator: str
    value: Any = None
    unit: str | None = None
    campaign: str | None = Field(
        None, description="Event operators on email.* fields: that campaign's mail only"
    )


class FilterGroup(BaseModel):
    model_config = ConfigDict(extra="ignore")

    filters: list[FilterRule] = Field(default_factory=list)
    conditions: FilterCondition | None = None


class FilterCondition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    logic: str = "AND"
    groups: list[FilterGroup]


# --- problems -----------------------------------------------------------------------------

# The project's field problem: ``field`` is the dotted path of the bad node from the root of
# the filter, e.g. ``groups.0.filters.2.operator``.
FilterProblem = FieldProblem


class InvalidFilter(ValidationFailed):
    """A filter that cannot be used; ``problems`` lists everything wrong with it at once."""

    code = "invalid_filter"

    def __init__(self, problems: list[FilterProblem]) -> None:
        super().__init__(problems, "the filter is invalid")

    def prefixed(self, prefix: str) -> InvalidFilter:
        """The same problems with paths under ``prefix`` (``filter``, ``condition``…)."""
        return InvalidFilter(
            [
                FilterProblem(f"{prefix}.{p.field}" if p.field else prefix, p.message, p.code)
                for p in self.problems
            ]
        )


# --- public entry points ------------------------------------------------------------------


def parse_filter(data: Any) -> FilterCondition:
    """Parse and check a filter from JSON data; raises ``InvalidFilter`` with every problem."""
    try:
        condition = FilterCondition.model_validate(data)
    except ValidationError as error:
        raise InvalidFilter(
            [
                FilterProblem(".".join(str(part) for part in e["loc"]), e["msg"], e["type"])
                for e in error.errors()
            ]
        ) from None
    validate_filter(condition)
    return condition


def check_filter(condition: FilterCondition) -> list[FilterProblem]:
    """Every problem of a parsed filter; empty when it can be used."""
    return analyse(condition)[1]


def validate_filter(condition: FilterCondition) -> None:
    problems = check_filter(condition)
    if problems:
        raise InvalidFilter(problems)


def filter_predicate(condition: FilterCondition) -> Node:
    """The checked tree both the compiler and the evaluator read; raises ``InvalidFilter``."""
    node, problems = analyse(condition)
    if problems or node is None:
        raise InvalidFilter(problems)
    return node


FilterGroup.model_rebuild()
