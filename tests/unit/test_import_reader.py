"""The streaming contact import reader: CSV, JSON arrays, JSON lines, and bad data in them."""

from __future__ import annotations

import io
import itertools
import json
import tracemalloc
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.contacts.contact_fields import FieldError
from postroom.contacts.import_reader import (
    ImportRow,
    ImportRowError,
    _JsonArrayScanner,
    _physical_lines,
    detect_format,
    read_import,
)


def read(data: bytes, **options: object) -> tuple[list[ImportRow], list[ImportRowError]]:
    rows: list[ImportRow] = []
    errors: list[ImportRowError] = []
    for item in read_import(io.BytesIO(data), **options):  # type: ignore[arg-type]
        (rows if isinstance(item, ImportRow) else errors).append(item)  # type: ignore[arg-type]
    return rows, errors


def emails_by_line(rows: Iterable[ImportRow]) -> list[tuple[int, str]]:
    return [(row.line, row.contact.email) for row in rows]


def errors_by_line(errors: Iterable[ImportRowError]) -> list[tuple[int, str]]:
    return [(error.line, error.code) for error in errors]


# --- CSV: the mixed file from the issue -------------------------------------------------------


def test_mixed_csv_yields_good_rows_and_reports_bad_lines_with_their_numbers() -> None:
    data = b"".join(
        [
            b"Email,First Name,Plan,Notes\r\n",  # 1
            b"a@example.com,Ann,pro,hi\r\n",  # 2
            b"not-an-email,Bob,free,\r\n",  # 3 bad email
            b"c@example.com,Cy,free,x,unexpected\r\n",  # 4 too many cells
            b"d@example.com,Dee\r\n",  # 5 too few: tolerated
            b'e@example.com,"Ed ""the"" Man",free,"multi\r\n',  # 6 quoted newline …
            b'line note"\r\n',  # 7 … ends here
            b'f@example.com,"Fay,free,\r\n',  # 8 unterminated quote
            b"g@example.com,Gus,free,ok\r\n",  # 9
            b"h@example.com,H\xe9l\xe8ne,pro,\r\n",  # 10 Latin-1, not UTF-8
            b"i@example.com," + b"x" * (10 * 1024 * 1024) + b",pro,\r\n",  # 11 a 10 MB line
            b"j@example.com,Jo,pro,last\r\n",  # 12
            b"a@example.com,Ann again,pro,\r\n",  # 13 duplicate email: passed on
        ]
    )
    rows, errors = read(data)

    assert emails_by_line(rows) == [
        (2, "a@example.com"),
        (5, "d@example.com"),
        (6, "e@example.com"),
        (9, "g@example.com"),
        (12, "j@example.com"),
        (13, "a@example.com"),
    ]
    assert errors_by_line(errors) == [
        (3, "invalid_email"),
        (4, "too_many_cells"),
        (8, "malformed"),
        (10, "invalid_utf8"),
        (11, "line_too_long"),
    ]
    assert errors[0].field == "email"
    by_line = {row.line: row.contact for row in rows}
    assert by_line[2].attributes == {"Plan": "pro", "Notes": "hi"}  # unknown columns
    assert by_line[5].first_name == "Dee"
    assert by_line[5].attributes == {}  # missing cells are not provided
    assert by_line[6].first_name == 'Ed "the" Man'
    assert by_line[6].attributes == {"Plan": "free", "Notes": "multi\r\nline note"}
    assert by_line[13].first_name == "Ann again"


