"""Streaming contact export, and export → import round trips."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.contacts.export_writer import (
    CHUNK_CHARS,
    EXPORT_COLUMNS,
    attribute_column_header,
    csv_export_chunks,
    csv_export_chunks_async,
    jsonl_export_chunks,
    jsonl_export_chunks_async,
    neutralise_cell,
)
from postroom.contacts.import_reader import ImportRow, read_import


class Status(Enum):
    SUBSCRIBED = "subscribed"


def contact_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "email": "ann@example.com",
        "external_id": "ext-1",
        "first_name": "Ann",
        "last_name": "Lee",
        "phone": "+442079460958",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "status": "subscribed",
        "created_at": datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
        "updated_at": datetime(2024, 5, 2, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        "attributes": {},
    }
    row.update(overrides)
    return row


def import_all(data: bytes, fmt: str) -> list[ImportRow]:
    rows = []
    for item in read_import(io.BytesIO(data), fmt=fmt):  # type: ignore[arg-type]
        assert isinstance(item, ImportRow), item
        rows.append(item)
    return rows


@pytest.mark.parametrize(
    ("value", "neutralised"),
    [
        ("=SUM(A1:A2)", "'=SUM(A1:A2)"),
        ("+1 555", "'+1 555"),
        ("-2", "'-2"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=x", "''=x"),  # so the importer's "take one ' off" gives '=x back
        ("''+x", "'''+x"),
        ("'hello", "'hello"),
        ("'", "'"),
        ("a=b", "a=b"),
        ("", ""),
        ("é=", "é="),
    ],
)
def test_neutralise_cell(value: str, neutralised: str) -> None:
    assert neutralise_cell(value) == neutralised


def test_attribute_column_header_escapes_names_the_importer_would_misread() -> None:
    assert attribute_column_header("plan") == "plan"
    assert attribute_column_header("utm:source") == "utm:source"
    assert attribute_column_header("Email") == "Email:string"
    assert attribute_column_header("created_at") == "created_at:string"
    assert attribute_column_header("age:number") == "age:number:string"


def test_csv_export_layout() -> None:
    rows = [
        contact_row(
            status=Status.SUBSCRIBED,
            attributes={
                "plan": "pro",
                "seats": 3,
                "vip": True,
                "tags": ["a", "b"],
                "due": date(2024, 1, 2),
            },
        ),
        contact_row(
            email="bob@example.com", phone=None, first_name='Bob "B", Jr\nII', attributes=None
        ),
    ]
    data = b"".join(csv_export_chunks(rows, ["plan", "seats", "vip", "tags", "due", "missing"]))
    text = data.decode("utf-8")
    assert text.startswith(
        ",".join([*EXPORT_COLUMNS, "plan", "seats", "vip", "tags", "due", "missing"]) + "\r\n"
    )
    assert text.endswith("\r\n")
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert records[1] == [
        "ann@example.com",
        "ext-1",
        "Ann",
        "Lee",
        "'+442079460958",
        "en-GB",
        "Europe/London",
        "subscribed",
        "2024-05-01T09:30:00Z",
        "2024-05-02T10:00:00Z",
        "pro",
        "3",
        "true",
        '["a","b"]',
        "2024-01-02",
        "",
    ]
    assert records[2][2] == 'Bob "B", Jr\nII'
    assert records[2][4] == ""
    assert records[2][10:] == [""] * 6


def test_csv_export_streams_in_bounded_chunks() -> None:
    rows = (
        contact_row(email=f"user{i}@example.com", attributes={"note": "x" * 50})
        for i in range(20_000)
    )
    chunks = list(csv_export_chunks(rows, ["note"]))
    assert len(chunks) > 10
    assert all(len(chunk) < CHUNK_CHARS + 1_000 for chunk in chunks)
    assert b"".join(chunks).count(b"\r\n") == 20_001


def test_csv_export_bom() -> None:
    data = b"".join(csv_export_chunks([contact_row()], [], bom=True))
    assert data.startswith(b"\xef\xbb\xbfemail,")
    assert [row.contact.email for row in import_all(data, "csv")] == ["ann@example.com"]


async def test_async_variants_match_the_sync_ones() -> None:
    rows = [contact_row(email=f"user{i}@example.com", attributes={"n": i}) for i in range(3_000)]

    async def source() -> AsyncIterator[Mapping[str, object]]:
        for row in rows:
            yield row

    csv_chunks = [chunk async for chunk in csv_export_chunks_async(source(), ["n"])]
    assert b"".join(csv_chunks) == b"".join(csv_export_chunks(rows, ["n"]))
    jsonl_chunks = [chunk async for chunk in jsonl_export_chunks_async(source())]
    assert b"".join(jsonl_chunks) == b"".join(jsonl_export_chunks(rows))


def test_jsonl_export_is_not_neutralised() -> None:
    rows = [
        contact_row(
            first_name="=HYPERLINK()", phone=None, attributes={"a": "+1", "b": 2, "c": None}
        )
    ]
    lines = b"".join(jsonl_export_chunks(rows, ["a", "c", "zzz"])).decode().splitlines()
    assert len(lines) == 1
    item = json.loads(lines[0])
    assert item["first_name"] == "=HYPERLINK()"
    assert item["phone"] is None
    assert item["created_at"] == "2024-05-01T09:30:00Z"
    assert item["updated_at"] == "2024-05-02T10:00:00Z"
    assert item["attributes"] == {"a": "+1", "c": None}


def test_empty_export_is_just_the_header() -> None:
    assert (
        b"".join(csv_export_chunks([], ["plan"]))
        == (",".join([*EXPORT_COLUMNS, "plan"]) + "\r\n").encode()
    )
    assert b"".join(jsonl_export_chunks([])) == b""


# --- round trips -----------------------------------------------------------------------------

# Text a cell can hold: no NUL or lone surrogates (refused on import), not blank (blank cells
# mean "not provided"). Leading characters are drawn from the ones neutralisation is about.
_cell_text = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(
        ["", "=", "+", "-", "@", "\t", "\r", "'", "''", "'=", "''@", "\n", " ", "é", "日本"]
    ),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12),
).filter(lambda text: text != "")
_names = _cell_text.map(lambda text: text.strip()).filter(
    lambda text: text != "" and len(text) <= 255
)
_attribute_keys = st.sampled_from(
    ["plan", "Email", "first name", "age:number", "utm:source", "=calc", "'quoted", "data", "id"]
)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.tuples(_names, st.dictionaries(_attribute_keys, _cell_text, max_size=4)),
        min_size=1,
        max_size=5,
    )
)
def test_csv_export_then_import_gives_the_same_values(
    values: list[tuple[str, dict[str, str]]],
) -> None:
    rows = [
        contact_row(email=f"u{i}@example.com", first_name=name, attributes=attributes)
        for i, (name, attributes) in enumerate(values)
    ]
    keys = sorted({key for _, attributes in values for key in attributes})
    imported = import_all(b"".join(csv_export_chunks(rows, keys)), "csv")
    assert [(row.contact.first_name, row.contact.attributes) for row in imported] == values
    assert all(row.contact.phone == "+442079460958" for row in imported)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.tuples(
            _names,
            st.dictionaries(
                st.text(min_size=1, max_size=8).filter(
                    lambda key: key.strip() != "" and "\x00" not in key
                ),
                st.recursive(
                    st.none()
                    | st.booleans()
                    | st.integers()
                    | st.floats(allow_nan=False, allow_infinity=False)
                    | _cell_text,
                    lambda inner: (
                        st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from("xyz"), inner, max_size=3)
                    ),
                    max_leaves=6,
                ),
                max_size=4,
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_jsonl_export_then_import_gives_the_same_values(
    values: list[tuple[str, dict[str, object]]],
) -> None:
    rows = [
        contact_row(email=f"u{i}@example.com", first_name=name, attributes=attributes)
        for i, (name, attributes) in enumerate(values)
    ]
    imported = import_all(b"".join(jsonl_export_chunks(rows)), "jsonl")
    assert [(row.contact.first_name, row.contact.attributes) for row in imported] == values
    assert all(row.contact.timezone == "Europe/London" for row in imported)


def test_emails_starting_with_a_formula_character_survive_the_round_trip() -> None:
    rows: Iterable[Mapping[str, object]] = [
        contact_row(email="-a@example.com"),
        contact_row(email="=b@example.com"),
    ]
    imported = import_all(b"".join(csv_export_chunks(rows, [])), "csv")
    assert [row.contact.email for row in imported] == ["-a@example.com", "=b@example.com"]
