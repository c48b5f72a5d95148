"""Contacts over HTTP on both databases: upsert, conflicts, patch semantics, lookup,
search, bulk, delete, erase."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import func, select

from postroom.context import AppContext
from postroom.models.contacts import Contact, Suppression, email_hash
from postroom.models.platform import Event
from tests.conftest import MakeWorkspace, WorkspaceHandle
from tests.test_api_keys import assert_problem


async def _post(
    client: httpx.AsyncClient, ws: WorkspaceHandle, body: dict[str, object]
) -> httpx.Response:
    return await client.post("/v1/contacts", headers=ws.headers, json=body)


async def test_upsert_by_email_creates_then_updates(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    created = await _post(
        client,
        workspace,
        {"email": "Ada@Example.COM", "first_name": "Ada", "attributes": {"plan": "pro"}},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["email"] == "Ada@example.com"  # domain normalised, local part kept
    assert body["status"] == "subscribed"
    updated = await _post(
        client,
        workspace,
        {"email": "ada@example.com", "last_name": "Lovelace", "attributes": {"seats": 3}},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == body["id"]
    assert updated.json()["first_name"] == "Ada"  # not provided: kept
    assert updated.json()["last_name"] == "Lovelace"
    assert updated.json()["attributes"] == {"plan": "pro", "seats": 3}


async def test_upsert_by_external_id_changes_email(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    first = await _post(client, workspace, {"email": "old@example.com", "external_id": "u-1"})
    assert first.status_code == 201
    moved = await _post(client, workspace, {"email": "new@example.com", "external_id": "u-1"})
    assert moved.status_code == 200
    assert moved.json()["id"] == first.json()["id"]
    assert moved.json()["email"] == "new@example.com"
    lookup = await client.get(
        "/v1/contacts/lookup", headers=workspace.headers, params={"email": "NEW@example.com"}
    )
    assert lookup.json()["id"] == first.json()["id"]
    by_ext = await client.get(
        "/v1/contacts/lookup", headers=workspace.headers, params={"external_id": "u-1"}
    )
    assert by_ext.json()["email"] == "new@example.com"
    assert_problem(
        await client.get(
            "/v1/contacts/lookup", headers=workspace.headers, params={"email": "old@example.com"}
        ),
        404,
    )
    assert_problem(await client.get("/v1/contacts/lookup", headers=workspace.headers), 422)


async def test_cross_key_conflict_is_409(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    await _post(client, workspace, {"email": "a@example.com", "external_id": "A"})
    await _post(client, workspace, {"email": "b@example.com", "external_id": "B"})
    body = assert_problem(
        await _post(client, workspace, {"email": "b@example.com", "external_id": "A"}), 409
    )
    assert "belongs to contact" in str(body["detail"])
    # an email already carrying another external id
    assert_problem(
        await _post(client, workspace, {"email": "a@example.com", "external_id": "C"}), 409
    )
    # nothing changed
    a = (
        await client.get(
            "/v1/contacts/lookup", headers=workspace.headers, params={"external_id": "A"}
        )
    ).json()
    assert a["email"] == "a@example.com"


async def test_validation_errors_name_the_field(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    cases = {
        "email": {"email": "not-an-email"},
        "timezone": {"email": "t@example.com", "timezone": "Mars/Olympus"},
        "phone": {"email": "t@example.com", "phone": "12"},
        "status": {"email": "t@example.com", "status": "zombie"},
    }
    for field, body in cases.items():
        problem = assert_problem(await _post(client, workspace, body), 422)
        assert problem["errors"][0]["field"] == field, problem  # type: ignore[index]


async def test_patch_attribute_semantics(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    contact = (
        await _post(
            client,
            workspace,
            {
                "email": "p@example.com",
                "first_name": "P",
                "attributes": {"a": 1, "b": 2, "c": {"x": 1}},
            },
        )
    ).json()
    patched = await client.patch(
        f"/v1/contacts/{contact['id']}",
        headers=workspace.headers,
        json={"attributes": {"a": None, "b": 3, "d": "new"}, "first_name": None},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["attributes"] == {"b": 3, "c": {"x": 1}, "d": "new"}
    assert patched.json()["first_name"] is None
    tz = await client.patch(
        f"/v1/contacts/{contact['id']}",
        headers=workspace.headers,
        json={"timezone": "europe/paris"},
    )
    assert tz.json()["timezone"] == "Europe/Paris"
    other = (await _post(client, workspace, {"email": "q@example.com"})).json()
    assert_problem(
        await client.patch(
            f"/v1/contacts/{other['id']}",
            headers=workspace.headers,
            json={"email": "P@example.com"},
        ),
        409,
    )
    assert_problem(
        await client.patch(
            f"/v1/contacts/{other['id']}", headers=workspace.headers, json={"attributes": [1]}
        ),
        422,
    )


async def test_list_filters_search_and_pagination(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    for i in range(7):
        await _post(
            client,
            workspace,
            {
                "email": f"user{i}@example.com",
                "first_name": f"Name{i}",
                "locale": "fr" if i % 2 else "en",
            },
        )
    await _post(client, workspace, {"email": "zed_%@example.com", "status": "unsubscribed"})
    seen, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/contacts", headers=workspace.headers, params=params)).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 8
    french = (
        await client.get("/v1/contacts", headers=workspace.headers, params={"locale": "fr"})
    ).json()["data"]
    assert {c["email"] for c in french} == {
        "user1@example.com",
        "user3@example.com",
        "user5@example.com",
    }
    unsub = (
        await client.get(
            "/v1/contacts", headers=workspace.headers, params={"status": "unsubscribed"}
        )
    ).json()["data"]
    assert [c["email"] for c in unsub] == ["zed_%@example.com"]
    by_name = (
        await client.get("/v1/contacts", headers=workspace.headers, params={"search": "name3"})
    ).json()["data"]
    assert [c["email"] for c in by_name] == ["user3@example.com"]
    literal = (
        await client.get("/v1/contacts", headers=workspace.headers, params={"search": "zed_%"})
    ).json()["data"]
    assert len(literal) == 1
    none = (
        await client.get("/v1/contacts", headers=workspace.headers, params={"search": "zed%%"})
    ).json()["data"]
    assert none == []
    assert_problem(
        await client.get("/v1/contacts", headers=workspace.headers, params={"status": "nope"}), 422
    )


async def test_bulk_upsert_reports_each_row(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    await _post(client, workspace, {"email": "exists@example.com", "external_id": "E"})
    rows = [
        {"email": "new1@example.com"},
        {"email": "EXISTS@example.com", "first_name": "Ex"},
        {"email": "bad-email"},
        {"email": "new1@example.com", "first_name": "Second"},  # duplicate inside the batch
        {"email": "exists@example.com", "external_id": "OTHER"},  # conflict
        {"email": "tz@example.com", "timezone": "Nowhere/Land"},
    ]
    response = await client.post(
        "/v1/contacts/bulk", headers=workspace.headers, json={"contacts": rows}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["created", "updated", "failed", "updated", "failed", "failed"]
    assert (body["created"], body["updated"], body["failed"]) == (1, 2, 3)
    assert body["results"][2]["errors"][0]["field"] == "contacts.2.email"
    assert body["results"][5]["errors"][0]["field"] == "contacts.5.timezone"
    assert body["results"][0]["id"] == body["results"][3]["id"]
    new1 = (
        await client.get(
            "/v1/contacts/lookup", headers=workspace.headers, params={"email": "new1@example.com"}
        )
    ).json()
    assert new1["first_name"] == "Second"  # the later row wins
    too_many = {"contacts": [{"email": f"x{i}@example.com"} for i in range(1001)]}
    assert_problem(
        await client.post("/v1/contacts/bulk", headers=workspace.headers, json=too_many), 422
    )


async def test_case_insensitive_uniqueness(
    ctx: AppContext, client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    for email in ["Mixed@Example.com", "mixed@example.com", "MIXED@EXAMPLE.COM"]:
        await _post(client, workspace, {"email": email})
    async with ctx.db.transaction() as session:
        count = (await session.execute(select(func.count()).select_from(Contact))).scalar_one()
    assert count == 1


async def test_lookup_and_bulk_delete_stay_in_the_workspace(
    client: httpx.AsyncClient, make_workspace: MakeWorkspace
) -> None:
    a = await make_workspace("a")
    b = await make_workspace("b")
    a_contact = (await _post(client, a, {"email": "shared@example.com", "external_id": "X"})).json()
    assert_problem(
        await client.get(
            "/v1/contacts/lookup", headers=b.headers, params={"email": "shared@example.com"}
        ),
        404,
    )
    assert_problem(
        await client.get("/v1/contacts/lookup", headers=b.headers, params={"external_id": "X"}), 404
    )
    response = await client.post(
        "/v1/contacts/bulk-delete", headers=b.headers, json={"ids": [a_contact["id"]]}
    )
    assert response.json() == {"deleted": 0, "not_found": [a_contact["id"]]}
    assert (
        await client.get(f"/v1/contacts/{a_contact['id']}", headers=a.headers)
    ).status_code == 200
    # the same address in B is a different contact
    b_contact = (await _post(client, b, {"email": "shared@example.com"})).json()
    assert b_contact["id"] != a_contact["id"]


async def test_delete_and_bulk_delete(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    ids = [
        (await _post(client, workspace, {"email": f"d{i}@example.com"})).json()["id"]
        for i in range(3)
    ]
    assert (
        await client.delete(f"/v1/contacts/{ids[0]}", headers=workspace.headers)
    ).status_code == 204
    assert_problem(await client.get(f"/v1/contacts/{ids[0]}", headers=workspace.headers), 404)
    missing = str(uuid.uuid4())
    result = (
        await client.post(
            "/v1/contacts/bulk-delete",
            headers=workspace.headers,
            json={"ids": [ids[1], ids[2], missing]},
        )
    ).json()
    assert result == {"deleted": 2, "not_found": [missing]}


async def test_events_are_recorded(client: httpx.AsyncClient, workspace: WorkspaceHandle) -> None:
    contact = (await _post(client, workspace, {"email": "ev@example.com"})).json()
    await client.patch(
        f"/v1/contacts/{contact['id']}", headers=workspace.headers, json={"first_name": "E"}
    )
    events = (
        await client.get(f"/v1/contacts/{contact['id']}/events", headers=workspace.headers)
    ).json()["data"]
    assert [e["type"] for e in events] == ["contact.updated", "contact.created"]
    assert events[0]["data"] == {"changed": ["first_name"]}


async def test_erase_leaves_only_a_tombstone(
    ctx: AppContext, client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    contact = (
        await _post(client, workspace, {"email": "Forget.Me@example.com", "first_name": "F"})
    ).json()
    await client.post(
        "/v1/suppressions",
        headers=workspace.headers,
        json={"email": "forget.me@example.com", "reason": "unsubscribe", "note": "asked"},
    )
    lists = (await client.get("/v1/lists", headers=workspace.headers)).json()["data"]
    await client.post(
        f"/v1/lists/{lists[0]['id']}/subscribe",
        headers=workspace.headers,
        json={"contact_ids": [contact["id"]]},
    )
    assert (
        await client.post(f"/v1/contacts/{contact['id']}/erase", headers=workspace.headers)
    ).status_code == 204
    assert_problem(
        await client.get(f"/v1/contacts/{contact['id']}", headers=workspace.headers), 404
    )
    hashed = email_hash("forget.me@example.com")
    async with ctx.db.transaction() as session:
        suppressions = list((await session.execute(select(Suppression))).scalars())
        events = list((await session.execute(select(Event))).scalars())
    assert {s.reason for s in suppressions} == {"unsubscribe", "manual"}
    assert all(s.email is None and s.email_hash == hashed for s in suppressions)
    assert all(e.contact_id != uuid.UUID(contact["id"]) for e in events)
    assert all("forget" not in str(e.data).lower() for e in events)
    # re-importing the address creates a contact, but the tombstone still suppresses it
    again = await _post(client, workspace, {"email": "forget.me@example.com"})
    assert again.status_code == 201
    tombstone = (
        await client.get("/v1/suppressions/forget.me@example.com", headers=workspace.headers)
    ).json()
    assert {t["reason"] for t in tombstone} == {"unsubscribe", "manual"}
