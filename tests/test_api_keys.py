"""Keys and scopes over real HTTP: 200, 401, 403 naming the scope, 404 across workspaces."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import MakeWorkspace, WorkspaceHandle

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body  # type: ignore[no-any-return]


async def test_list_keys_with_read_scope(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_key
) -> None:
    key = await make_key(workspace, ["api_keys:read"])
    response = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data", "next_cursor"}
    assert len(body["data"]) == 2  # the initial key and this one
    assert all("key_hash" not in row and "key" not in row for row in body["data"])


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer sk_nothing-like-a-real-key",
        "Basic abc",
        "Bearer garbage",
        "Bearer " + "sk_" + "a" * 300,
    ],
)
async def test_missing_or_garbled_key_is_401(client: httpx.AsyncClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    body = assert_problem(await client.get("/v1/api-keys", headers=headers), 401)
    assert body["code"] == "unauthenticated"


async def test_revoked_key_is_401(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_key
) -> None:
    key = await make_key(workspace, ["api_keys:read"])
    listing = await client.get("/v1/api-keys", headers=workspace.headers)
    key_id = next(r["id"] for r in listing.json()["data"] if r["prefix"] == key[:10])
    revoked = await client.delete(f"/v1/api-keys/{key_id}", headers=workspace.headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    body = assert_problem(
        await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key}"}), 401
    )
    assert "revoked" in body["detail"]


async def test_missing_scope_is_403_naming_it(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_key
) -> None:
    key = await make_key(workspace, ["contacts:read"])
    body = assert_problem(
        await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key}"}), 403
    )
    assert body["scope"] == "api_keys:read"
    assert "api_keys:read" in str(body["detail"])


async def test_write_implies_read(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_key
) -> None:
    key = await make_key(workspace, ["api_keys:write"])
    assert (
        await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 200


async def test_public_and_admin_keys_cannot_use_workspace_routes(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_key
) -> None:
    public = await make_key(workspace, None, kind="public")
    assert public.startswith("pk_")
    assert_problem(
        await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {public}"}), 403
    )
    admin = await make_key(None)
    assert admin.startswith("ak_")
    assert_problem(
        await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {admin}"}), 403
    )


async def test_foreign_key_id_is_404(
    client: httpx.AsyncClient, make_workspace: MakeWorkspace
) -> None:
    a = await make_workspace("a")
    b = await make_workspace("b")
    a_key_id = (await client.get("/v1/api-keys", headers=a.headers)).json()["data"][0]["id"]
    assert_problem(await client.get(f"/v1/api-keys/{a_key_id}", headers=b.headers), 404)
    assert_problem(await client.delete(f"/v1/api-keys/{a_key_id}", headers=b.headers), 404)
    # and A still works: B's attempt revoked nothing
    assert (await client.get(f"/v1/api-keys/{a_key_id}", headers=a.headers)).json()[
        "revoked_at"
    ] is None
    assert_problem(await client.get("/v1/api-keys/not-a-uuid", headers=a.headers), 404)


async def test_create_key_with_scopes_is_shown_once(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    created = await client.post(
        "/v1/api-keys", headers=workspace.headers, json={"name": "ci", "scopes": ["contacts:read"]}
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("sk_") and len(key) >= 3 + 43  # 256 random bits
    fetched = await client.get(f"/v1/api-keys/{created.json()['id']}", headers=workspace.headers)
    assert "key" not in fetched.json()
    assert fetched.json()["scopes"] == ["contacts:read"]
    bad = await client.post(
        "/v1/api-keys", headers=workspace.headers, json={"scopes": ["contacts:delete"]}
    )
    body = assert_problem(bad, 422)
    assert body["errors"][0]["field"] == "scopes"  # type: ignore[index]


async def test_workspaces_need_admin_key(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, admin_headers: dict[str, str]
) -> None:
    assert_problem(
        await client.post("/v1/workspaces", headers=workspace.headers, json={"name": "x"}), 403
    )
    created = await client.post("/v1/workspaces", headers=admin_headers, json={"name": "globex"})
    assert created.status_code == 201, created.text
    new_key = created.json()["api_key"]["key"]
    listing = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {new_key}"})
    assert listing.status_code == 200
    duplicate = await client.post("/v1/workspaces", headers=admin_headers, json={"name": "globex"})
    assert_problem(duplicate, 409)
    names = [
        w["name"]
        for w in (await client.get("/v1/workspaces", headers=admin_headers)).json()["data"]
    ]
    assert names == ["acme", "globex"]
    ws_id = created.json()["id"]
    assert (
        await client.delete(f"/v1/workspaces/{ws_id}", headers=admin_headers)
    ).status_code == 204
    assert_problem(
        await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {new_key}"}), 401
    )


async def test_last_used_is_stamped(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_key, ctx
) -> None:
    key = await make_key(workspace, ["api_keys:read"])
    headers = {"Authorization": f"Bearer {key}"}
    await client.get("/v1/api-keys", headers=headers)
    before = (await client.get("/v1/api-keys", headers=headers)).json()["data"]
    mine = next(k for k in before if k["prefix"] == key[:10])
    assert mine["last_used_at"] is not None
    ctx.clock.advance(3600)
    await client.get("/v1/api-keys", headers=headers)
    later = (await client.get("/v1/api-keys", headers=headers)).json()["data"]
    stamped = next(k for k in later if k["prefix"] == key[:10])["last_used_at"]
    assert stamped > mine["last_used_at"]
