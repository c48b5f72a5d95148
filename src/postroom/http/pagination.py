"""Cursor pagination: ``{"data": [...], "next_cursor": "…" | null}``.

Ids are UUIDv7, so ordering by id is ordering by creation; the cursor is the last id
seen, encoded so clients treat it as opaque.
"""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from postroom.errors import ValidationFailed

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed.single("cursor", "is not a cursor this API returned") from None


def decode_id_cursor(cursor: str | None) -> uuid.UUID | None:
    if cursor is None:
        return None
    try:
        return uuid.UUID(decode_cursor(cursor))
    except ValueError:
        raise ValidationFailed.single("cursor", "is not a cursor this API returned") from None


# Integer cursors (sequence and version numbers) name BIGINT columns: a larger number
# cannot be bound as a query parameter (SQLite refuses it outright).
MAX_INT_CURSOR = 2**63 - 1


def decode_int_cursor(cursor: str | None) -> int | None:
    """The non-negative integer inside a cursor (``None`` for no cursor)."""
    if cursor is None:
        return None
    raw = decode_cursor(cursor)
    # ``str.isdigit`` also accepts digits ``int`` refuses ("²"): ASCII digits only.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_INT_CURSOR:
        raise ValidationFailed.single("cursor", "is not a cursor this API returned")
    return int(raw)


class PageParams(BaseModel):
    limit: int
    cursor: str | None

    @property
    def after_id(self) -> uuid.UUID | None:
        return decode_id_cursor(self.cursor)


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


def page_of(rows: list[Any], limit: int, key: Any = None) -> tuple[list[Any], str | None]:
    """Given up to ``limit + 1`` rows, the page and the next cursor."""
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        return rows, encode_cursor(str(key(last) if key else last.id))
    return rows, None
