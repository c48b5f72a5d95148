"""The ISO 8601 dates a filter compares as dates, in Python and in SQL.

JSON has no date type, so attribute dates are strings. A string counts as a date when it
matches exactly one of::

    YYYY-MM-DD
    YYYY-MM-DD(T| )HH:MM:SS[.f{1,6}][Z|(+|-)HH:MM]

and names a real moment: year 0001 or later, a day that exists in that month, hours <= 23,
minutes and seconds <= 59, offset hours <= 23 and minutes <= 59; with a non-zero offset the
year is 0002-9998 (so the moment in UTC stays within 0001-9999). No offset means UTC. This
covers what ``contact_fields.convert_attribute`` stores (``2024-05-01``,
``2024-05-01T09:30:00Z``), what JavaScript's ``toISOString`` and Python's ``isoformat`` write.

Python (``parse_instant``) reads a date into whole microseconds since the epoch. SQL
(``sql_instant_text``) turns it into its *UTC text*, ``YYYY-MM-DD HH:MM:SS.ffffff``: fixed
width, so comparing texts (in the C collation) compares instants, and building it needs a
few string operations per row where integer date arithmetic needed a hundred (a 1M-contact
date comparison went from ~10 s to well under one on PostgreSQL). A non-zero offset is
applied by the database's own date arithmetic, only once the string is known to be valid,
so no cast can fail. PostgreSQL recognises the shape with a regular expression, SQLite
(which has none) with GLOB patterns; a hypothesis test holds both to ``parse_instant``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS_PER_SECOND: Final = 1_000_000
_DAYS_0001_TO_1970: Final = date(1970, 1, 1).toordinal()

ISO_INSTANT_RE: Final = re.compile(
    "([0-9]{4})-([0-9]{2})-([0-9]{2})"
    "(?:[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\\.([0-9]{1,6}))?(Z|[+-][0-9]{2}:[0-9]{2})?)?",
    re.ASCII,
)
# The same shape as a PostgreSQL regular expression (anchored: ``~`` searches).
_PG_PATTERN: Final = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    "([T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_D: Final = "[0-9]"
_GLOB_DATE: Final = f"{_D * 4}-{_D * 2}-{_D * 2}"
_GLOB_TIME: Final = f"[T ]{_D * 2}:{_D * 2}:{_D * 2}"
_GLOB_OFFSET_SUFFIX: Final = f"*[+-]{_D * 2}:{_D * 2}"
# Every MM-DD of a common year (02-29 is checked against the year apart), written into the
# SQL as constants rather than 365 bound parameters.
_MONTH_DAY_LITERALS: Final[tuple[ColumnElement[str], ...]] = tuple(
    literal_column(f"'{day:%m-%d}'")
    for day in (date(2023, 1, 1) + timedelta(days=n) for n in range(365))
)


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

    def utc_text(self) -> str:
        """``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC: what ``sql_instant_text`` compares with."""
        m = self.to_datetime()
        return (
            f"{m.year:04d}-{m.month:02d}-{m.day:02d} "
            f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}"
        )


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
        if offset_seconds and not 2 <= int(year) <= 9998:
            return None
    seconds = days * 86_400 + h * 3600 + m * 60 + s - offset_seconds
    micros = int((fraction or "").ljust(6, "0"))
    return Instant(seconds * _MICROS_PER_SECOND + micros), False


def sql_instant_text(text: ColumnElement[str], dialect_name: str) -> ColumnElement[str]:
    """The UTC text of ``text`` in SQL (see the module doc), NULL when it is not a date.

    Compare it under ``COLLATE "C"`` on PostgreSQL: a linguistic collation may skip the
    punctuation. Once the shape matched, every field sits at a known position and is
    checked as text, with as few calls as possible (this runs once per contact); a cast or
    date function only runs for an offset, behind the checks, so PostgreSQL never sees a
    value it would reject."""
    length = func.length(text)
    year = func.substr(text, 1, 4)
    month_day = func.substr(text, 6, 5)
    # Once the shape matched, a sign five characters from the end can only start an offset
    # (a date alone has its own '-' there, hence the length test).
    has_offset = and_(length > 10, func.substr(text, length - 5, 1).in_(["+", "-"]))
    offset = func.substr(text, length - 4, 5)
    # Fields are digits once the shape matched, so they compare as text: hours '00'-'23',
    # a tens digit of minutes and seconds up to '5', an offset up to '23:59'. A time that is
    # absent reads as '' and passes. Leap days need the year as a number, only then.
    leap = or_(
        and_(cast(year, Integer) % 4 == 0, cast(year, Integer) % 100 != 0),
        cast(year, Integer) % 400 == 0,
    )
    valid = and_(
        year != "0000",
        or_(month_day.in_(_MONTH_DAY_LITERALS), and_(month_day == "02-29", leap)),
        func.substr(text, 12, 2) <= "23",
        func.substr(text, 15, 1) <= "5",
        func.substr(text, 18, 1) <= "5",
        case(
            (
                has_offset,
                and_(
                    offset <= "23:59",
                    func.substr(offset, 4, 1) <= "5",
                    or_(offset == "00:00", year.between("0002", "9998")),
                ),
            ),
            else_=true(),
        ),
    )
    time_of_day = func.coalesce(func.nullif(func.substr(text, 12, 8), ""), "00:00:00")
    local = func.substr(text, 1, 10).concat(" ").concat(time_of_day)
    offset_length = case((has_offset, 6), (func.substr(text, length, 1) == "Z", 1), else_=0)
    fraction = case(
        (
            func.substr(text, 20, 1) == ".",
            func.substr(func.substr(text, 21, length - 20 - offset_length).concat("000000"), 1, 6),
        ),
        else_="000000",
    )
    offset_minutes = case((func.substr(text, length - 5, 1) == "-", -1), else_=1) * (
        cast(func.substr(offset, 1, 2), Integer) * 60 + cast(func.substr(offset, 4, 2), Integer)
    )
    utc = case(
        (and_(has_offset, offset != "00:00"), _minus_minutes(local, offset_minutes, dialect_name)),
        else_=local,
    )
    return case(
        (_shape_matches(text, dialect_name), case((valid, utc.concat(".").concat(fraction))))
    )


def _minus_minutes(
    local: ColumnElement[str], minutes: ColumnElement[int], dialect_name: str
) -> ColumnElement[str]:
    """``local`` (``YYYY-MM-DD HH:MM:SS``, valid) moved back by ``minutes``, same format."""
    if dialect_name == "postgresql":
        # timestamp without time zone: the session's TimeZone plays no part.
        moved = cast(local, DateTime()) - func.make_interval(0, 0, 0, 0, 0, minutes)
        return func.to_char(moved, "YYYY-MM-DD HH24:MI:SS")
    return func.strftime("%Y-%m-%d %H:%M:%S", local, func.printf("%+d minutes", -minutes))


def _shape_matches(text: ColumnElement[str], dialect_name: str) -> ColumnElement[bool]:
    if dialect_name == "postgresql":
        return text.op("~", is_comparison=True)(literal(_PG_PATTERN, String))
    # SQLite: the date, then either nothing, or a time then a fraction and an offset.
    length = func.length(text)
    offset_length = case(
        (text.op("GLOB", is_comparison=True)(_GLOB_OFFSET_SUFFIX), 6),
        (func.substr(text, length, 1) == "Z", 1),
        else_=0,
    )
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
