"""Imports through the API (stored in the database, run as a job): good rows land, bad
rows are reported by line, and nothing stops the import."""

from __future__ import annotations

import json

import httpx

from postroom.context import AppContext
from postroom.jobs.runner import JobRunner
from tests.conftest import MakeWorkspace, WorkspaceHandle
from tests.test_api_keys import assert_problem


def messy_csv() -> bytes:
    lines = [
        b"Email Address,First Name,plan,age:number",  # 1 header (unknown columns -> attributes)
        b"good1@example.com,Ann,pro,31",  # 2
        b"not-an-email,Bob,free,20",  # 3 bad email
        b'good2@example.com,"Smith, Jr.",pro,40',  # 4 quoted delimiter
        b"good3@example.com,Cy,free,abc",  # 5 bad number
        b"x" * (10 * 1024 * 1024),  # 6 a 10 MB line
        b"bad-utf8-\xff\xfe@example.com,Dee,pro,1",  # 7 invalid UTF-8
        b'good4@example.com,"unterminated,pro,5',  # 8 broken quoting
        b"good5@example.com,Eve,pro,7,extra-cell",  # 9 too many cells
        b"GOOD1@example.com,Ann Again,,",  # 10 duplicate of line 2 (updates it)
        b"good6@example.com,Fay,=cmd(),9",  # 11 formula-looking value kept as data
    ]
    return b"\r\n".join(lines) + b"\r\n"


async def _run_jobs(ctx: AppContext) -> None:
    runner = JobRunner(ctx, ctx.jobs)
    while await runner.run_once():
        pass


async def test_import_with_bad_rows(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    news = (
        await client.post("/v1/lists", headers=workspace.headers, json={"name": "Imported"})
    ).json()
    response = await client.post(
        "/v1/imports",
        headers={**workspace.headers, "content-type": "text/csv"},
        params={"list_id": news["id"], "filename": "people.csv"},
        content=messy_csv(),
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    await _run_jobs(ctx)
    result = (
        await client.get(f"/v1/imports/{response.json()['id']}", headers=workspace.headers)
    ).json()
    assert result["status"] == "completed", result
    bad_lines = [e["line"] for e in result["errors"]]
    assert bad_lines == [3, 5, 6, 7, 8, 9], result["errors"]
    assert (result["created"], result["updated"], result["failed"]) == (3, 1, 6)
    assert result["processed"] == 10
    contacts = (
        await client.get("/v1/contacts", headers=workspace.headers, params={"limit": 100})
    ).json()["data"]
    by_email = {c["email"].lower(): c for c in contacts}
    assert set(by_email) == {"good1@example.com", "good2@example.com", "good6@example.com"}
    assert by_email["good1@example.com"]["first_name"] == "Ann Again"
    assert by_email["good1@example.com"]["attributes"] == {"plan": "pro", "age": 31}
    assert by_email["good2@example.com"]["first_name"] == "Smith, Jr."
    assert by_email["good6@example.com"]["attributes"]["plan"] == "=cmd()"
    members = (await client.get(f"/v1/lists/{news['id']}", headers=workspace.headers)).json()
    assert members["subscriber_count"] == len(by_email)


async def test_import_json_and_jsonl(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    array = [
        {"email": "j1@example.com", "data": {"plan": "pro"}},
        {"email": "nope"},
        {"email": "j2@example.com", "tier": 2},
    ]
    first = await client.post(
        "/v1/imports",
        headers=workspace.headers,
        content=json.dumps(array).encode(),
        params={"format": "json"},
    )
    lines = b'{"email": "l1@example.com"}\n{"email": 5}\n{"email": "l2@example.com", "first_name": "L"}\n'
    second = await client.post(
        "/v1/imports",
        headers={**workspace.headers, "content-type": "application/x-ndjson"},
        content=lines,
    )
    await _run_jobs(ctx)
    a = (await client.get(f"/v1/imports/{first.json()['id']}", headers=workspace.headers)).json()
    b = (await client.get(f"/v1/imports/{second.json()['id']}", headers=workspace.headers)).json()
    assert (a["created"], a["failed"]) == (2, 1)
    assert (b["created"], b["failed"]) == (2, 1)
    assert [e["line"] for e in b["errors"]] == [2]
    j2 = (
        await client.get(
            "/v1/contacts/lookup", headers=workspace.headers, params={"email": "j2@example.com"}
        )
    ).json()
    assert j2["attributes"] == {"tier": 2}
    listing = (await client.get("/v1/imports", headers=workspace.headers)).json()["data"]
    assert [i["id"] for i in listing] == [second.json()["id"], first.json()["id"]]


async def test_multipart_upload_and_mapping(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    csv = b"Mail;Vorname\nm1@example.com;Max\n"
    response = await client.post(
        "/v1/imports",
        headers=workspace.headers,
        params={"mapping": json.dumps({"Mail": "email", "Vorname": "first_name"})},
        files={"file": ("kontakte.csv", csv, "text/csv")},
    )
    assert response.status_code == 202, response.text
    await _run_jobs(ctx)
    m1 = (
        await client.get(
            "/v1/contacts/lookup", headers=workspace.headers, params={"email": "m1@example.com"}
        )
    ).json()
    assert m1["first_name"] == "Max"


async def test_import_refusals(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_workspace: MakeWorkspace
) -> None:
    other = await make_workspace("other")
    foreign_list = (await client.get("/v1/lists", headers=other.headers)).json()["data"][0]["id"]
    problem = assert_problem(
        await client.post(
            "/v1/imports",
            headers=workspace.headers,
            params={"list_id": foreign_list},
            content=b"email\na@example.com\n",
        ),
        422,
    )
    assert problem["errors"][0]["field"] == "list_id"  # type: ignore[index]
    assert_problem(await client.post("/v1/imports", headers=workspace.headers, content=b""), 422)
    assert_problem(
        await client.post(
            "/v1/imports", headers=workspace.headers, params={"mapping": "[1]"}, content=b"email\n"
        ),
        422,
    )
    narrow = {"Authorization": workspace.headers["Authorization"]}
    assert (await client.get("/v1/imports", headers=narrow)).status_code == 200
