"""Streaming reader and validator for contact imports: CSV, a JSON array, or JSON lines.

:func:`read_import` yields, in file order, an :class:`ImportRow` per good record and an
:class:`ImportRowError` per bad one; nothing in the data stops it. Memory stays flat: the
stream is read in 64 KB chunks, no line or record is kept past ``max_line_bytes``, and a
longer line is skipped chunk by chunk, never held whole.

Line numbers are 1-based physical lines (``\\n``, ``\\r\\n`` or a lone ``\\r`` ends one) where a
record starts: the CSV header is line 1, a CSV record whose quoted field spans lines is
reported at its first line, a JSON array element at the line of its ``{``.

CSV
- Delimiter ``,`` ``;`` tab or ``|``: given, or sniffed from the first 64 KB (the one that
  gives the header the most columns with the most records agreeing). UTF-8, BOM or not.
  RFC 4180 quoting: doubled quotes, delimiters and newlines inside quotes.
- Columns: ``mapping`` (header → target) first, then common spellings of the fields
  (:func:`~postroom.contacts.contact_fields.canonical_key`: "E-mail", "Email Address",
  "First Name", "firstname", "Time Zone", "Language" …). Other columns are attributes named by
  the trimmed header; a ``name:type`` header types one (see ``contact_fields``). Our export's
  ``created_at``/``updated_at`` are ignored. A mapping target is a field name,
  ``attributes.NAME`` (or ``attributes.NAME:type``), or ``""`` to skip the column; mapping
  entries naming no column are ignored.
- Empty cells are "not provided". Attribute cells are kept verbatim (not trimmed). A cell the
  exporter neutralised (a ``'`` before ``= + - @``, tab or CR, see ``export_writer``) loses
  that ``'`` again, so an export re-imports unchanged.
- Too few cells: the missing ones are not provided. Too many non-empty ones: an error.
- A malformed record (bad quoting, a quoted field running into an unreadable line or past
  ``max_line_bytes``, too many cells) is reported at its first line and reading resumes at
  the line after that, so an unterminated quote costs one record, not the rest of the file.
- A field over the csv module's limit (131,072 characters) is reported as malformed: the
  limit is process-wide, so it is not raised here.

JSON: a top-level array of objects, streamed element by element (``raw_decode`` over a
sliding buffer, so a minified one-line array works; an element may not pass
``max_line_bytes``), or JSON lines, one object per line. Keys are matched like CSV headers;
an ``attributes``/``data`` object merges into the attributes (winning over top-level keys);
other keys become attributes with their JSON values as they are (``null`` included). After
a broken array element, reading resumes at the next line starting with ``{`` or the next
``},{``.

Duplicate emails are all passed on (the last one wins in the database).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Final, Literal

from postroom.contacts.contact_fields import (
    FIELD_NAMES,
    READ_ONLY_COLUMNS,
    AttributeType,
    ContactInput,
    FieldError,
    attribute_converter,
    canonical_key,
    contact_from_fields,
    convert_attribute,
    split_type_hint,
    validate_attribute_key,
    validate_attributes,
)
from postroom.contacts.export_writer import GUARDED_START

ImportFormat = Literal["csv", "json", "jsonl"]
DELIMITERS: Final = (",", ";", "\t", "|")
SNIFF_BYTES: Final = 65_536
_CHUNK_BYTES: Final = 65_536
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")


@dataclass(slots=True)
class ImportRow:
    line: int
    contact: ContactInput


@dataclass(slots=True)
class ImportRowError:
    line: int
    message: str
    field: str | None = None
    code: str = "invalid"


# A column's or key's destination: ("field", name, None), ("attribute", name, type or None),
# ("nested", "attributes", None) for a JSON attributes/data object, or ("skip", "", None).
_Target = tuple[str, str, AttributeType | None]
_Layout = tuple[list[tuple[str, str]], list[tuple[str, str]]]
_SKIP: Final[_Target] = ("skip", "", None)


def detect_format(head: bytes, filename: str | None) -> ImportFormat:
    """Guess the format from the file name (``.csv .tsv .jsonl .ndjson``) or the first bytes."""
    name = (filename or "").lower()
    if name.endswith((".csv", ".tsv", ".tab")):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".jsonlines")):
        return "jsonl"
    text = head.removeprefix(_UTF8_BOM).lstrip(b" \t\r\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        # One complete object on the first line means JSON lines; a pretty-printed object
        # spanning lines is read as a (whitespace-separated) JSON stream.
        first = text.splitlines()[0].decode("utf-8", errors="replace")
        try:
            json.loads(first)
        except ValueError:
            return "json"
        return "jsonl"
    return "csv"


def read_import(
    stream: BinaryIO,
    *,
    fmt: ImportFormat | None = None,
    mapping: Mapping[str, str] | None = None,
    max_line_bytes: int = 1_000_000,
    delimiter: str | None = None,
    default_region: str | None = None,
    filename: str | None = None,
) -> Iterator[ImportRow | ImportRowError]:
    """Read contacts from ``stream``; see the module docstring for the rules.

    Raises :class:`FieldError` at once (not when iterated) for a bad ``mapping`` or
    ``delimiter``; problems in the data are yielded as :class:`ImportRowError`.
    """
    targets = {
        source.strip(): _mapping_target(source, target)
        for source, target in (mapping or {}).items()
    }
    if delimiter is not None and delimiter not in DELIMITERS:
        raise FieldError("delimiter", "must be one of , ; | or a tab", "invalid")
    if max_line_bytes < 1:
        raise ValueError("max_line_bytes must be positive")
    options = _Options(targets, max_line_bytes, delimiter, default_region)
    return _read(stream, fmt, filename, options)


@dataclass(slots=True, frozen=True)
class _Options:
    targets: dict[str, _Target]
    limit: int
    delimiter: str | None
    default_region: str | None


def _mapping_target(source: str, target: str) -> _Target:
    target = target.strip()
    if not target:
        return _SKIP
    if target in FIELD_NAMES:
        return ("field", target, None)
    if target.startswith("attributes.") and len(target) > len("attributes."):
        name, kind = split_type_hint(target[len("attributes.") :])
        return ("attribute", name, kind)
    raise FieldError(
        f"mapping.{source}",
        f"'{target}' is not a contact field, 'attributes.NAME' or '' (skip)",
        "unknown_field",
    )


def _read(
    stream: BinaryIO, fmt: ImportFormat | None, filename: str | None, options: _Options
) -> Iterator[ImportRow | ImportRowError]:
    head = b""
    while len(head) < SNIFF_BYTES:
        chunk = stream.read(SNIFF_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    if head.startswith(_UTF16_BOMS):
        yield ImportRowError(1, "the file is UTF-16; save it as UTF-8", None, "invalid_encoding")
        return
    head = head.removeprefix(_UTF8_BOM)
    chosen = fmt or detect_format(head, filename)
    chunks = _chunks(head, stream)
    if chosen == "csv":
        yield from _read_csv(chunks, options.delimiter or _sniff_delimiter(head), options)
    elif chosen == "jsonl":
        yield from _read_json_lines(chunks, options)
    else:
        builder = _JsonRowBuilder(options)
        for item in _JsonArrayScanner(chunks, options.limit).elements():
            yield item if isinstance(item, ImportRowError) else builder.build(*item)


def _chunks(head: bytes, stream: BinaryIO) -> Iterator[bytes]:
    if head:
        yield head
    while chunk := stream.read(_CHUNK_BYTES):
        yield chunk


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _physical_lines(chunks: Iterator[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """``(number, line with its terminator)``; ``None`` for a line longer than ``limit``.

    A long line is dropped chunk by chunk as it streams past: it is never held whole.
    """
    number = 0
    rest = b""
    skipping = False  # inside an over-long line, discarding up to its end
    drop_lf = False  # a line ended with a chunk's last "\r": a "\n" next belongs to it
    for chunk in chunks:
        if drop_lf:
            drop_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if skipping:
            end = _LINE_END.search(chunk)
            if end is None:
                continue
            skipping = False
            drop_lf = end.end() == len(chunk) and chunk.endswith(b"\r")
            chunk = chunk[end.end() :]
        data = rest + chunk if rest else chunk
        lines = data.splitlines(keepends=True)
        # The last piece is held back unless it ends with "\n": it is either incomplete or
        # ends with "\r", which the next chunk may continue with "\n".
        rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        for line in lines:
            number += 1
            yield number, (line if len(line) <= limit else None)
        if len(rest) > limit:
            number += 1
            yield number, None
            if rest.endswith(b"\r"):
                drop_lf = True
            else:
                skipping = True
            rest = b""
    if rest:
        yield number + 1, (rest if len(rest) <= limit else None)


def _sniff_delimiter(head: bytes) -> str:
    lines = io.StringIO(head.decode("utf-8", errors="replace"), newline="").readlines()
    if len(head) >= SNIFF_BYTES and len(lines) > 1:
        lines.pop()  # probably cut short
    best, best_score = ",", (0.0, 1)
    for candidate in DELIMITERS:
        counts: list[int] = []
        try:
            for cells in csv.reader(lines, delimiter=candidate):
                if cells:
                    counts.append(len(cells))
        except csv.Error:
            pass  # judge on what parsed before the damage
        if not counts or counts[0] < 2:
            continue
        agreeing = sum(1 for count in counts if count == counts[0]) / len(counts)
        if (agreeing, counts[0]) > best_score:
            best, best_score = candidate, (agreeing, counts[0])
    return best


# --- CSV -----------------------------------------------------------------------------------


class _UnreadableLine(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _RecordTooLong(Exception):
    pass


class _CsvRecords:
    """csv.reader over physical lines this class hands it, so it knows each record's first
    line, can cap a record's size and can re-read the lines after a malformed record's first.
    """

    def __init__(self, lines: Iterator[tuple[int, bytes | None]], delimiter: str, limit: int):
        self._lines = lines
        self._delimiter = delimiter
        self._limit = limit
        self._pushback: list[tuple[int, bytes | None]] = []  # a stack: next line on top
        self._pending: list[tuple[int, bytes | None]] = []  # lines of the record being read
        self._last_extra: list[tuple[int, bytes | None]] = []  # last record's lines past its first

    def reject_last(self) -> None:
        """The record just yielded is malformed: re-read from the line after its first."""
        self._pushback.extend(reversed(self._last_extra))

    def __iter__(self) -> Iterator[tuple[int, list[str]] | ImportRowError]:
        pending = self._pending
        while True:
            reader = csv.reader(self._feed(), delimiter=self._delimiter, strict=True)
            try:
                for cells in reader:
                    start = pending[0][0]
                    self._last_extra = pending[1:] if len(pending) > 1 else []
                    pending.clear()
                    yield start, cells
                return
            except _UnreadableLine as exc:
                if len(pending) == 1:
                    yield ImportRowError(pending[0][0], exc.message, None, exc.code)
                    pending.clear()
                else:
                    bad_line = pending[-1][0]
                    yield self._malformed(
                        f"a quoted field runs into line {bad_line}, which is unreadable"
                    )
            except _RecordTooLong:
                yield self._malformed(
                    f"the record is longer than {self._limit} bytes (a quoted field not closed?)"
                )
            except csv.Error as exc:
                reason = "a quoted field is not closed" if "end of data" in str(exc) else str(exc)
                yield self._malformed(reason)

    def _malformed(self, reason: str) -> ImportRowError:
        pending = self._pending
        error = ImportRowError(pending[0][0], f"malformed CSV record: {reason}", None, "malformed")
        self._pushback.extend(reversed(pending[1:]))
        pending.clear()
        return error

    def _feed(self) -> Iterator[str]:
        pending, pushback, lines, limit = self._pending, self._pushback, self._lines, self._limit
        size = 0
        while True:
            if pushback:
                item = pushback.pop()
            else:
                next_item = next(lines, None)
                if next_item is None:
                    return
                item = next_item
            pending.append(item)
            raw = item[1]
            if raw is None:
                raise _UnreadableLine(f"the line is longer than {limit} bytes", "line_too_long")
            if len(pending) == 1:
                size = len(raw)
            else:
                size += len(raw)
                if size > limit:
                    raise _RecordTooLong
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _UnreadableLine(
                    f"invalid UTF-8 (byte {exc.start + 1} of the line)", "invalid_utf8"
                ) from None
            if "\x00" in text:
                raise _UnreadableLine("the line contains a NUL character", "invalid")
            yield text


def _unguard(cell: str) -> str:
    return cell[1:] if cell[:1] == "'" and GUARDED_START.match(cell, 1) else cell


@dataclass(slots=True)
class _ColumnPlan:
    """Which cell feeds which field or attribute, split by kind for a tight row loop."""

    width: int
    fields: list[tuple[int, str]]
    text_attributes: list[tuple[int, str]]
    typed_attributes: list[tuple[int, str, Callable[[str], object]]]


def _read_csv(
    chunks: Iterator[bytes], delimiter: str, options: _Options
) -> Iterator[ImportRow | ImportRowError]:
    records = _CsvRecords(_physical_lines(chunks, options.limit), delimiter, options.limit)
    plan: _ColumnPlan | None = None
    region = options.default_region
    for record in records:
        if isinstance(record, ImportRowError):
            yield record
            if plan is None:
                return  # without a header no record can be read
            continue
        line, cells = record
        if not cells:
            continue  # blank line
        if plan is None:
            header = _column_plan(cells, options.targets)
            if isinstance(header, str):
                yield ImportRowError(line, header, None, "invalid_header")
                return
            plan = header
            continue
        count, width = len(cells), plan.width
        if count != width:
            if count > width and any(cells[width:]):
                records.reject_last()
                message = f"{count} cells where the header has {width}"
                yield ImportRowError(line, message, None, "too_many_cells")
                continue
            cells.extend([""] * (width - count))  # missing cells are not provided
        # Comprehensions, not a loop with branches: this is the import's hot path.
        fields: dict[str, object] = {
            name: cell if cell[0] != "'" else _unguard(cell)
            for index, name in plan.fields
            if (cell := cells[index])
        }
        attributes: dict[str, object] = {
            name: cell if cell[0] != "'" else _unguard(cell)
            for index, name in plan.text_attributes
            if (cell := cells[index])
        }
        try:
            for index, name, convert in plan.typed_attributes:
                if cell := cells[index]:
                    attributes[name] = convert(cell if cell[0] != "'" else _unguard(cell))
            if fields or attributes:  # else every cell is empty: a blank record
                contact = contact_from_fields(fields, attributes, default_region=region)
                yield ImportRow(line, contact)
        except FieldError as exc:
            yield ImportRowError(line, exc.message, exc.field, exc.code)


def _column_plan(header: list[str], targets: Mapping[str, _Target]) -> _ColumnPlan | str:
    """Where each column goes, or what is wrong with the header."""
    plan = _ColumnPlan(len(header), [], [], [])
    seen: dict[tuple[str, str], str] = {}
    for index, raw in enumerate(header):
        text = _unguard(raw).strip()
        if not text:
            continue
        target = targets.get(text) or _header_target(text)
        kind, name, attribute_type = target
        if kind == "skip":
            continue
        if kind == "attribute":
            try:
                validate_attribute_key(name)
            except FieldError as exc:
                return f"column '{text}': {exc.message}"
        previous = seen.get((kind, name))
        if previous is not None:
            return f"columns '{previous}' and '{text}' both fill {kind} '{name}'"
        seen[(kind, name)] = text
        if kind == "field":
            plan.fields.append((index, name))
        elif attribute_type is None:
            plan.text_attributes.append((index, name))
        else:
            plan.typed_attributes.append((index, name, attribute_converter(name, attribute_type)))
    if ("field", "email") not in seen:
        return "no email column: name one 'email' (or 'E-mail', 'Email Address') or map one"
    return plan


def _header_target(text: str) -> _Target:
    name, kind = split_type_hint(text)
    if kind is not None:
        return ("attribute", name, kind)
    canonical = canonical_key(text)
    if canonical in READ_ONLY_COLUMNS:
        return _SKIP
    if canonical is not None and canonical != "attributes":
        return ("field", canonical, None)
    return ("attribute", text, None)


# --- JSON ----------------------------------------------------------------------------------


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


# Refusing NaN, Infinity and overflowing numbers while parsing means a parsed value is always
# storable JSON; without a \u0000 or \uD800-\uDFFF escape in its text (raw control characters
# are refused by the parser, raw surrogates cannot come out of strict UTF-8) it cannot hold
# NUL or a lone surrogate either, so such a row skips the value-by-value attribute check.
# The pattern may also match an escaped backslash before "u": that only costs the check.
_RISKY_ESCAPE: Final = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")
_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_CACHE_LIMIT: Final = 10_000


class _JsonRowBuilder:
    def __init__(self, options: _Options) -> None:
        self._targets = dict(options.targets)  # grows into a cache of every key seen
        self._region = options.default_region
        self._good_nested_keys: set[str] = set()
        # Objects in a file mostly share their keys: per key tuple, the (key, field) and
        # (key, attribute) pairs when every key is a plain field or attribute, else None.
        self._layouts: dict[tuple[str, ...], _Layout | None] = {}

    def _target(self, key: str) -> _Target:
        canonical = canonical_key(key)
        target: _Target
        if canonical in READ_ONLY_COLUMNS:
            target = _SKIP
        elif canonical == "attributes":
            target = ("nested", "attributes", None)
        elif canonical is not None:
            target = ("field", canonical, None)
        else:
            try:
                target = ("attribute", validate_attribute_key(key), None)
            except FieldError as exc:
                target = ("invalid", exc.message, None)
        if len(self._targets) < _CACHE_LIMIT:
            self._targets[key] = target
        return target

    def _layout(self, keys: tuple[str, ...]) -> _Layout | None:
        fields: list[tuple[str, str]] = []
        attributes: list[tuple[str, str]] = []
        layout: _Layout | None = (fields, attributes)
        for key in keys:
            kind, name, attribute_type = self._targets.get(key) or self._target(key)
            if kind == "field" and all(name != field for _, field in fields):
                fields.append((key, name))
            elif kind == "attribute" and attribute_type is None:
                attributes.append((key, name))
            elif kind != "skip":
                layout = None
        if len(self._layouts) < _CACHE_LIMIT:
            self._layouts[keys] = layout
        return layout

    def build(self, line: int, item: object, trusted: bool) -> ImportRow | ImportRowError:
        """A contact from one object; ``trusted``: its text had no risky escape."""
        if not isinstance(item, dict):
            return ImportRowError(line, "expected a JSON object", None, "invalid_json")
        keys = tuple(item)
        layout = self._layouts[keys] if keys in self._layouts else self._layout(keys)
        if layout is not None:  # the common case, in two comprehensions
            try:
                contact = contact_from_fields(
                    {name: item[key] for key, name in layout[0]},
                    {name: item[key] for key, name in layout[1]}
                    if trusted
                    else validate_attributes({name: item[key] for key, name in layout[1]}),
                    default_region=self._region,
                )
            except FieldError as exc:
                return ImportRowError(line, exc.message, exc.field, exc.code)
            return ImportRow(line, contact)
        return self._build_any(line, item, trusted)

    def _build_any(
        self, line: int, item: dict[str, object], trusted: bool
    ) -> ImportRow | ImportRowError:
        targets = self._targets
        fields: dict[str, object] = {}
        attributes: dict[str, object] = {}
        nested: dict[str, object] = {}
        try:
            for key, value in item.items():
                kind, name, attribute_type = targets.get(key) or self._target(key)
                if kind == "attribute":
                    if attribute_type is not None and isinstance(value, str):
                        value = convert_attribute(name, attribute_type, value)
                    attributes[name] = value
                elif kind == "field":
                    if name in fields:
                        raise FieldError(name, f"given twice (key '{key}')", "duplicate")
                    fields[name] = value
                elif kind == "nested" and value is not None:
                    if not isinstance(value, dict):
                        raise FieldError(key, "must be a JSON object", "invalid_type")
                    nested.update(value)
                elif kind == "invalid":
                    raise FieldError("attributes", name, "invalid")
            if nested:
                self._check_nested_keys(nested)
                attributes.update(nested)
            if attributes and not trusted:
                attributes = validate_attributes(attributes)
            contact = contact_from_fields(fields, attributes, default_region=self._region)
        except FieldError as exc:
            return ImportRowError(line, exc.message, exc.field, exc.code)
        return ImportRow(line, contact)

    def _check_nested_keys(self, nested: dict[str, object]) -> None:
        good = self._good_nested_keys
        for key in nested:
            if key not in good:
                validate_attribute_key(key)
                if len(good) < _CACHE_LIMIT:
                    good.add(key)


def _read_json_lines(
    chunks: Iterator[bytes], options: _Options
) -> Iterator[ImportRow | ImportRowError]:
    builder = _JsonRowBuilder(options)
    decode = _JSON_DECODER.decode
    for number, raw in _physical_lines(chunks, options.limit):
        if raw is None:
            yield ImportRowError(
                number, f"the line is longer than {options.limit} bytes", None, "line_too_long"
            )
            continue
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield ImportRowError(
                number, f"invalid UTF-8 (byte {exc.start + 1})", None, "invalid_utf8"
            )
            continue
        try:
            item = decode(text)
        except ValueError as exc:
            yield ImportRowError(number, f"invalid JSON: {exc}", None, "invalid_json")
            continue
        yield builder.build(number, item, _RISKY_ESCAPE.search(text) is None)


_NOT_WHITESPACE = re.compile(r"[^ \t\n]")
_NOT_SEPARATOR = re.compile(r"[^ \t\n,\]]")
# Where the next element probably starts after a broken one: a line opening with "{" (a
# pretty-printed array) or "}," then "{" (a minified one).
_RESYNC = re.compile(r"(?:\n[ \t]*,?[ \t]*|\}[ \t\n]*,[ \t\n]*)(?=\{)")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bad UTF-8


class _JsonArrayScanner:
    """Elements of a top-level JSON array (or of whitespace-separated objects), streamed.

    Text is decoded with ``surrogateescape`` so invalid UTF-8 is caught per element, and line
    ends are normalised to ``\\n`` (JSON allows raw CR/LF only as whitespace) to count lines.
    """

    def __init__(self, chunks: Iterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._held_cr = False
        self._bad_bytes_seen = False
        self._line = 1  # the line number at offset _line_pos
        self._line_pos = 0

    def _fill(self) -> None:
        chunk = next(self._chunks, None)
        if chunk is None:
            text = self._utf8.decode(b"", final=True)
            self._eof = True
        else:
            text = self._utf8.decode(chunk)
        if self._held_cr:
            text = "\r" + text
            self._held_cr = False
        if "\r" in text:
            if text.endswith("\r") and not self._eof:
                text, self._held_cr = text[:-1], True
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if not self._bad_bytes_seen and _ESCAPED_BYTE.search(text):
            self._bad_bytes_seen = True
        if self._pos:
            self._line_at(self._pos)
            self._buf = self._buf[self._pos :]
            self._line_pos = 0
            self._pos = 0
        self._buf += text

    def _line_at(self, pos: int) -> int:
        self._line += self._buf.count("\n", self._line_pos, pos)
        self._line_pos = pos
        return self._line

    def _peek(self, skipping: re.Pattern[str] = _NOT_WHITESPACE) -> str:
        """The next character ``skipping`` finds ("" at the end), at ``self._pos``."""
        while True:
            found = skipping.search(self._buf, self._pos)
            if found is not None:
                self._pos = found.start()
                return self._buf[self._pos]
            self._pos = len(self._buf)
            if self._eof:
                return ""
            self._fill()

    def elements(self) -> Iterator[tuple[int, object, bool] | ImportRowError]:
        first = self._peek()
        if first == "[":
            self._pos += 1
        elif first != "{":
            if first:
                yield ImportRowError(
                    self._line_at(self._pos),
                    "expected a JSON array of objects",
                    None,
                    "invalid_json",
                )
            return
        while True:
            # Separators are skipped, not checked: nothing is lost either way.
            char = self._peek(_NOT_SEPARATOR)
            if char == "":
                return
            if char != "{":
                yield self._broken("expected a JSON object")
                continue
            yield self._decode_element()

    def _decode_element(self) -> tuple[int, object, bool] | ImportRowError:
        """``(line, value, trusted)`` for the element at ``self._pos`` (see _RISKY_ESCAPE)."""
        while True:
            start = self._pos
            try:
                value, end = _JSON_DECODER.raw_decode(self._buf, start)
            except json.JSONDecodeError as exc:
                # An error in the buffer's last bytes may just be a cut (an escape, a number, a
                # literal); an unterminated string may close in the next chunk.
                truncated = (
                    exc.msg.startswith("Unterminated string") or exc.pos >= len(self._buf) - 16
                )
                if not truncated or self._eof:
                    return self._broken(f"invalid JSON: {exc.msg}")
                if len(self._buf) - start > self._limit:
                    message = f"the object is longer than {self._limit} bytes (not closed?)"
                    return self._broken(message, "too_long")
                self._fill()
                continue
            except ValueError as exc:  # NaN, Infinity, a number out of range
                return self._broken(f"invalid JSON: {exc}")
            line = self._line_at(start)
            self._pos = end
            if end - start > self._limit:
                message = f"the object is longer than {self._limit} bytes"
                return ImportRowError(line, message, None, "too_long")
            if self._bad_bytes_seen and _ESCAPED_BYTE.search(self._buf, start, end):
                return ImportRowError(line, "invalid UTF-8", None, "invalid_utf8")
            return line, value, _RISKY_ESCAPE.search(self._buf, start, end) is None

    def _broken(self, message: str, code: str = "invalid_json") -> ImportRowError:
        """Report the element at ``self._pos`` and move on to where the next one probably is."""
        error = ImportRowError(self._line_at(self._pos), message, None, code)
        search_from = self._pos + 1
        while True:
            match = _RESYNC.search(self._buf, search_from)
            if match is not None:
                self._pos = match.end()
                return error
            if self._eof:
                self._pos = len(self._buf)
                return error
            # Keep a tail a resync pattern may start in; drop the rest as the buffer refills.
            self._pos = max(search_from, len(self._buf) - 64)
            self._fill()
            search_from = self._pos
