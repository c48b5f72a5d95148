"""Streaming contact export: CSV for spreadsheets, JSON lines for programs.

Both take rows as mappings (``email``, ``external_id`` … ``updated_at`` as in
:data:`EXPORT_COLUMNS`, plus ``attributes``: a mapping) from a sync or an async iterable and
yield UTF-8 ``bytes`` chunks of about 64 KB, never the whole file, so memory stays flat
whatever the export's size.

CSV (RFC 4180: header first, CRLF line ends, quotes only where needed)
- Columns: :data:`EXPORT_COLUMNS`, then one per requested attribute key. An attribute whose
  header would read back as something else (a field's name such as ``Email``, or a ``:type``
  suffix such as ``age:number``) gets the header ``KEY:string``, which the importer reads as
  exactly that attribute.
- Cells: ``None`` → empty, bools → ``true``/``false``, numbers as Python prints them,
  datetimes → RFC 3339 UTC (``2024-05-01T09:30:00Z``, naive means UTC), dates → ISO,
  lists and objects → compact JSON.
- Formula injection: a text cell (header cells too) starting with ``=``, ``+``, ``-``, ``@``,
  tab or CR gets a leading ``'``, so a spreadsheet shows it as text instead of running it
  (OWASP "CSV injection"). So that every value survives an export → import round trip, a
  value starting with apostrophes and then one of those characters (``'=1``) gets one more,
  and the importer takes exactly one ``'`` off any cell of that shape. Numbers are never
  prefixed: ``-5`` stays a number for the spreadsheet.

JSON lines: one object per contact with every export column (``null`` when unset) and
``attributes`` as an object. Nothing is neutralised: JSON is not opened by spreadsheets, and
rewriting values there would only corrupt them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from enum import Enum
from typing import Final

from postroom.contacts.contact_fields import canonical_key, split_type_hint

EXPORT_COLUMNS: Final[tuple[str, ...]] = (
    "email",
    "external_id",
    "first_name",
    "last_name",
    "phone",
    "locale",
    "timezone",
    "status",
    "created_at",
    "updated_at",
)
CHUNK_CHARS: Final = 65_536
# A value of this shape is written with one more leading "'"; the importer removes one.
GUARDED_START: Final = re.compile(r"'*[=+\-@\t\r]")
_GUARD_FIRST_CHARS: Final = frozenset("=+-@\t\r'")


def neutralise_cell(value: str) -> str:
    """``value`` with a leading ``'`` if a spreadsheet could run it as a formula."""
    if value and value[0] in _GUARD_FIRST_CHARS and GUARDED_START.match(value):
        return "'" + value
    return value


def attribute_column_header(key: str, kind_hint: str | None = None) -> str:
    """The CSV header for attribute ``key`` that the importer reads back as that attribute;
    ``kind_hint`` (``number``, ``boolean``) types the column so values keep their JSON type."""
    if kind_hint in ("number", "boolean"):
        return f"{key}:{kind_hint}"
    _name, kind = split_type_hint(key)
    if kind is None and canonical_key(key) is None:
        return key
    return key + ":string"


def _timestamp(value: datetime) -> str:
    if value.tzinfo is not UTC:  # rows from the database are already UTC: skip the work
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat()[:-6] + "Z"


def _compact_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return str(value)  # UUIDs, decimals


