"""Contact import batches: rows parsed, validated and encoded for the database.

This module is the import's reader side; it runs in the importer's process (small files)
or as its own process (``python -m postroom.contacts.import_batches``, see ``importer``),
so it imports no database code: a reader process starts in a fraction of a second.

Reader process protocol: argv[1] is a JSON object of :func:`import_batches` options; the
import file comes on stdin; stdout carries frames of an 8-byte big-endian length and a
pickled :class:`ImportBatch`, a zero length at the end, or a pickled ``("failed",
traceback)`` frame.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from postroom.contacts.contact_fields import ContactInput
from postroom.contacts.import_reader import ImportFormat, ImportRowError, read_import
from postroom.ids import uuid7_hex_batch

BATCH_SIZE = 2000
PreparedRow = tuple[Any, ...]


def _email_hash(email_key: str) -> str:
    # postroom.models.contacts.email_hash, without importing the models (and SQLAlchemy)
    # into the reader process; a unit test keeps the two equal.
    return hashlib.sha256(email_key.lower().encode("utf-8")).hexdigest()


# An import encodes its rows for the database where they are parsed (possibly another
# process, see ``importer``), so the writer does no per-row Python work when, as on a fresh
# import, every row is new. A prepared row is a tuple in PREPARED_COLUMNS order, holding
# the values as stored; ``status`` is None when not given (the INSERT defaults it, an update
# leaves it), and the batch's ``now`` and workspace are filled in by the INSERT.
PREPARED_COLUMNS = (
    "id",
    "email",
    "email_key",
    "email_hash",
    "external_id",
    "first_name",
    "last_name",
    "phone",
    "locale",
    "timezone",
    "attributes",
    "status",
    "opt_in",
    "consent_source",
    "consent_version",
)
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(slots=True)
class PreparedRows:
    """Encoded new-contact rows: ``rows`` (SQLite, attributes as JSON text) or ``document``
    (PostgreSQL: one JSON array of the rows); ``ids`` as 32 hex digits; ``patches`` holds,
    by row index, attributes as given when they had ``None`` values (deletions for an
    update; the inserted row simply lacks those keys)."""

    dialect: str
    ids: list[str]
    rows: list[PreparedRow] | None = None
    document: str | None = None
    patches: dict[int, dict[str, object]] = field(default_factory=dict)

    def contacts(self) -> list[ContactInput]:
        """The rows back as contacts (for the rows whose insert collided)."""
        rows: list[Any] = self.rows if self.rows is not None else json.loads(self.document or "[]")
        contacts: list[ContactInput] = []
        for index, row in enumerate(rows):
            attributes = self.patches.get(index)
            if attributes is None:
                raw = row[10]
                attributes = json.loads(raw) if isinstance(raw, str) else dict(raw)
            contacts.append(
                ContactInput(
                    row[1],
                    row[2],
                    external_id=row[4],
                    first_name=row[5],
                    last_name=row[6],
                    phone=row[7],
                    locale=row[8],
                    timezone=row[9],
                    attributes=attributes,
                    status=row[11],
                    opt_in=row[12],
                    consent_source=row[13],
                    consent_version=row[14],
                )
            )
        return contacts


class BatchEncoder:
    """Collects validated contacts into :class:`PreparedRows` for one dialect.

    :meth:`add` refuses (returns False) a contact whose email or external id is already in
    the batch: the caller ends the batch there, so the later row is applied after the
    earlier one, as an update (``ContactUpserter.upsert`` does the same with rounds).
    """

    def __init__(self, dialect: str, pool_size: int = 2000) -> None:
        self.dialect = dialect
        self._pool_size = max(1, pool_size)
        self._pool: list[str] = []
        self._ids: list[str] = []
        self._rows: list[PreparedRow] = []
        self._patches: dict[int, dict[str, object]] = {}
        self._keys: set[str] = set()
        self._externals: set[str] = set()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, contact: ContactInput) -> bool:
        key, external = contact.email_key, contact.external_id
        if key in self._keys or (external is not None and external in self._externals):
            return False
        self._keys.add(key)
        if external is not None:
            self._externals.add(external)
        if not self._pool:
            # Ids a batch at a time (one urandom call), handed out in increasing order.
            self._pool = uuid7_hex_batch(self._pool_size)
            self._pool.reverse()
        new_id = self._pool.pop()
        attributes: Any = contact.attributes
        if attributes:
            if None in attributes.values():
                self._patches[len(self._rows)] = attributes
                attributes = {k: v for k, v in attributes.items() if v is not None}
            if self.dialect != "postgresql":
                attributes = _COMPACT_JSON(attributes)
        elif self.dialect != "postgresql":
            attributes = "{}"
        status = contact.status
        if status is None and contact.subscribed is not None:
            status = "subscribed" if contact.subscribed else "unsubscribed"
        self._ids.append(new_id)
        self._rows.append(
            (
                new_id,
                contact.email,
                key,
                _email_hash(key),
                external,
                contact.first_name,
                contact.last_name,
                contact.phone,
                contact.locale,
                contact.timezone,
                attributes,
                status,
                contact.opt_in,
                contact.consent_source,
                contact.consent_version,
            )
        )
        return True

    def take(self) -> PreparedRows:
        """The batch so far; the encoder starts a new one."""
        rows, ids, patches = self._rows, self._ids, self._patches
        self._rows, self._ids, self._patches = [], [], {}
        self._keys, self._externals = set(), set()
        if self.dialect == "postgresql":
            return PreparedRows(self.dialect, ids, document=_COMPACT_JSON(rows), patches=patches)
        return PreparedRows(self.dialect, ids, rows=rows, patches=patches)


@dataclass(slots=True)
class ImportBatch:
    """A stretch of the file in order: its bad rows, and its good rows encoded."""

    errors: list[ImportRowError]
    lines: list[int]
    rows: PreparedRows | None


def import_batches(
    stream: BinaryIO,
    *,
    dialect: str,
    fmt: ImportFormat | None = None,
    mapping: Mapping[str, str] | None = None,
    filename: str | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[ImportBatch]:
    """Parse, validate and encode ``stream`` into batches (this process or the reader's).

    A batch ends at ``batch_size`` good rows, or early where a row repeats an email or
    external id of the batch (so the repeat is applied after its original), or every
    ``batch_size`` bad rows so errors too stream out.
    """
    items = read_import(stream, fmt=fmt, mapping=mapping, filename=filename)
    encoder = BatchEncoder(dialect, batch_size)
    errors: list[ImportRowError] = []
    lines: list[int] = []
    for item in items:
        if type(item) is ImportRowError:
            errors.append(item)
            if len(errors) >= batch_size:
                yield ImportBatch(errors, lines, encoder.take() if lines else None)
                errors, lines = [], []
            continue
        contact = item.contact  # type: ignore[union-attr]
        if not encoder.add(contact):
            yield ImportBatch(errors, lines, encoder.take())
            errors, lines = [], []
            encoder.add(contact)
        lines.append(item.line)
        if len(lines) >= batch_size:
            yield ImportBatch(errors, lines, encoder.take())
            errors, lines = [], []
    if errors or lines:
        yield ImportBatch(errors, lines, encoder.take() if lines else None)


def _serve(stdin: BinaryIO, stdout: BinaryIO, options: dict[str, Any]) -> None:
    try:
        for batch in import_batches(stdin, **options):
            data = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
            stdout.write(len(data).to_bytes(8, "big"))
            stdout.write(data)
            stdout.flush()  # the writer is waiting for it: never hold a batch back
        stdout.write(bytes(8))
    except BrokenPipeError:
        return  # the importer went away (cancelled or failed): nobody to report to
    except Exception:
        data = pickle.dumps(("failed", traceback.format_exc()))
        stdout.write(len(data).to_bytes(8, "big"))
        stdout.write(data)
    stdout.flush()


def main() -> None:
    options = json.loads(sys.argv[1])
    # Frames go to a private copy of stdout; anything else printing goes to stderr.
    frames = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    os.dup2(2, 1)
    with frames:
        _serve(sys.stdin.buffer, frames, options)


if __name__ == "__main__":
    # Run by name so pickled classes are postroom.contacts.import_batches.*, not __main__.*
    from postroom.contacts import import_batches as module

    module.main()
