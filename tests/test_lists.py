"""Lists, subscriptions and suppressions over HTTP on both databases."""

from __future__ import annotations

import asyncio

import httpx

from postroom.context import AppContext
from postroom.jobs.runner import JobRunner
from tests.conftest import WorkspaceHandle
from tests.test_api_keys import assert_problem


async def _contacts(
    client: httpx.AsyncClient, ws: WorkspaceHandle, n: int, prefix: str = "c"
) -> list[str]:
    rows = [{"email": f"{prefix}{i}@example.com", "attributes": {"n": i}} for i in range(n)]
    response = await client.post("/v1/contacts/bulk", headers=ws.headers, json={"contacts": rows})
    return [r["id"] for r in response.json()["results"]]


async def _list(
    client: httpx.AsyncClient, ws: WorkspaceHandle, name: str, **extra: object
) -> dict[str, object]:
    response = await client.post("/v1/lists", headers=ws.headers, json={"name": name, **extra})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_default_list_is_protected(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    lists = (await client.get("/v1/lists", headers=workspace.headers)).json()["data"]
    assert [(item["name"], item["is_default"]) for item in lists] == [("Newsletter", True)]
    body = assert_problem(
        await client.delete(f"/v1/lists/{lists[0]['id']}", headers=workspace.headers), 409
    )
    assert "default" in str(body["detail"])
    other = await _list(client, workspace, "Product news")
    assert (
        await client.delete(f"/v1/lists/{other['id']}", headers=workspace.headers)
    ).status_code == 204
    assert_problem(
        await client.post("/v1/lists", headers=workspace.headers, json={"name": "Newsletter"}), 409
    )


async def test_subscribe_unsubscribe_and_counts(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    ids = await _contacts(client, workspace, 5)
    news = await _list(client, workspace, "News")
    url = f"/v1/lists/{news['id']}"
    first = (
        await client.post(
            f"{url}/subscribe",
            headers=workspace.headers,
            json={"contact_ids": ids[:3], "emails": ["c3@example.com", "ghost@example.com"]},
        )
    ).json()
    assert first["changed"] == 4
    assert first["not_found"] == ["ghost@example.com"]
    again = (
        await client.post(
            f"{url}/subscribe", headers=workspace.headers, json={"contact_ids": ids[:2]}
        )
    ).json()
    assert (again["changed"], again["unchanged"]) == (0, 2)
    gone = (
        await client.post(
            f"{url}/unsubscribe", headers=workspace.headers, json={"contact_ids": [ids[0]]}
        )
    ).json()
    assert gone["changed"] == 1
    counts = (await client.get(url, headers=workspace.headers)).json()
    assert (counts["subscriber_count"], counts["unsubscribed_count"]) == (3, 1)
    members = (
        await client.get(
            f"{url}/subscriptions", headers=workspace.headers, params={"status": "subscribed"}
        )
    ).json()["data"]
    assert sorted(m["email"] for m in members) == [
        "c1@example.com",
        "c2@example.com",
        "c3@example.com",
    ]
    # list-level unsubscribe leaves the contact subscribed globally and on other lists
    contact = (await client.get(f"/v1/contacts/{ids[0]}", headers=workspace.headers)).json()
    assert contact["status"] == "subscribed"
    assert_problem(await client.post(f"{url}/subscribe", headers=workspace.headers, json={}), 422)
    assert_problem(
        await client.post(f"{url}/subscribe", headers=workspace.headers, json={"emails": ["nope"]}),
        422,
    )


async def test_double_opt_in_list_subscribes_unconfirmed(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    ids = await _contacts(client, workspace, 2)
    doi = await _list(client, workspace, "Confirmed only", double_opt_in=True)
    await client.post(
        f"/v1/lists/{doi['id']}/subscribe", headers=workspace.headers, json={"contact_ids": ids}
    )
    info = (await client.get(f"/v1/lists/{doi['id']}", headers=workspace.headers)).json()
    assert (info["subscriber_count"], info["unconfirmed_count"]) == (0, 2)


async def test_counts_stay_right_under_concurrent_changes(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    ids = await _contacts(client, workspace, 30)
    target = await _list(client, workspace, "Busy")
    url = f"/v1/lists/{target['id']}"

    async def flip(contact_id: str, n: int) -> None:
        for step in range(n):
            action = "subscribe" if step % 2 == 0 else "unsubscribe"
            response = await client.post(
                f"{url}/{action}", headers=workspace.headers, json={"contact_ids": [contact_id]}
            )
            assert response.status_code == 200, response.text

    # odd numbers of flips end subscribed, even end unsubscribed
    await asyncio.gather(*(flip(c, 1 + (i % 4)) for i, c in enumerate(ids)))
    expected_subscribed = sum(1 for i in range(30) if (1 + i % 4) % 2 == 1)
    info = (await client.get(url, headers=workspace.headers)).json()
    assert info["subscriber_count"] == expected_subscribed
    assert info["unsubscribed_count"] == 30 - expected_subscribed


async def test_subscribe_by_filter_runs_as_a_job(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await _contacts(client, workspace, 10)
    target = await _list(client, workspace, "Big numbers")
    flt = {
        "logic": "AND",
        "groups": [
            {"filters": [{"field": "data.n", "operator": "greaterThanOrEqual", "value": 6}]}
        ],
    }
    accepted = await client.post(
        f"/v1/lists/{target['id']}/subscribe", headers=workspace.headers, json={"filter": flt}
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert await JobRunner(ctx, ctx.jobs).run_once() == 1
    job = (await client.get(f"/v1/jobs/{job_id}", headers=workspace.headers)).json()
    assert job["status"] == "succeeded", job
    assert job["result"] == {"changed": 4}
    info = (await client.get(f"/v1/lists/{target['id']}", headers=workspace.headers)).json()
    assert info["subscriber_count"] == 4
    bad = {"groups": [{"filters": [{"field": "data.n", "operator": "near", "value": 1}]}]}
    problem = assert_problem(
        await client.post(
            f"/v1/lists/{target['id']}/subscribe", headers=workspace.headers, json={"filter": bad}
        ),
        422,
    )
    assert problem["errors"][0]["field"] == "filter.groups.0.filters.0.operator"  # type: ignore[index]


async def test_suppressions_crud(client: httpx.AsyncClient, workspace: WorkspaceHandle) -> None:
    added = await client.post(
        "/v1/suppressions",
        headers=workspace.headers,
        json={"email": "No.More@Example.com", "reason": "complaint", "note": "ARF"},
    )
    assert added.status_code == 201, added.text
    assert added.json()["email"] == "No.More@example.com"
    again = await client.post(
        "/v1/suppressions",
        headers=workspace.headers,
        json={"email": "no.more@example.com", "reason": "complaint"},
    )
    assert again.json()["id"] == added.json()["id"]  # idempotent per reason
    await client.post(
        "/v1/suppressions",
        headers=workspace.headers,
        json={"email": "no.more@example.com", "reason": "unsubscribe"},
    )
    both = (
        await client.get("/v1/suppressions/NO.MORE@example.com", headers=workspace.headers)
    ).json()
    assert sorted(s["reason"] for s in both) == ["complaint", "unsubscribe"]
    listing = (
        await client.get(
            "/v1/suppressions", headers=workspace.headers, params={"reason": "complaint"}
        )
    ).json()["data"]
    assert len(listing) == 1
    removed = await client.delete(
        "/v1/suppressions/no.more@example.com",
        headers=workspace.headers,
        params={"reason": "unsubscribe"},
    )
    assert removed.status_code == 204
    left = (
        await client.get("/v1/suppressions/no.more@example.com", headers=workspace.headers)
    ).json()
    assert [s["reason"] for s in left] == ["complaint"]
    assert_problem(
        await client.get("/v1/suppressions/nobody@example.com", headers=workspace.headers), 404
    )
    assert_problem(
        await client.post(
            "/v1/suppressions",
            headers=workspace.headers,
            json={"email": "x@example.com", "reason": "boredom"},
        ),
        422,
    )
