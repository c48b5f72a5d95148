"""The checked form of a filter, read by both the SQL compiler and the Python evaluator.

``schema.analyse_filter`` turns a ``FilterCondition`` into this tree once its values have
been checked and typed, and rewrites every operator into a few positive ones:
``notEquals``/``notContains``/``notExists`` become ``Not(...)`` of their positive form (so a
contact whose field is missing or null matches them), ``between`` becomes ``>= lo AND <= hi``,
``within`` ``>= now - N`` and ``olderThan`` ``< now - N``, ``subscribed`` a status test,
``in`` on an attribute an ``AnyOf`` of equalities. Both readers then only implement:

========== ==================================================================================
op         meaning
========== ==================================================================================
eq         equal; on attributes the JSON types must agree too (5 is not "5")
contains   substring, ASCII case-insensitive; on an array attribute: has such an element
starts_with prefix, ASCII case-insensitive
gt ge lt le ordering of numbers (number attributes only) or instants (dates)
in         one of a tuple of values
exists     present and not null
========== ==================================================================================

Values are pre-processed here so both readers compare the same things: email values are
lower-cased (``email_key`` is), ``contains``/``starts_with`` values of other fields are
ASCII-folded (``ascii_fold``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from postroom.contacts.segments.iso_dates import Instant

Scalar = str | int | float | bool
Op = Literal["eq", "contains", "starts_with", "gt", "ge", "lt", "le", "in", "exists"]

_ASCII_FOLD: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_fold(text: str) -> str:
    """Lower-case A-Z only. Case-insensitive matching folds ASCII letters alone, because
    that is what SQLite can do without extensions; PostgreSQL is made to match with
    ``lower(x COLLATE "C")``. Other letters compare exactly, identically on both."""
    return text.translate(_ASCII_FOLD)


# --- what a predicate is about ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmailField:
    """``contacts.email_key`` (already lower-cased)."""


@dataclass(frozen=True, slots=True)
class StatusField:
    """``contacts.status``."""


@dataclass(frozen=True, slots=True)
class TextField:
    """A nullable text column of ``contacts``."""

    column: str


@dataclass(frozen=True, slots=True)
class DateField:
    """A timestamp column of ``contacts`` (never null)."""

    column: str


@dataclass(frozen=True, slots=True)
class ListMembership:
    """Subscriptions with status ``subscribed``."""


@dataclass(frozen=True, slots=True)
class Attribute:
    """A value inside ``contacts.attributes``; a path of one key or more (nested objects)."""

    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventActivity:
    """Events of the contact of one ``type`` (``email.opened``, a custom name…), those of
    one campaign's deliveries only when ``campaign_id`` is set. ``exists``: at least one;
    ``ge`` with a relative instant: at least one since then."""

    type: str
    campaign_id: uuid.UUID | None = None


Target = (
    EmailField | StatusField | TextField | DateField | ListMembership | Attribute | EventActivity
)


# --- values that need the clock -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelativeInstant:
    """``now - delta``, settled when the filter is compiled or evaluated."""

    delta: timedelta

    def resolve(self, now: datetime) -> Instant:
        return Instant.from_datetime(now - self.delta)


Value = Scalar | Instant | RelativeInstant | tuple[str, ...] | tuple[uuid.UUID, ...] | None


# --- the tree -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Predicate:
    target: Target
    op: Op
    value: Value


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


Node = Predicate | AllOf | AnyOf | Not


def instant_at(value: Value, now: datetime) -> Instant:
    """The instant an ordering predicate compares with."""
    if isinstance(value, RelativeInstant):
        return value.resolve(now)
    if isinstance(value, Instant):
        return value
    raise TypeError(f"not an instant: {value!r}")