def test_a_ten_megabyte_line_is_skipped_without_being_held_in_memory() -> None:
    data = b"email,name\n" + b"a@example.com," + b"y" * (10 * 1024 * 1024) + b"\nb@example.com,B\n"
    tracemalloc.start()
    try:
        rows, errors = read(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert emails_by_line(rows) == [(3, "b@example.com")]
    assert errors_by_line(errors) == [(2, "line_too_long")]
    assert peak < 4 * 1024 * 1024  # chunks and one capped record, not the 10 MB line


def test_an_unterminated_quote_costs_one_record_not_the_rest_of_the_file() -> None:
    good = [f"user{i}@example.com,User {i}\n".encode() for i in range(3, 500)]
    data = b'email,name\nbroken@example.com,"never closed\n' + b"".join(good)
    rows, errors = read(data)
    assert errors_by_line(errors) == [(2, "malformed")]
    assert "not closed" in errors[0].message
    assert [row.line for row in rows] == list(range(3, 500))


def test_a_quoted_field_past_max_line_bytes_is_reported_and_reading_resumes() -> None:
    body = b"".join(f"u{i}@example.com,n{i}\n".encode() for i in range(3, 200))
    data = b'email,name\nbroken@example.com,"open\n' + body
    rows, errors = read(data, max_line_bytes=500)
    assert errors_by_line(errors) == [(2, "malformed")]
    assert "longer than 500 bytes" in errors[0].message
    assert [row.line for row in rows] == list(range(3, 200))


def test_a_bad_quote_closing_mid_cell_is_reported_and_the_next_line_read() -> None:
    data = b'email,name\na@example.com,"Ann"x\nb@example.com,"B"\n'
    rows, errors = read(data)
    assert errors_by_line(errors) == [(2, "malformed")]
    assert emails_by_line(rows) == [(3, "b@example.com")]


def test_quoted_newlines_keep_the_line_numbers_of_later_records_right() -> None:
    data = (
        b'email,note\na@example.com,"one\ntwo\nthree"\nb@example.com,x\n'
        b'c@example.com,"four\n\nfive"\nd@example.com,y\n'
    )
    rows, errors = read(data)
    assert errors == []
    assert emails_by_line(rows) == [
        (2, "a@example.com"),
        (5, "b@example.com"),
        (6, "c@example.com"),
        (9, "d@example.com"),
    ]
    assert rows[0].contact.attributes == {"note": "one\ntwo\nthree"}
    assert rows[2].contact.attributes == {"note": "four\n\nfive"}


@pytest.mark.parametrize("ending", [b"\r\n", b"\r", b"\n"])
def test_line_endings_crlf_cr_and_lf(ending: bytes) -> None:
    lines = [b"email,note", b'a@example.com,"x' + ending + b'y"', b"b@example.com,z", b""]
    rows, errors = read(ending.join(lines))
    assert errors == []
    assert emails_by_line(rows) == [(2, "a@example.com"), (4, "b@example.com")]
    assert rows[0].contact.attributes == {"note": "x" + ending.decode() + "y"}


def test_utf8_bom_is_skipped() -> None:
    rows, errors = read("\ufeffemail,Prénom\na@example.com,Zoë\n".encode())
    assert errors == []
    assert rows[0].contact.attributes == {"Prénom": "Zoë"}


def test_utf16_is_reported_rather_than_read_as_garbage() -> None:
    rows, errors = read("email\na@example.com\n".encode("utf-16"))
    assert rows == []
    assert errors_by_line(errors) == [(1, "invalid_encoding")]


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_delimiter_is_sniffed(delimiter: str) -> None:
    other = "," if delimiter != "," else ";"
    text = delimiter.join(["email", "first_name", "note"]) + "\n"
    text += delimiter.join(["a@example.com", "Ann", f"x{other} y"]) + "\n"
    text += delimiter.join(["b@example.com", "Bea", f'"q{delimiter}r"']) + "\n"
    rows, errors = read(text.encode())
    assert errors == []
    assert [row.contact.attributes["note"] for row in rows] == [f"x{other} y", f"q{delimiter}r"]
    assert [row.contact.first_name for row in rows] == ["Ann", "Bea"]


def test_given_delimiter_wins_over_sniffing() -> None:
    rows, _ = read(b"email;x,y\na@example.com;1,2\n", delimiter=";")
    assert rows[0].contact.attributes == {"x,y": "1,2"}
    with pytest.raises(FieldError):
        read_import(io.BytesIO(b""), delimiter=":")


# --- CSV: headers -----------------------------------------------------------------------------


def test_common_header_spellings_are_recognised_and_id_is_not_guessed() -> None:
    header = "E-mail Address,FIRST_NAME,lastname,Phone Number,Time Zone,Language,External ID,id"
    row = "A@Example.com,Ann,Lee,+44 20 7946 0958,europe/london,pt_BR,ext-1,42"
    rows, errors = read(f"{header}\n{row}\n".encode())
    assert errors == []
    contact = rows[0].contact
    assert (contact.email, contact.email_key) == ("A@example.com", "a@example.com")
    assert (contact.first_name, contact.last_name) == ("Ann", "Lee")
    assert contact.phone == "+442079460958"
    assert (contact.timezone, contact.locale) == ("Europe/London", "pt-BR")
    assert contact.external_id == "ext-1"
    assert contact.attributes == {"id": "42"}


def test_user_mapping_comes_first_and_can_skip_columns() -> None:
    mapping = {"Courriel": "email", "Nom": "last_name", "Junk": "", "Âge": "attributes.age:number"}
    data = "Courriel,Nom,Junk,Âge,email\na@example.com,Lee,zzz,41,other\n".encode()
    rows, errors = read(data, mapping={**mapping, "email": "attributes.old_email"})
    assert errors == []
    contact = rows[0].contact
    assert (contact.email, contact.last_name) == ("a@example.com", "Lee")
    assert contact.attributes == {"age": 41, "old_email": "other"}


def test_a_bad_mapping_target_is_refused_before_reading() -> None:
    with pytest.raises(FieldError) as caught:
        read_import(io.BytesIO(b"email\n"), mapping={"Mail": "e_mail"})
    assert caught.value.field == "mapping.Mail"


def test_a_header_without_email_is_one_error_on_line_one() -> None:
    rows, errors = read(b"name,plan\nAnn,pro\nBob,free\n")
    assert rows == []
    assert errors_by_line(errors) == [(1, "invalid_header")]


def test_two_columns_for_one_field_are_refused() -> None:
    rows, errors = read(b"email,E-mail\na@example.com,b@example.com\n")
    assert rows == []
    assert errors_by_line(errors) == [(1, "invalid_header")]


def test_typed_attribute_headers() -> None:
    data = (
        b"email,age:number,vip:Boolean,signup:date,seen:datetime,plan:string,utm:source\n"
        b"a@example.com,41,yes,2024-02-29,2024-05-01 11:30:00+02:00,007,x\n"
        b"b@example.com,1.5,0,,,,\n"
        b"c@example.com,forty,no,,,,\n"
        b"d@example.com,1,no,2023-02-29,,,\n"
    )
    rows, errors = read(data)
    assert rows[0].contact.attributes == {
        "age": 41,
        "vip": True,
        "signup": "2024-02-29",
        "seen": "2024-05-01T09:30:00Z",
        "plan": "007",
        "utm:source": "x",
    }
    assert rows[1].contact.attributes == {"age": 1.5, "vip": False}
    assert [(e.line, e.field) for e in errors] == [(4, "attributes.age"), (5, "attributes.signup")]


def test_blank_lines_and_empty_cells_are_not_provided() -> None:
    rows, errors = read(b"email,first_name,plan\n\na@example.com,,\n,,\nb@example.com,  ,x\n")
    assert errors == []
    assert emails_by_line(rows) == [(3, "a@example.com"), (5, "b@example.com")]
    assert rows[0].contact.first_name is None
    assert rows[0].contact.attributes == {}
    assert rows[1].contact.first_name is None  # names are trimmed; blank is not provided


def test_neutralised_cells_lose_exactly_the_exporters_apostrophe() -> None:
    data = b"email,a,b,c,d,e\n'-a@example.com,'=SUM(A1),'hello,''=x,'\t1,'\n"
    rows, errors = read(data)
    assert errors == []
    assert rows[0].contact.email == "-a@example.com"
    assert rows[0].contact.attributes == {
        "a": "=SUM(A1)",
        "b": "'hello",
        "c": "'=x",
        "d": "\t1",
        "e": "'",
    }


def test_an_empty_file_yields_nothing() -> None:
    assert read(b"") == ([], [])
    assert read(b"email\n") == ([], [])


# --- physical lines across chunk boundaries -----------------------------------------------------


def split_at(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    for start, end in itertools.pairwise(points):
        yield data[start:end]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=60).map(
        lambda raw: bytes(b"ab\r\n"[byte % 4] for byte in raw)
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
    limit=st.integers(min_value=1, max_value=8),
)
def test_physical_lines_do_not_depend_on_chunk_boundaries(
    data: bytes, cuts: list[int], limit: int
) -> None:
    expected = [
        (number, line if len(line) <= limit else None)
        for number, line in enumerate(data.splitlines(keepends=True), start=1)
    ]
    assert list(_physical_lines(split_at(data, cuts), limit)) == expected


# --- JSON -------------------------------------------------------------------------------------


def test_json_array_pretty_printed_reports_the_line_of_each_object() -> None:
    data = b"""[
  {"email": "a@example.com", "firstName": "Ann", "plan": "pro",
   "attributes": {"score": 3, "plan": "team"}},
  {"email": "nope", "first_name": "Bob"},
  {
    "email": "c@example.com",
    "data": {"tags": ["x", "y"]},
    "created_at": "2020-01-01T00:00:00Z",
    "subscribed": true
  },
  {"email": "d@example.com", "x": bad},
  {"email": "e@example.com", "optIn": "yes"},
  42
]
"""
    rows, errors = read(data)
    assert emails_by_line(rows) == [
        (2, "a@example.com"),
        (5, "c@example.com"),
        (12, "e@example.com"),
    ]
    assert errors_by_line(errors) == [
        (4, "invalid_email"),
        (11, "invalid_json"),
        (13, "invalid_json"),
    ]
    first, third, fifth = (row.contact for row in rows)
    assert first.first_name == "Ann"
    assert first.attributes == {"plan": "team", "score": 3}  # the nested object wins
    assert third.attributes == {"tags": ["x", "y"]}  # created_at is read-only: dropped
    assert third.subscribed is True
    assert fifth.opt_in is True


def test_minified_json_array_with_a_broken_element_resyncs_on_the_next_object() -> None:
    items = [json.dumps({"email": f"u{i}@example.com", "n": i}) for i in range(5)]
    items[2] = '{"email": "u2@example.com", "n": }'
    rows, errors = read(("[" + ",".join(items) + "]").encode())
    assert [row.contact.email for row in rows] == [f"u{i}@example.com" for i in (0, 1, 3, 4)]
    assert errors_by_line(errors) == [(1, "invalid_json")]


def test_a_big_json_array_crosses_chunk_boundaries_without_losing_elements() -> None:
    # ensure_ascii escapes put "\u00e9" sequences at every possible chunk cut.
    items = [
        {"email": f"user{i}@example.com", "first_name": "Zoé" * (i % 7), "n": i * 1.5}
        for i in range(3000)
    ]
    data = json.dumps(items, indent=1).encode()
    rows, errors = read(data)
    assert errors == []
    assert len(rows) == 3000
    assert rows[-1].contact.attributes == {"n": 2999 * 1.5}
    assert rows[-1].line == data.count(b"\n", 0, data.rindex(b"{")) + 1


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(
        st.dictionaries(st.sampled_from(["email", "a", "b"]), st.text(max_size=6), max_size=3),
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    indent=st.sampled_from([None, 1]),
)
def test_json_array_elements_do_not_depend_on_chunk_boundaries(
    items: list[dict[str, str]], cuts: list[int], indent: int | None
) -> None:
    data = json.dumps(items, indent=indent).encode()
    scanned = list(_JsonArrayScanner(split_at(data, cuts), 10_000).elements())
    assert [item[1] for item in scanned if not isinstance(item, ImportRowError)] == items


def test_json_array_invalid_utf8_and_oversized_elements_are_reported() -> None:
    data = (
        b'[\n{"email": "a@example.com", "n": "\xff"},\n'
        b'{"email": "b@example.com", "blob": "' + b"z" * 5000 + b'"},\n'
        b'{"email": "c@example.com"}\n]\n'
    )
    rows, errors = read(data, max_line_bytes=1000)
    assert emails_by_line(rows) == [(4, "c@example.com")]
    assert errors_by_line(errors) == [(2, "invalid_utf8"), (3, "too_long")]


def test_json_lines() -> None:
    data = b"\n".join(
        [
            b'{"email": "a@example.com", "Last Name": "Lee", "vip": true}',  # 1
            b"",  # 2 blank
            b'{"email": "b@example.com", "score": NaN}',  # 3
            b'{"email": "c@example.com",',  # 4
            b"[1, 2]",  # 5
            b'{"email": "d@example.com", "n": "\xc3"}',  # 6
            b'{"email": "e@example.com", "blob": "' + b"q" * 3000 + b'"}',  # 7
            b'{"email": "f@example.com", "n": "\\u0000"}',  # 8
            b'{"email": "g@example.com", "external_id": 7, "attributes": {"k": "v"}}',  # 9
        ]
    )
    rows, errors = read(data, max_line_bytes=1000)
    assert emails_by_line(rows) == [(1, "a@example.com"), (9, "g@example.com")]
    assert rows[0].contact.last_name == "Lee"
    assert rows[0].contact.attributes == {"vip": True}
    assert rows[1].contact.external_id == "7"
    assert rows[1].contact.attributes == {"k": "v"}
    assert errors_by_line(errors) == [
        (3, "invalid_json"),
        (4, "invalid_json"),
        (5, "invalid_json"),
        (6, "invalid_utf8"),
        (7, "line_too_long"),
        (8, "invalid"),
    ]
    assert errors[-1].field == "attributes.n"


def test_json_key_given_twice_is_an_error() -> None:
    rows, errors = read(b'{"email": "a@example.com", "E-mail": "b@example.com"}\n', fmt="jsonl")
    assert rows == []
    assert errors[0].code == "duplicate"


@pytest.mark.parametrize(
    ("head", "filename", "expected"),
    [
        (b"email,name\n", None, "csv"),
        (b"[{}]", None, "json"),
        (b'\xef\xbb\xbf  [\n {"email": 1}', None, "json"),
        (b'{"email": "a@example.com"}\n{"email": "b@example.com"}\n', None, "jsonl"),
        (b'{\n  "email": "a@example.com"\n}\n', None, "json"),
        (b"[{}]", "contacts.csv", "csv"),
        (b"email\n", "contacts.ndjson", "jsonl"),
        (b"[{}]", "contacts.json", "json"),
    ],
)
def test_detect_format(head: bytes, filename: str | None, expected: str) -> None:
    assert detect_format(head, filename) == expected


def test_a_pretty_printed_object_stream_is_read_as_json() -> None:
    rows, errors = read(b'{\n  "email": "a@example.com"\n}\n{\n  "email": "b@example.com"\n}\n')
    assert errors == []
    assert emails_by_line(rows) == [(1, "a@example.com"), (4, "b@example.com")]


def test_json_array_element_longer_than_the_limit_across_chunks_is_skipped() -> None:
    big = b'{"email": "b@example.com", "blob": "' + b"z" * 300_000 + b'"}'
    data = b'[{"email": "a@example.com"},\n' + big + b',\n{"email": "c@example.com"}]'
    rows, errors = read(data, max_line_bytes=100_000)
    assert emails_by_line(rows) == [(1, "a@example.com"), (3, "c@example.com")]
    assert errors_by_line(errors) == [(2, "too_long")]


def test_json_array_unterminated_string_is_reported_and_reading_resumes() -> None:
    data = b'[\n{"email": "a@example.com", "n": "open},\n{"email": "b@example.com"}\n]'
    rows, errors = read(data)
    assert emails_by_line(rows) == [(3, "b@example.com")]
    assert errors_by_line(errors) == [(2, "invalid_json")]


def test_a_multi_line_record_with_too_many_cells_is_re_read_from_its_second_line() -> None:
    data = (
        b"email,name,n\n"
        b'a@example.com,"x\n'  # 2: the quote swallows lines 3-4 and leaves 4 cells
        b"b@example.com,B,1\n"  # 3
        b'c@example.com,C",1,2\n'  # 4
        b"d@example.com,D,4\n"  # 5
    )
    rows, errors = read(data)
    assert emails_by_line(rows) == [(3, "b@example.com"), (5, "d@example.com")]
    assert errors_by_line(errors) == [(2, "too_many_cells"), (4, "too_many_cells")]


# --- batches for the database (import_batches) --------------------------------------------


def test_import_batches_keep_order_lines_and_split_on_repeated_keys() -> None:
    from postroom.contacts.import_batches import import_batches
    from postroom.models.contacts import email_hash

    data = b"\n".join(
        [
            b"email,external_id,status,subscribed,plan,age:number",
            b"a@example.com,x1,,,pro,1",  # 2
            b"nope,,,,,",  # 3
            b"b@example.com,,,no,,",  # 4
            b"A@EXAMPLE.com,,,,,2",  # 5 repeats a: a new batch starts here
            b"c@example.com,x1,Bounced,,,",  # 6 repeats x1 of line 2, in the batch after
            b"d@example.com,,,,,",  # 7
        ]
    )
    for dialect in ("sqlite", "postgresql"):
        batches = list(import_batches(io.BytesIO(data), dialect=dialect, batch_size=3))
        assert [(b.lines, [e.line for e in b.errors]) for b in batches] == [
            ([2, 4], [3]),
            ([5, 6, 7], []),
        ]
        rows = [b.rows for b in batches]
        assert all(r is not None for r in rows)
        contacts = [c for r in rows for c in r.contacts()]  # type: ignore[union-attr]
        assert [c.email_key for c in contacts] == [
            "a@example.com",
            "b@example.com",
            "a@example.com",
            "c@example.com",
            "d@example.com",
        ]
        assert contacts[0].attributes == {"plan": "pro", "age": 1}
        assert [c.status for c in contacts] == [None, "unsubscribed", None, "bounced", None]
        assert contacts[2].email == "A@example.com" and contacts[3].external_id == "x1"
        ids = [i for r in rows for i in r.ids]  # type: ignore[union-attr]
        assert ids == sorted(ids) and len(set(ids)) == 5
        if dialect == "sqlite":
            first = rows[0].rows[0]  # type: ignore[union-attr,index]
            assert first[0] == ids[0] and first[3] == email_hash("a@example.com")
            assert first[10] == '{"plan":"pro","age":1}'
        else:
            assert rows[0].rows is None and rows[0].document is not None  # type: ignore[union-attr]


def test_import_batches_keep_attribute_deletions_as_patches() -> None:
    from postroom.contacts.import_batches import import_batches

    data = b'{"email": "a@example.com", "attributes": {"x": null, "y": 1}}\n{"email": "b@example.com"}\n'
    for dialect in ("sqlite", "postgresql"):
        [batch] = list(import_batches(io.BytesIO(data), dialect=dialect))
        assert batch.rows is not None and batch.rows.patches == {0: {"x": None, "y": 1}}
        first, second = batch.rows.contacts()
        assert first.attributes == {"x": None, "y": 1} and second.attributes == {}


def test_import_batches_flush_errors_in_bounded_batches() -> None:
    from postroom.contacts.import_batches import import_batches

    data = b"email\n" + b"bad\n" * 7 + b"ok@example.com\n"
    batches = list(import_batches(io.BytesIO(data), dialect="sqlite", batch_size=3))
    assert [len(b.errors) for b in batches] == [3, 3, 1]
    assert batches[-1].lines == [9]


@pytest.mark.parametrize("kind", ["string", "number", "boolean", "date", "datetime"])
def test_column_converters_agree_with_convert_attribute(kind: str) -> None:
    from postroom.contacts.contact_fields import attribute_converter, convert_attribute

    samples = [
        " 42 ",
        "-7",
        "1.5",
        "2e3",
        "1e999",
        "nan",
        "abc",
        "",
        " ",
        "yes",
        "No",
        "0",
        "2024-02-29",
        "2023-02-29",
        " 2024-01-01 ",
        "2024-1-1",
        "2024-05-01T09:30:00",
        "2024-05-01T09:30:00+02:00",
        "12345678901234567890",
        ".5",
        "+3",
    ]
    convert = attribute_converter("a", kind)  # type: ignore[arg-type]
    for sample in samples * 2:  # twice: the date memo must answer as the first time
        try:
            expected: object = convert_attribute("a", kind, sample)  # type: ignore[arg-type]
        except FieldError as exc:
            expected = (exc.field, exc.message, exc.code)
        try:
            got: object = convert(sample)
        except FieldError as exc:
            got = (exc.field, exc.message, exc.code)
        assert got == expected and type(got) is type(expected), sample
