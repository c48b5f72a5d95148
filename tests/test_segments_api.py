"""Saved segments and audience previews over HTTP (the compiler itself is proven against
a Python oracle in tests/db/test_segment_compiler.py)."""

from __future__ import annotations

import httpx

from tests.conftest import MakeWorkspace, WorkspaceHandle
from tests.test_api_keys import assert_problem

PLAN_PRO = {
    "logic": "AND",
    "groups": [{"filters": [{"field": "data.plan", "operator": "equals", "value": "pro"}]}],
}


async def _seed(client: httpx.AsyncClient, ws: WorkspaceHandle) -> str:
    rows = [
        {"email": "pro1@example.com", "locale": "fr", "attributes": {"plan": "pro"}},
        {"email": "pro2@example.com", "locale": "en", "attributes": {"plan": "pro"}},
        {"email": "pro3@example.com", "attributes": {"plan": "pro"}, "status": "unsubscribed"},
        {"email": "pro4@example.com", "attributes": {"plan": "pro"}},
        {"email": "free@example.com", "attributes": {"plan": "free"}},
    ]
    await client.post("/v1/contacts/bulk", headers=ws.headers, json={"contacts": rows})
    await client.post(
        "/v1/suppressions",
        headers=ws.headers,
        json={"email": "pro4@example.com", "reason": "bounce"},
    )
    created = await client.post(
        "/v1/segments", headers=ws.headers, json={"name": "Pro", "filter": PLAN_PRO}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_segment_crud_and_preview(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    segment_id = await _seed(client, workspace)
    preview = (
        await client.get(f"/v1/segments/{segment_id}/preview", headers=workspace.headers)
    ).json()
    # unsubscribed and suppressed contacts never count
    assert preview["count"] == 2
    assert sorted(c["email"] for c in preview["sample"]) == ["pro1@example.com", "pro2@example.com"]
    assert preview["locales"] == {"fr": 1, "en": 1}
    renamed = await client.patch(
        f"/v1/segments/{segment_id}", headers=workspace.headers, json={"name": "Paying"}
    )
    assert renamed.json()["name"] == "Paying"
    assert_problem(
        await client.post(
            "/v1/segments", headers=workspace.headers, json={"name": "Paying", "filter": PLAN_PRO}
        ),
        409,
    )
    assert (
        await client.delete(f"/v1/segments/{segment_id}", headers=workspace.headers)
    ).status_code == 204


async def test_invalid_filter_points_at_the_bad_node(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    bad = {
        "logic": "AND",
        "groups": [
            {
                "filters": [
                    {"field": "email", "operator": "contains", "value": "x"},
                    {"field": "data.age", "operator": "greaterThan", "value": 3},
                    {"field": "email", "operator": "sortOf", "value": "x"},
                ]
            }
        ],
    }
    problem = assert_problem(
        await client.post(
            "/v1/segments", headers=workspace.headers, json={"name": "bad", "filter": bad}
        ),
        422,
    )
    assert [e["field"] for e in problem["errors"]] == ["filter.groups.0.filters.2.operator"]  # type: ignore[union-attr]


async def test_audience_preview(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_workspace: MakeWorkspace
) -> None:
    segment_id = await _seed(client, workspace)
    lists = (await client.get("/v1/lists", headers=workspace.headers)).json()["data"]
    default_id = lists[0]["id"]
    pro1 = (
        await client.get(
            "/v1/contacts/lookup", headers=workspace.headers, params={"email": "pro1@example.com"}
        )
    ).json()
    free = (
        await client.get(
            "/v1/contacts/lookup", headers=workspace.headers, params={"email": "free@example.com"}
        )
    ).json()
    await client.post(
        f"/v1/lists/{default_id}/subscribe",
        headers=workspace.headers,
        json={"contact_ids": [pro1["id"], free["id"]]},
    )
    by_list = (
        await client.post(
            "/v1/audiences/preview",
            headers=workspace.headers,
            json={"audience": {"lists": [default_id]}},
        )
    ).json()
    assert by_list["count"] == 2
    narrowed = {"audience": {"lists": [default_id], "segment_id": segment_id}}
    assert (
        await client.post("/v1/audiences/preview", headers=workspace.headers, json=narrowed)
    ).json()["count"] == 1
    everyone = (
        await client.post("/v1/audiences/preview", headers=workspace.headers, json={"audience": {}})
    ).json()
    assert everyone["count"] == 3  # pro1, pro2, free
    # pro4 is bounce-suppressed: excluded even for transactional mail
    transactional = {"audience": {}, "purpose": "transactional"}
    assert (
        await client.post("/v1/audiences/preview", headers=workspace.headers, json=transactional)
    ).json()["count"] == 3
    other = await make_workspace("other")
    foreign = {"audience": {"lists": [default_id], "segment_id": segment_id}}
    problem = assert_problem(
        await client.post("/v1/audiences/preview", headers=other.headers, json=foreign), 422
    )
    assert {e["field"] for e in problem["errors"]} == {"lists.0", "segment_id"}  # type: ignore[union-attr]
