"""Instants taken from a request, as timezone-aware UTC datetimes.

Columns store UTC (``UTCDateTime`` refuses a naive datetime), and converting an instant
near the ends of the calendar to UTC can leave it (``9999-12-31T23:59:59-14:00``), which
Python reports as an ``OverflowError``: both used to be 500s. Without an offset an
instant is UTC, as in segment filters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


UtcInstant = Annotated[datetime, AfterValidator(to_utc)]
