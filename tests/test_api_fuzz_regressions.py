"""Regression tests for the server errors ``tests/test_api_fuzz.py`` found: each input
that once answered a 500 now gets a 4xx problem+json that says what to fix. They run
on both databases (the ``client`` fixture is parametrized on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from postroom.errors import ValidationFailed
from postroom.http.pagination import MAX_INT_CURSOR, decode_int_cursor, encode_cursor
from postroom.http.text_guard import unstorable_text
from tests.conftest import WorkspaceHandle


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


async def test_a_malformed_multipart_import_is_a_400(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    # A carriage return inside a part's header name made the multipart parser raise
    # straight through ``request.form()``.
    body = b'--XYZ\r\nContent-Disposition: form-data; name="file"\r\nBad\rName: x\r\n\r\nemail\r\n--XYZ--\r\n'
    response = await client.post(
        "/v1/imports",
        headers={**workspace.headers, "content-type": "multipart/form-data; boundary=XYZ"},
        content=body,
    )
    problem = _problem(response, 400)
    assert "multipart" in problem["detail"]
    assert problem["code"] == "malformed_body"
    listing = await client.get("/v1/imports", headers=workspace.headers)
    assert listing.json()["data"] == []  # nothing was stored or queued


@pytest.mark.parametrize(
    "raw",
    [
        "²",  # str.isdigit() says yes, int() says no
        "9" * 25,  # past BIGINT: SQLite cannot even bind it
        str(2**63),
        "-1",
    ],
)
async def test_a_forged_integer_cursor_is_a_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, raw: str
) -> None:
    contact = await client.post(
        "/v1/contacts", headers=workspace.headers, json={"email": "ada@example.com"}
    )
    template = await client.post("/v1/templates", headers=workspace.headers, json={"name": "t"})
    assert contact.status_code == 201, contact.text
    assert template.status_code == 201, template.text
    for path in (
        f"/v1/contacts/{contact.json()['id']}/events",
        f"/v1/templates/{template.json()['id']}/versions",
    ):
        response = await client.get(
            path, headers=workspace.headers, params={"cursor": encode_cursor(raw)}
        )
        problem = _problem(response, 422)
        assert problem["errors"][0]["field"] == "cursor", path


async def test_the_largest_integer_cursor_is_still_accepted(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    contact = await client.post(
        "/v1/contacts", headers=workspace.headers, json={"email": "ada@example.com"}
    )
    response = await client.get(
        f"/v1/contacts/{contact.json()['id']}/events",
        headers=workspace.headers,
        params={"cursor": encode_cursor(str(MAX_INT_CURSOR))},
    )
    assert response.status_code == 200, response.text
    assert [e["type"] for e in response.json()["data"]]  # everything is before it


def test_decode_int_cursor() -> None:
    assert decode_int_cursor(None) is None
    assert decode_int_cursor(encode_cursor("0")) == 0
    assert decode_int_cursor(encode_cursor(str(MAX_INT_CURSOR))) == MAX_INT_CURSOR
    for raw in ("", "²", "٣", " 1", "1_000", str(MAX_INT_CURSOR + 1)):
        with pytest.raises(ValidationFailed) as caught:
            decode_int_cursor(encode_cursor(raw))
        assert caught.value.problems[0].field == "cursor"


async def test_clearing_a_contacts_status_is_a_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    # PATCH {"status": null} reached the NOT NULL column.
    created = await client.post(
        "/v1/contacts", headers=workspace.headers, json={"email": "ada@example.com"}
    )
    url = f"/v1/contacts/{created.json()['id']}"
    problem = _problem(
        await client.patch(url, headers=workspace.headers, json={"status": None}), 422
    )
    assert problem["errors"][0]["field"] == "status"
    assert "cannot be cleared" in problem["detail"]
    # Absent still means unchanged, and a real status is still taken.
    unchanged = await client.patch(url, headers=workspace.headers, json={"first_name": "Ada"})
    assert unchanged.json()["status"] == "subscribed"
    changed = await client.patch(url, headers=workspace.headers, json={"status": "unsubscribed"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"] == "unsubscribed"


# Each body once answered a 500: NUL is refused by PostgreSQL (text and jsonb), a lone
# surrogate cannot be encoded by either database's driver. The raw JSON is sent as is.
UNSTORABLE = [
    ("/v1/lists", b'{"name": "a\\u0000b"}', "name", "NUL"),
    ("/v1/templates", b'{"name": "t\\u0000"}', "name", "NUL"),
    ("/v1/api-keys", b'{"name": "k\\u0000"}', "name", "NUL"),
    (
        "/v1/webhooks",
        b'{"url": "https://93.184.215.14/h", "event_types": ["signup"], "description": "\\u0000"}',
        "description",
        "NUL",
    ),
    (
        "/v1/segments",
        b'{"name": "s", "filter": {"groups": [{"filters": [{"field": "email",'
        b' "operator": "contains", "value": "\\ud800"}]}]}}',
        "filter.groups.0.filters.0.value",
        "surrogate",
    ),
    (
        "/v1/events",
        b'{"email": "ada@example.com", "event": "signup", "data": {"a": ["\\udc00"]}}',
        "data.a.0",
        "surrogate",
    ),
    (
        "/v1/contacts",
        b'{"email": "ada@example.com", "attributes": {"k\\u0000": 1}}',
        "attributes",
        "keys must not contain NUL",
    ),
]


@pytest.mark.parametrize(("path", "body", "field", "words"), UNSTORABLE)
async def test_text_no_database_can_store_is_a_422(
    client: httpx.AsyncClient,
    workspace: WorkspaceHandle,
    path: str,
    body: bytes,
    field: str,
    words: str,
) -> None:
    response = await client.post(
        path, headers={**workspace.headers, "content-type": "application/json"}, content=body
    )
    problem = _problem(response, 422)
    assert problem["errors"] == [
        {"field": field, "message": problem["errors"][0]["message"], "code": "invalid_character"}
    ]
    assert words in problem["detail"]


async def test_escaped_text_that_is_storable_still_passes(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    # A surrogate pair (an emoji) and an escaped backslash before "u0000" are fine.
    body = b'{"name": "\\ud83d\\ude00 \\\\u0000"}'
    response = await client.post(
        "/v1/lists", headers={**workspace.headers, "content-type": "application/json"}, content=body
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "\U0001f600 \\u0000"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": "Hi\r\nBcc: everyone@example.com"}, "subject"),
        ({"from": {"email": "app@example.com", "name": "App\nBcc: x@example.com"}}, "from.name"),
    ],
)
async def test_a_header_value_with_a_line_break_is_a_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, change: dict[str, Any], field: str
) -> None:
    # Accepted before (202), then failed at delivery as a header injection.
    body = {
        "to": "someone@example.com",
        "from": {"email": "app@example.com"},
        "subject": "Hi",
        "text": "Hello",
        **change,
    }
    response = await client.post("/v1/messages", headers=workspace.headers, json=body)
    problem = _problem(response, 422)
    assert problem["errors"][0]["field"] == field
    assert "single line" in problem["errors"][0]["message"]


async def test_both_success_statuses_of_an_upsert_are_documented(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    # POST /v1/contacts answers 200 for an existing contact and PUT of a feedback
    # provider 201 for new credentials; the document listed only the other one.
    spec = (await client.get("/openapi.json")).json()["paths"]
    assert {"200", "201"} <= set(spec["/v1/contacts"]["post"]["responses"])
    assert {"200", "201"} <= set(spec["/v1/feedback-providers/{provider}"]["put"]["responses"])
    first = await client.post(
        "/v1/contacts", headers=workspace.headers, json={"email": "ada@example.com"}
    )
    again = await client.post(
        "/v1/contacts", headers=workspace.headers, json={"email": "ada@example.com"}
    )
    assert (first.status_code, again.status_code) == (201, 200)


@pytest.mark.parametrize("instant", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
async def test_an_instant_that_leaves_the_calendar_in_utc_is_a_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, instant: str
) -> None:
    response = await client.get(
        "/v1/contacts", headers=workspace.headers, params={"updated_since": instant}
    )
    problem = _problem(response, 422)
    assert problem["errors"][0]["field"] == "query.updated_since"
    assert "out of range" in problem["detail"]


async def test_an_instant_without_an_offset_is_utc(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    # A naive datetime used to reach the UTC column type, which refuses it (a 500).
    created = await client.post(
        "/v1/contacts", headers=workspace.headers, json={"email": "ada@example.com"}
    )
    assert created.status_code == 201
    stamp = created.json()["updated_at"]  # the frozen clock: 2026-03-02T09:00:00Z
    for since, found in (("2026-03-02T09:00:00", 1), ("2026-03-02T09:00:01", 0), ("2026-03-02", 1)):
        response = await client.get(
            "/v1/contacts", headers=workspace.headers, params={"updated_since": since}
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == found, (since, stamp)


def test_unstorable_text_finds_the_first_bad_string_and_nothing_else() -> None:
    assert unstorable_text(b'{"a": "plain", "b": ["\\u00e9", "\\ud83d\\ude00"]}') is None
    assert unstorable_text(b'{"a": "\\\\u0000 is only text"}') is None
    assert unstorable_text(b'{"a": "\\u0000"') is None  # not JSON: FastAPI's 422 says so
    found = unstorable_text(b'{"a": [{"b": "ok"}, {"c": "x\\u0000"}]}')
    assert found is not None
    assert (found.field, found.code) == ("a.1.c", "invalid_character")
    found = unstorable_text(b'["\\uDFFF"]')
    assert found is not None
    assert found.field == "0"
    assert "surrogate" in found.message


@pytest.mark.parametrize("key", ["a\x00b", "tab\there"])
async def test_an_idempotency_key_with_a_control_character_is_a_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, key: str
) -> None:
    # A NUL in the key reached the claim's INSERT (PostgreSQL refuses NUL in text).
    headers = [
        *workspace.headers.items(),
        ("Idempotency-Key", key.encode("latin-1")),
    ]
    response = await client.post("/v1/lists", headers=headers, json={"name": "newsletter-2"})
    problem = _problem(response, 422)
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert "printable" in problem["errors"][0]["message"]


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/v1/contacts", "search"),
        ("GET", "/v1/contacts", "locale"),
        ("GET", "/v1/contacts/lookup", "external_id"),
        ("POST", "/v1/imports", "filename"),
    ],
)
async def test_a_nul_in_a_query_parameter_is_a_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, method: str, path: str, name: str
) -> None:
    # PostgreSQL refused the NUL in the WHERE clause (or the stored filename): a 500.
    response = await client.request(
        method,
        path,
        headers={**workspace.headers, "content-type": "text/csv"},
        params={name: "a\x00b"},
        content=b"email\nada@example.com\n" if method == "POST" else None,
    )
    problem = _problem(response, 422)
    assert problem["errors"] == [
        {
            "field": f"query.{name}",
            "message": "must not contain NUL characters (%00)",
            "code": "invalid_character",
        }
    ]


async def test_a_forged_engagement_cursor_is_a_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    contact = await client.post(
        "/v1/contacts", headers=workspace.headers, json={"email": "eve@example.com"}
    )
    assert contact.status_code == 201, contact.text
    for raw in ("\u00b2", str(2**63), "9" * 25):
        response = await client.get(
            f"/v1/contacts/{contact.json()['id']}/engagement",
            headers=workspace.headers,
            params={"cursor": encode_cursor(raw)},
        )
        assert _problem(response, 422)["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize(
    "body",
    [
        {"scheduled_at": "9999-12-31T23:59:59-14:00"},
        {"scheduled_at": "0001-01-01T00:00:00+14:00"},
        {"scheduled_at": "0001-01-01T00:30:00", "timezone": "Asia/Tokyo"},
    ],
)
async def test_a_schedule_at_the_ends_of_the_calendar_is_a_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, body: dict[str, str]
) -> None:
    from tests.support.campaigns import add_domain, create_campaign

    await add_domain(client, workspace)
    campaign = await create_campaign(client, workspace)
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/schedule", headers=workspace.headers, json=body
    )
    assert _problem(response, 422)["errors"][0]["field"] == "scheduled_at", response.text
