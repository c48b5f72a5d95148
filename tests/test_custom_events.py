"""POST /v1/events: Mailglyph ``/v1/track`` semantics on both databases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from postroom.context import AppContext
from postroom.models.platform import Event
from tests.conftest import WorkspaceHandle

MakeKey = Callable[..., Awaitable[str]]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _events(ctx: AppContext, type: str) -> list[Event]:
    async with ctx.db.read_sessions() as session:
        return list((await session.execute(select(Event).where(Event.type == type))).scalars())


async def test_public_key_tracks_and_creates_a_subscribed_contact(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, make_key: MakeKey
) -> None:
    public = await make_key(workspace, kind="public")
    response = await client.post(
        "/v1/events",
        headers=bearer(public),
        json={"email": "new@example.com", "event": "signed_up", "data": {"plan": "pro"}},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["event"] == "signed_up"
    assert body["contact"]["email"] == "new@example.com"
    assert body["contact"]["created"] is True
    assert body["data"] == {"plan": "pro"}
    contact = (
        await client.get(f"/v1/contacts/{body['contact']['id']}", headers=workspace.headers)
    ).json()
    assert contact["status"] == "subscribed"
    [event] = await _events(ctx, "signed_up")
    assert str(event.id) == body["id"]
    assert str(event.contact_id) == body["contact"]["id"]
    assert event.data == {"plan": "pro"}
    assert event.workspace_id == workspace.id
    assert len(await _events(ctx, "contact.created")) == 1


async def test_existing_contact_is_reused_and_its_status_kept(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, make_key: MakeKey
) -> None:
    created = await client.post(
        "/v1/contacts",
        headers=workspace.headers,
        json={"email": "old@example.com", "status": "unsubscribed"},
    )
    assert created.status_code == 201, created.text
    public = await make_key(workspace, kind="public")
    response = await client.post(
        "/v1/events",
        headers=bearer(public),
        json={"email": "OLD@example.com", "event": "viewed", "subscribed": True},
    )
    assert response.status_code == 201, response.text
    assert response.json()["contact"] == {
        "id": created.json()["id"],
        "email": "old@example.com",
        "created": False,
    }
    contact = (
        await client.get(f"/v1/contacts/{created.json()['id']}", headers=workspace.headers)
    ).json()
    assert contact["status"] == "unsubscribed", "a public key must not resubscribe anyone"


async def test_new_contact_may_start_unsubscribed(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_key: MakeKey
) -> None:
    public = await make_key(workspace, kind="public")
    response = await client.post(
        "/v1/events",
        headers=bearer(public),
        json={"email": "quiet@example.com", "event": "visited", "subscribed": False},
    )
    assert response.status_code == 201, response.text
    contact = (
        await client.get(
            f"/v1/contacts/{response.json()['contact']['id']}", headers=workspace.headers
        )
    ).json()
    assert contact["status"] == "unsubscribed"


@pytest.mark.parametrize(
    "name",
    ["email.opened", "contact.subscribed", "campaign.sent", "sequence.x", "webhook.test"],
)
async def test_reserved_names_are_422_on_event(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    make_key: MakeKey,
    name: str,
) -> None:
    public = await make_key(workspace, kind="public")
    response = await client.post(
        "/v1/events", headers=bearer(public), json={"email": "a@example.com", "event": name}
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "event"
    assert "reserved" in error["message"]
    async with ctx.db.read_sessions() as session:
        assert (await session.execute(select(Event.id))).first() is None, "nothing recorded"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "x"}, "email"),
        ({"email": "a@example.com"}, "event"),
        ({"email": "a@example.com", "event": ""}, "event"),
        ({"email": "a@example.com", "event": " padded"}, "event"),
        ({"email": "a@example.com", "event": "x" * 101}, "event"),
        ({"email": "a@example.com", "event": "x", "data": [1]}, "data"),
        ({"email": "a@example.com", "event": "x", "data": {"big": "x" * 20_000}}, "data"),
        ({"email": "not-an-address", "event": "x"}, "email"),
    ],
)
async def test_invalid_bodies_are_422(
    client: httpx.AsyncClient,
    workspace: WorkspaceHandle,
    make_key: MakeKey,
    body: dict[str, Any],
    field: str,
) -> None:
    public = await make_key(workspace, kind="public")
    response = await client.post("/v1/events", headers=bearer(public), json=body)
    assert response.status_code == 422, response.text
    assert field in {error["field"] for error in response.json()["errors"]}


async def test_keys_and_scopes(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_key: MakeKey
) -> None:
    body = {"email": "k@example.com", "event": "scoped"}
    writer = await make_key(workspace, scopes=["events:write"])
    assert (await client.post("/v1/events", headers=bearer(writer), json=body)).status_code == 201
    reader = await make_key(workspace, scopes=["contacts:read"])
    response = await client.post("/v1/events", headers=bearer(reader), json=body)
    assert response.status_code == 403
    assert (await client.post("/v1/events", json=body)).status_code == 401
    # A public key reaches nothing else.
    public = await make_key(workspace, kind="public")
    assert (await client.get("/v1/contacts", headers=bearer(public))).status_code == 403


async def test_batch_is_all_or_nothing(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, make_key: MakeKey
) -> None:
    public = await make_key(workspace, kind="public")
    good = [{"email": f"b{n}@example.com", "event": "batched"} for n in range(3)]
    response = await client.post("/v1/events/batch", headers=bearer(public), json={"events": good})
    assert response.status_code == 201, response.text
    assert [row["contact"]["email"] for row in response.json()["data"]] == [
        "b0@example.com",
        "b1@example.com",
        "b2@example.com",
    ]
    bad = [*good, {"email": "c@example.com", "event": "email.sent"}]
    response = await client.post("/v1/events/batch", headers=bearer(public), json={"events": bad})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "events.3.event"
    assert len(await _events(ctx, "batched")) == 3


async def test_idempotency_key_replays(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, make_key: MakeKey
) -> None:
    public = await make_key(workspace, kind="public")
    headers = {**bearer(public), "Idempotency-Key": "track-1"}
    body = {"email": "i@example.com", "event": "once"}
    first = await client.post("/v1/events", headers=headers, json=body)
    second = await client.post("/v1/events", headers=headers, json=body)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert len(await _events(ctx, "once")) == 1
