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


EDGE_ATTRIBUTES: list[dict[str, object]] = [
    {"n": 0.1 + 0.2, "neg": -5, "big": 10**15, "flag": True, "text": "-dash", "obj": {"a": [1]}},
    {"n": 1.5, "neg": -0.25, "flag": False, "text": 'say "hi",\nthen go', "arr": ["=x", 2]},
    {"text": "'@quoted", "nothing": None, "uni": "Zoë — ✓", "obj": {}},
    {},
]


async def _python_rendering(ctx: AppContext, workspace_id: object) -> list[list[str]]:
    """The same export through the Python encoder, the reference for the SQL cells."""
    from postroom.contacts.export_writer import csv_export_chunks_async
    from postroom.contacts.exporter import ContactExporter, ExportSelection

    exporter = ContactExporter(ctx, workspace_id, ExportSelection())  # type: ignore[arg-type]
    types = await exporter.attribute_types()
    chunks = csv_export_chunks_async(
        exporter.contacts(), list(types), attribute_types={k: v for k, v in types.items() if v}
    )
    data = b"".join([chunk async for chunk in chunks])
    return list(csv.reader(io.StringIO(data.decode())))


def _same_cell(sql: str, python: str, header: str) -> bool:
    if sql == python:
        return True
    # jsonb normalises numbers and prints objects with spaces: equal as values.
    try:
        return bool(json.loads(sql) == json.loads(python))
    except ValueError:
        return False


async def test_sql_cells_match_the_python_encoder(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    from postroom.models.contacts import Contact

    rows = [
        {"email": f"e{i}@example.com", "first_name": name, "attributes": attributes}
        for i, (name, attributes) in enumerate(
            zip(["=1", "plain", "+x", None], EDGE_ATTRIBUTES, strict=True)
        )
    ]
    response = await client.post(
        "/v1/contacts/bulk", headers=workspace.headers, json={"contacts": rows}
    )
    assert response.json()["failed"] == 0, response.text
    # one timestamp without microseconds, which isoformat writes without a fraction
    async with ctx.db.transaction() as session:
        await session.execute(
            update(Contact)
            .where(Contact.email == "e0@example.com")
            .values(updated_at=datetime(2024, 5, 1, 9, 30, tzinfo=UTC))
        )
    data = await _export(client, ctx, workspace, {"format": "csv"})
    sql_table = list(csv.reader(io.StringIO(data.decode())))
    python_table = await _python_rendering(ctx, workspace.id)
    assert sql_table[0] == python_table[0]
    assert len(sql_table) == len(python_table) == len(rows) + 1
    header = sql_table[0]
    for sql_row, python_row in zip(sql_table[1:], python_table[1:], strict=True):
        for name, sql_cell, python_cell in zip(header, sql_row, python_row, strict=True):
            assert _same_cell(sql_cell, python_cell, name), (name, sql_cell, python_cell)
    by_email = {row[0]: dict(zip(header, row, strict=True)) for row in sql_table[1:]}
    assert by_email["e0@example.com"]["updated_at"] == "2024-05-01T09:30:00Z"
    assert by_email["e0@example.com"]["first_name"] == "'=1"
    assert by_email["e0@example.com"]["text"] == "'-dash"
    assert by_email["e0@example.com"]["neg:number"] == "-5"
    assert by_email["e1@example.com"]["text"] == 'say "hi",\nthen go'
    assert by_email["e2@example.com"]["text"] == "''@quoted"
    assert by_email["e3@example.com"]["flag:boolean"] == ""
