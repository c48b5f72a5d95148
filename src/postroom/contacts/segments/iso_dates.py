"""The ISO 8601 dates a filter compares as dates, in Python and in SQL.

JSON has no date type, so attribute dates are strings. A string counts as a date when it
matches exactly one of::

    YYYY-MM-DD
    YYYY-MM-DD(T| )HH:MM:SS[.f{1,6}][Z|(+|-)HH:MM]

and names a real moment (year >= 1, a day that exists in that month, hours <= 23, minutes
and seconds <= 59, offset hours <= 23). No offset means UTC. This covers what
``contact_fields.convert_attribute`` stores (``2024-05-01``, ``2024-05-01T09:30:00Z``), what
JavaScript's ``toISOString`` writes and Python's ``isoformat``.

Dates are compared by their *instant key*: whole microseconds since 1970-01-01T00:00:00Z
(an integer, exact on both databases; a date alone is midnight UTC). ``parse_instant`` computes
it in Python; ``sql_instant_key`` builds the same integer in SQL, from the civil-date formula
(days since the epoch by integer arithmetic), so a string that is not a date gives NULL and
never a cast error. PostgreSQL recognises the shape with a regular expression, SQLite (which
has none) with ``GLOB`` patterns; a hypothesis test holds both to this module's parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from sqlalchemy import BigInteger, String, and_, case, cast, func, literal, or_
from sqlalchemy.sql.elements import ColumnElement

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS_PER_SECOND: Final = 1_000_000
_DAYS_0001_TO_1970: Final = date(1970, 1, 1).toordinal()

_PATTERN_BODY: Final = (
    "([0-9]{4})-([0-9]{2})-([0-9]{2})"
    "(?:[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\\.([0-9]{1,6}))?(Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
ISO_INSTANT_RE: Final = re.compile(_PATTERN_BODY, re.ASCII)
# The same shape as a PostgreSQL regular expression (anchored: ``~`` searches).
_PG_PATTERN: Final = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    "([T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_D: Final = "[0-9]"
_GLOB_DATE: Final = f"{_D * 4}-{_D * 2}-{_D * 2}"
_GLOB_TIME: Final = f"[T ]{_D * 2}:{_D * 2}:{_D * 2}"
_GLOB_OFFSET_SUFFIX: Final = f"*[+-]{_D * 2}:{_D * 2}"


@dataclass(frozen=True, slots=True)
class Instant:
    """A moment as whole microseconds since the Unix epoch."""

    micros: int

    @classmethod
    def from_datetime(cls, moment: datetime) -> Instant:
        if moment.tzinfo is None:
            raise ValueError("naive datetime")
        return cls((moment - EPOCH) // timedelta(microseconds=1))

    def to_datetime(self) -> datetime:
        """Raises ``OverflowError`` outside the years 1-9999."""
        return EPOCH + timedelta(microseconds=self.micros)


def parse_instant(text: str) -> tuple[Instant, bool] | None:
    """The instant a string names and whether it was a date alone; ``None`` if it is not an
    ISO date in the accepted shape."""
    match = ISO_INSTANT_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _DAYS_0001_TO_1970
    except ValueError:
        return None
    if hour is None:
        return Instant(days * 86_400 * _MICROS_PER_SECOND), True
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 59:
        return None
    offset_seconds = 0
    if offset is not None and offset != "Z":
        offset_hours, offset_minutes = int(offset[1:3]), int(offset[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            return None
        offset_seconds = (offset_hours * 3600 + offset_minutes * 60) * (
            -1 if offset[0] == "-" else 1
        )
    seconds = days * 86_400 + h * 3600 + m * 60 + s - offset_seconds
    micros = int((fraction or "").ljust(6, "0"))
    return Instant(seconds * _MICROS_PER_SECOND + micros), False


def _int_at(
    text: ColumnElement[str], start: int | ColumnElement[int], length: int
) -> ColumnElement[int]:
    # BIGINT: microseconds since 1970 overflow PostgreSQL's 32-bit integer.
    return cast(func.substr(text, start, length), BigInteger)


def _shape_matches(text: ColumnElement[str], dialect_name: str) -> ColumnElement[bool]:
    if dialect_name == "postgresql":
        return text.op("~", is_comparison=True)(literal(_PG_PATTERN, String))
    # SQLite: the date, then either nothing or a time, a fraction and an offset.
    length = func.length(text)
    offset_length = _offset_length(text, dialect_name)
    fraction = func.substr(text, 20, length - 19 - offset_length)
    fraction_ok = or_(
        fraction == "",
        and_(
            func.substr(fraction, 1, 1) == ".",
            func.length(fraction).between(2, 7),
            ~func.substr(fraction, 2).op("GLOB", is_comparison=True)("*[^0-9]*"),
        ),
    )
    return and_(
        func.substr(text, 1, 10).op("GLOB", is_comparison=True)(_GLOB_DATE),
        or_(
            length == 10,
            and_(
                length >= 19,
                func.substr(text, 11, 9).op("GLOB", is_comparison=True)(_GLOB_TIME),
                fraction_ok,
            ),
        ),
    )


def _offset_length(text: ColumnElement[str], dialect_name: str) -> ColumnElement[int]:
    """6 for a ``+HH:MM`` suffix, 1 for ``Z``, else 0 (only read once the shape matched,
    except on SQLite where the shape test itself uses it, and nothing there can fail)."""
    if dialect_name == "postgresql":
        has_offset = text.op("~", is_comparison=True)(literal("[+-][0-9]{2}:[0-9]{2}$", String))
    else:
        has_offset = text.op("GLOB", is_comparison=True)(_GLOB_OFFSET_SUFFIX)
    return case(
        (has_offset, 6),
        (func.substr(text, func.length(text), 1) == "Z", 1),
        else_=0,
    )


def sql_instant_key(text: ColumnElement[str], dialect_name: str) -> ColumnElement[int]:
    """The instant key of ``text`` in SQL, NULL when it is not a date (see the module doc).

    Every cast sits behind the shape test inside a CASE, so PostgreSQL never casts a string
    that is not digits."""
    length = func.length(text)
    # A date alone reads as midnight: the time fields come from this padding.
    padded = text.concat("T00:00:00")
    year = _int_at(padded, 1, 4)
    month = _int_at(padded, 6, 2)
    day = _int_at(padded, 9, 2)
    hour = _int_at(padded, 12, 2)
    minute = _int_at(padded, 15, 2)
    second = _int_at(padded, 18, 2)
    offset_length = _offset_length(text, dialect_name)
    has_offset = offset_length == 6
    offset_hours = case((has_offset, _int_at(text, length - 4, 2)), else_=0)
    offset_minutes = case((has_offset, _int_at(text, length - 1, 2)), else_=0)
    offset_sign = case((func.substr(text, length - 5, 1) == "-", -1), else_=1)
    micros = case(
        (
            func.substr(text, 20, 1) == ".",
            cast(
                func.substr(
                    func.substr(text, 21, length - 20 - offset_length).concat("000000"), 1, 6
                ),
                BigInteger,
            ),
        ),
        else_=0,
    )
    leap = or_(and_(year % 4 == 0, year % 100 != 0), year % 400 == 1)
    days_in_month = case(
        (month == 2, case((leap, 29), else_=28)),
        (month.in_([4, 6, 9, 11]), 30),
        else_=31,
    )
    valid = and_(
        year >= 1,
        month.between(1, 12),
        day >= 1,
        day <= days_in_month,
        hour <= 23,
        minute <= 59,
        second <= 59,
        offset_hours <= 23,
        offset_minutes <= 59,
    )
    # Days since 1970-01-01 from the proleptic Gregorian date (H. Hinnant's days_from_civil);
    # years >= 1 keep every operand non-negative, so SQL's truncating division is a floor.
    shifted_year = year - case((month <= 2, 1), else_=0)
    era = shifted_year // 400
    year_of_era = shifted_year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146_097 + day_of_era - 719_468
    seconds = (
        days * 86_400
        + hour * 3600
        + minute * 60
        + second
        - offset_sign * (offset_hours * 3600 + offset_minutes * 60)
    )
    key = seconds * _MICROS_PER_SECOND + micros
    return case((_shape_matches(text, dialect_name), case((valid, key))))
