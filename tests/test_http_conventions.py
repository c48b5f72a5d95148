"""HTTP conventions every route inherits: problem+json, request ids, pagination,
path ids before bodies, idempotency keys."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx

from postroom.context import AppContext
from postroom.http import idempotency
from tests.conftest import MakeWorkspace, WorkspaceHandle
from tests.test_api_keys import assert_problem


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing-here"), 404)
    assert_problem(await client.put("/healthz"), 405)


async def test_malformed_json_is_422_with_field_errors(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    headers = {**workspace.headers, "content-type": "application/json"}
    body = assert_problem(await client.post("/v1/api-keys", headers=headers, content=b"{bad"), 422)
    assert body["errors"][0]["code"] == "json_invalid"  # type: ignore[index]
    body = assert_problem(
        await client.post(
            "/v1/api-keys", headers=workspace.headers, json={"kind": "weird", "x": 1}
        ),
        422,
    )
    fields = {e["field"] for e in body["errors"]}  # type: ignore[union-attr]
    assert fields == {"kind", "x"}


async def test_foreign_id_is_404_even_with_a_bad_body(
    client: httpx.AsyncClient, make_workspace: MakeWorkspace, admin_headers: dict[str, str]
) -> None:
    a = await make_workspace("a")
    b = await make_workspace("b")
    a_key = (await client.get("/v1/api-keys", headers=a.headers)).json()["data"][0]["id"]
    response = await client.request(
        "DELETE", f"/v1/api-keys/{a_key}", headers=b.headers, content=b"{not json"
    )
    assert_problem(response, 404)
    # an unknown workspace id with a malformed body: 404, not 422
    response = await client.patch(
        f"/v1/workspaces/{uuid.uuid4()}",
        headers={**admin_headers, "content-type": "application/json"},
        content=b"{nope",
    )
    assert_problem(response, 404)


async def test_request_id_on_every_response(client: httpx.AsyncClient) -> None:
    ok = await client.get("/healthz")
    assert len(ok.headers["x-request-id"]) >= 16
    echoed = await client.get("/v1/api-keys", headers={"X-Request-Id": "abc-123"})
    assert echoed.status_code == 401
    assert echoed.headers["x-request-id"] == "abc-123"
    hostile = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"


async def test_health_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] in {"sqlite", "postgresql"}
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/api-keys" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_cursor_pagination(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_key
) -> None:
    for _ in range(6):
        await make_key(workspace, ["contacts:read"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/api-keys", headers=workspace.headers, params=params)).json()
        seen += [row["id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7
    assert len(set(seen)) == 7
    assert seen == sorted(seen)
    assert_problem(
        await client.get("/v1/api-keys", headers=workspace.headers, params={"limit": 501}), 422
    )
    assert_problem(
        await client.get("/v1/api-keys", headers=workspace.headers, params={"cursor": "%%%"}), 422
    )


async def test_idempotent_replay(client: httpx.AsyncClient, workspace: WorkspaceHandle) -> None:
    headers = {**workspace.headers, "Idempotency-Key": "create-key-1"}
    first = await client.post("/v1/api-keys", headers=headers, json={"name": "once"})
    again = await client.post("/v1/api-keys", headers=headers, json={"name": "once"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    names = [
        k["name"]
        for k in (await client.get("/v1/api-keys", headers=workspace.headers)).json()["data"]
    ]
    assert names.count("once") == 1


async def test_idempotency_key_with_another_body_is_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    headers = {**workspace.headers, "Idempotency-Key": "k-2"}
    assert (
        await client.post("/v1/api-keys", headers=headers, json={"name": "a"})
    ).status_code == 201
    body = assert_problem(
        await client.post("/v1/api-keys", headers=headers, json={"name": "b"}), 422
    )
    assert body["code"] == "idempotency_key_reused"


async def test_idempotency_key_in_flight_is_409(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, ctx: AppContext
) -> None:
    payload = b'{"name": "slow"}'
    # The first request has claimed the key and is still running.
    claim = idempotency.Claim(f"ws:{workspace.id}", "k-3", "POST", "/v1/api-keys")
    fingerprint = idempotency.fingerprint("POST", "/v1/api-keys", "", payload)
    assert (
        await idempotency.claim(ctx.db, claim, fingerprint, ctx.clock.now(), timedelta(hours=24))
        is None
    )
    headers = {**workspace.headers, "Idempotency-Key": "k-3", "content-type": "application/json"}
    body = assert_problem(await client.post("/v1/api-keys", headers=headers, content=payload), 409)
    assert body["code"] == "idempotency_in_flight"
    # A claim whose process died expires and can be taken over.
    ctx.clock.advance(idempotency.CLAIM_SECONDS + 1)  # type: ignore[attr-defined]
    assert (await client.post("/v1/api-keys", headers=headers, content=payload)).status_code == 201


async def test_failed_request_releases_its_key_and_keys_expire(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, ctx: AppContext
) -> None:
    headers = {**workspace.headers, "Idempotency-Key": "k-4"}
    bad = await client.post("/v1/api-keys", headers=headers, json={"scopes": ["nope:read"]})
    assert bad.status_code == 422
    good = await client.post("/v1/api-keys", headers=headers, json={"scopes": ["contacts:read"]})
    assert good.status_code == 201
    ctx.clock.advance(timedelta(hours=25))  # type: ignore[attr-defined]
    later = await client.post("/v1/api-keys", headers=headers, json={"scopes": ["contacts:read"]})
    assert later.status_code == 201
    assert later.json()["id"] != good.json()["id"]
    too_long = {**workspace.headers, "Idempotency-Key": "x" * 256}
    assert_problem(await client.post("/v1/api-keys", headers=too_long, json={}), 422)