def _csv_cell(value: object) -> str:
    if type(value) is str:
        return neutralise_cell(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return _csv_cell(value.value)
    if isinstance(value, Mapping | list | tuple):
        return neutralise_cell(_compact_json(value))
    return neutralise_cell(str(value))


class _CsvEncoder:
    """Rows into a text buffer through the C csv writer; :meth:`take` drains it as bytes."""

    def __init__(
        self, attribute_keys: Sequence[str], bom: bool, types: Mapping[str, str] | None = None
    ) -> None:
        self._keys = tuple(attribute_keys)
        types = types or {}
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")
        if bom:
            self._buffer.write("\ufeff")
        header = [
            *EXPORT_COLUMNS,
            *(attribute_column_header(key, types.get(key)) for key in self._keys),
        ]
        self._writer.writerow([neutralise_cell(name) for name in header])

    def write(self, row: Mapping[str, object]) -> None:
        # Text that needs no guard is by far the most common cell: it is passed through
        # inline, since a function call per cell would cost more than the CSV writing.
        cell, first_chars = _csv_cell, _GUARD_FIRST_CHARS
        cells = [
            value
            if type(value) is str and (not value or value[0] not in first_chars)
            else cell(value)
            for value in map(row.get, EXPORT_COLUMNS)
        ]
        if self._keys:
            attributes = row.get("attributes")
            if isinstance(attributes, Mapping):
                cells.extend(
                    [
                        value
                        if type(value) is str and (not value or value[0] not in first_chars)
                        else cell(value)
                        for value in map(attributes.get, self._keys)
                    ]
                )
            else:
                cells.extend([""] * len(self._keys))
        self._writer.writerow(cells)

    def take(self, at_least: int = CHUNK_CHARS) -> bytes | None:
        if self._buffer.tell() < at_least:
            return None
        data = self._buffer.getvalue().encode("utf-8")
        self._buffer.seek(0)
        self._buffer.truncate()
        return data


class CsvCellsEncoder(_CsvEncoder):
    """Rows whose cells are already CSV text (computed by the query, see ``export_sql``):
    everything after the first element of each row goes to the C writer as it is."""

    def __init__(self, attribute_keys: Sequence[str], types: Mapping[str, str]) -> None:
        super().__init__(attribute_keys, bom=False, types=types)

    def write_page(self, page: Sequence[Sequence[object]]) -> bytes | None:
        self._writer.writerows(row[1:] for row in page)
        return self.take()


def csv_export_chunks(
    rows: Iterable[Mapping[str, object]], attribute_keys: Sequence[str], *, bom: bool = False
) -> Iterator[bytes]:
    """CSV bytes in ~64 KB chunks, header first. ``bom`` prefixes a UTF-8 BOM (for Excel)."""
    encoder = _CsvEncoder(attribute_keys, bom)
    for row in rows:
        encoder.write(row)
        if (chunk := encoder.take()) is not None:
            yield chunk
    if (chunk := encoder.take(at_least=1)) is not None:
        yield chunk


async def csv_export_chunks_async(
    rows: AsyncIterable[Mapping[str, object]],
    attribute_keys: Sequence[str],
    *,
    bom: bool = False,
    attribute_types: Mapping[str, str] | None = None,
) -> AsyncIterator[bytes]:
    """:func:`csv_export_chunks` over an async source (a streamed database query).
    ``attribute_types`` maps keys whose values all share a JSON type (``number``,
    ``boolean``) to it, so the re-import gives numbers and booleans back, not text."""
    encoder = _CsvEncoder(attribute_keys, bom, attribute_types)
    async for row in rows:
        encoder.write(row)
        if (chunk := encoder.take()) is not None:
            yield chunk
    if (chunk := encoder.take(at_least=1)) is not None:
        yield chunk


_JSON_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_json_default
)


class _JsonLinesEncoder:
    def __init__(self, attribute_keys: Sequence[str] | None) -> None:
        self._keys = None if attribute_keys is None else tuple(attribute_keys)
        self._parts: list[str] = []
        self._size = 0

    def write(self, row: Mapping[str, object]) -> None:
        item: dict[str, object] = {column: row.get(column) for column in EXPORT_COLUMNS}
        for column in ("created_at", "updated_at"):
            moment = item[column]
            if isinstance(moment, datetime):
                item[column] = _timestamp(moment)
        attributes = row.get("attributes")
        if not isinstance(attributes, Mapping):
            attributes = {}
        if self._keys is not None:
            attributes = {key: attributes[key] for key in self._keys if key in attributes}
        item["attributes"] = attributes
        line = _JSON_ENCODER.encode(item) + "\n"
        self._parts.append(line)
        self._size += len(line)

    def take(self, at_least: int = CHUNK_CHARS) -> bytes | None:
        if self._size < at_least:
            return None
        data = "".join(self._parts).encode("utf-8")
        self._parts.clear()
        self._size = 0
        return data


def jsonl_export_chunks(
    rows: Iterable[Mapping[str, object]], attribute_keys: Sequence[str] | None = None
) -> Iterator[bytes]:
    """JSON lines in ~64 KB chunks; ``attribute_keys`` limits the attributes (``None``: all)."""
    encoder = _JsonLinesEncoder(attribute_keys)
    for row in rows:
        encoder.write(row)
        if (chunk := encoder.take()) is not None:
            yield chunk
    if (chunk := encoder.take(at_least=1)) is not None:
        yield chunk


async def jsonl_export_chunks_async(
    rows: AsyncIterable[Mapping[str, object]], attribute_keys: Sequence[str] | None = None
) -> AsyncIterator[bytes]:
    """:func:`jsonl_export_chunks` over an async source."""
    encoder = _JsonLinesEncoder(attribute_keys)
    async for row in rows:
        encoder.write(row)
        if (chunk := encoder.take()) is not None:
            yield chunk
    if (chunk := encoder.take(at_least=1)) is not None:
        yield chunk
