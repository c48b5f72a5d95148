"""Time rules of campaigns: schedule instants from local times, and the send calendar.

DST choices (documented in docs/api.md):

- a local time in a **gap** (02:30 on a spring-forward night in Europe/Paris) does not
  exist: it is refused with a 422 naming the nearest valid times, never silently moved;
- a local time in an **overlap** (02:30 on a fall-back night) happens twice: the first
  occurrence (``fold=0``, the summer-time one) unless the request says ``fold: 1``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from postroom.errors import ValidationFailed


def zone(name: str, field: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed.single(
            field, f"'{name}' is not an IANA timezone (e.g. Europe/Paris)", "invalid_timezone"
        ) from None


def _exists(local: datetime) -> bool:
    """A wall time exists when it survives a round trip through UTC."""
    tz = local.tzinfo
    assert tz is not None
    back = local.astimezone(UTC).astimezone(tz)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def resolve_instant(value: datetime, timezone: str, fold: int = 0) -> datetime:
    """``value`` in UTC: as given when it has an offset, else as a local time in
    ``timezone`` (a gap is a 422; an overlap takes occurrence ``fold``)."""
    try:
        return _resolve_instant(value, timezone, fold)
    except OverflowError:
        # The first and last hours of the calendar cannot be moved to UTC.
        raise ValidationFailed.single(
            "scheduled_at", "is out of range once converted to UTC", "out_of_range"
        ) from None


def _resolve_instant(value: datetime, timezone: str, fold: int) -> datetime:
    if value.tzinfo is not None and value.utcoffset() is not None:
        return value.astimezone(UTC)
    tz = zone(timezone)
    local = value.replace(tzinfo=tz, fold=fold)
    if not _exists(local):
        before = (local - timedelta(hours=1)).replace(fold=0)
        raise ValidationFailed.single(
            "scheduled_at",
            f"{value.isoformat()} does not exist in {timezone} (clocks go forward that night); "
            f"choose a time before {before.astimezone(tz).strftime('%H:%M')} or after the change",
            "nonexistent_local_time",
        )
    return local.astimezone(UTC)


def calendar_open(calendar: dict[str, Any] | None, timezone: str, now: datetime) -> bool:
    """Whether ``now`` is inside the send calendar (no calendar: always)."""
    if not calendar:
        return True
    local = now.astimezone(zone(timezone))
    weekdays = calendar.get("weekdays") or [1, 2, 3, 4, 5, 6, 7]
    start = int(calendar.get("start_hour", 0))
    end = int(calendar.get("end_hour", 24))
    return local.isoweekday() in weekdays and start <= local.hour < end


def next_opening(calendar: dict[str, Any] | None, timezone: str, now: datetime) -> datetime | None:
    """The next instant the calendar opens (``now`` when open), hour by hour over two
    weeks; ``None`` when it never opens (cannot happen with a validated calendar)."""
    if calendar_open(calendar, timezone, now):
        return now
    hour = now.replace(minute=0, second=0, microsecond=0)
    for step in range(1, 24 * 15):
        candidate = hour + timedelta(hours=step)
        if calendar_open(calendar, timezone, candidate):
            return candidate
    return None
