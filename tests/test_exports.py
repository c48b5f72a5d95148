"""Exports as jobs with a streamed download, the CLI import/export, and the export ->
import round trip with neutralised cells."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from postroom.context import AppContext
from postroom.jobs.runner import JobRunner
from tests.conftest import WorkspaceHandle
from tests.test_api_keys import assert_problem

TRICKY = [
    "=SUM(A1:A2)",
    "+44 fine",
    "-minus",
    "@handle",
    "\ttabbed",
    "'=already",
    "'plain quote",
    "naïve ünïcode",
]


async def _run_jobs(ctx: AppContext) -> None:
    runner = JobRunner(ctx, ctx.jobs)
    while await runner.run_once():
        pass


async def _seed(client: httpx.AsyncClient, ws: WorkspaceHandle) -> None:
    rows = [
        {
            "email": f"r{i}@example.com",
            "first_name": value,
            "attributes": {"note": value, "n": i, "vip": i % 2 == 0},
        }
        for i, value in enumerate(TRICKY)
    ]
    rows.append({"email": "out@example.com", "status": "unsubscribed"})
    response = await client.post("/v1/contacts/bulk", headers=ws.headers, json={"contacts": rows})
    assert response.json()["failed"] == 0, response.text


async def _export(
    client: httpx.AsyncClient, ctx: AppContext, ws: WorkspaceHandle, body: dict[str, object]
) -> bytes:
    created = await client.post("/v1/exports", headers=ws.headers, json=body)
    assert created.status_code == 202, created.text
    export_id = created.json()["id"]
    assert_problem(await client.get(f"/v1/exports/{export_id}/download", headers=ws.headers), 409)
    await _run_jobs(ctx)
    done = (await client.get(f"/v1/exports/{export_id}", headers=ws.headers)).json()
    assert done["status"] == "completed", done
    download = await client.get(done["download_url"], headers=ws.headers)
    assert download.status_code == 200
    return download.content


async def test_csv_export_neutralises_and_round_trips(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, make_workspace
) -> None:
    await _seed(client, workspace)
    data = await _export(client, ctx, workspace, {"format": "csv"})
    table = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(table) == len(TRICKY) + 1
    by_email = {row["email"]: row for row in table}
    assert by_email["r0@example.com"]["first_name"] == "'=SUM(A1:A2)"
    assert by_email["r3@example.com"]["first_name"] == "'@handle"
    assert by_email["r5@example.com"]["first_name"] == "''=already"
    assert by_email["r6@example.com"]["first_name"] == "'plain quote"
    # re-import into another workspace: every value comes back exactly
    other = await make_workspace("restore")
    response = await client.post(
        "/v1/imports", headers={**other.headers, "content-type": "text/csv"}, content=data
    )
    await _run_jobs(ctx)
    summary = (
        await client.get(f"/v1/imports/{response.json()['id']}", headers=other.headers)
    ).json()
    assert (summary["created"], summary["failed"]) == (len(TRICKY) + 1, 0), summary
    originals = (
        await client.get("/v1/contacts", headers=workspace.headers, params={"limit": 100})
    ).json()["data"]
    restored = (
        await client.get("/v1/contacts", headers=other.headers, params={"limit": 100})
    ).json()["data"]
    keep = ("email", "first_name", "status", "attributes")
    assert sorted([{k: c[k] for k in keep} for c in restored], key=lambda c: c["email"]) == sorted(
        [{k: c[k] for k in keep} for c in originals], key=lambda c: c["email"]
    )


async def test_jsonl_export_with_selection(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await _seed(client, workspace)
    data = await _export(client, ctx, workspace, {"format": "jsonl", "status": "unsubscribed"})
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert [r["email"] for r in rows] == ["out@example.com"]
    flt = {"groups": [{"filters": [{"field": "data.vip", "operator": "equals", "value": True}]}]}
    data = await _export(client, ctx, workspace, {"format": "jsonl", "filter": flt})
    assert len(data.decode().splitlines()) == 4
    assert_problem(
        await client.post("/v1/exports", headers=workspace.headers, json={"format": "xlsx"}), 422
    )
    bad = {
        "format": "csv",
        "filter": {"groups": [{"filters": [{"field": "nope", "operator": "equals", "value": 1}]}]},
    }
    problem = assert_problem(
        await client.post("/v1/exports", headers=workspace.headers, json=bad), 422
    )
    assert problem["errors"][0]["field"].startswith("filter.groups.0.filters.0")  # type: ignore[index]


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATA_DIR=str(data_dir), COLUMNS="200")
    result = subprocess.run(
        [sys.executable, "-m", "postroom", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_cli_import_and_export(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text(
        "email,first_name,plan\na@example.com,Ann,=1+1\nbroken,Bob,x\nb@example.com,Ben,pro\n"
    )
    _cli(tmp_path, "workspaces", "create", "acme")
    imported = _cli(tmp_path, "import", str(source), "--workspace", "acme", "--list", "Newsletter")
    assert "created 2" in imported.stdout
    assert "failed 1" in imported.stdout
    assert "line 3" in imported.stdout
    out = tmp_path / "out.csv"
    exported = _cli(
        tmp_path, "export", "--workspace", "acme", "--output", str(out), "--list", "Newsletter"
    )
    assert "exported 2" in exported.stdout
    table = list(csv.DictReader(out.open()))
    assert [(r["email"], r["plan"]) for r in table] == [
        ("a@example.com", "'=1+1"),
        ("b@example.com", "pro"),
    ]
