"""The import pipeline on both databases: the prepared-batch insert, its fall-back to the
matching upsert for rows that collide, and the reader process giving the same result as
the in-process reader."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from postroom.contacts.importer import ContactImporter, ImportSummary
from postroom.contacts.lists_repository import SubscriptionRepository
from postroom.context import AppContext
from postroom.models.contacts import Contact, email_hash
from tests.conftest import WorkspaceHandle


async def _import(
    ctx: AppContext, workspace_id: Any, data: bytes, *, parallel: bool, **options: Any
) -> ImportSummary:
    importer = ContactImporter(ctx, workspace_id, parallel=parallel, batch_size=4, **options)
    return await importer.run(io.BytesIO(data))


async def _contacts(ctx: AppContext, workspace_id: Any) -> dict[str, dict[str, Any]]:
    async with ctx.db.transaction() as session:
        rows = (
            await session.execute(select(Contact).where(Contact.workspace_id == workspace_id))
        ).scalars()
        return {
            c.email_key: {
                "email": c.email,
                "email_hash": c.email_hash,
                "external_id": c.external_id,
                "first_name": c.first_name,
                "status": c.status,
                "attributes": c.attributes,
                "opt_in": c.opt_in,
                "consent": c.consent_at is not None,
                "created": c.created_at,
                "id_version": c.id.version,
            }
            for c in rows
        }


FIRST = b"\n".join(
    [
        b"email,external_id,first_name,status,opt_in,plan,age:number",
        b"a@example.com,,Ann,,yes,pro,31",  # 2
        b"b@example.com,x-b,Bob,unsubscribed,,free,",  # 3
        b"bad-address,,Bad,,,,",  # 4
        b"c@example.com,,Cy,,,free,40",  # 5
        b"A@example.com,,Ann Again,,,,32",  # 6 repeats line 2 in the same batch: an update
        b"c@example.com,x-b,Dee,,,,",  # 7 x-b is b's, c@ another contact: conflict
        b"e@example.com,,Eve,bounced,,,",  # 8
        b"f@example.com,,Fay,,,,1e3",  # 9
        b"g@example.com,,Gus,,,,",  # 10
    ]
)
SECOND = b"\n".join(
    [
        b"email,external_id,first_name,status,plan",
        b"b@example.com,x-other,Bob,,",  # 2 b has external id x-b: conflict
        b"e@example.com,,Eve,subscribed,gold",  # 3 a bounce is not undone by an import
        b"h@example.com,,Hal,,",  # 4 new
        b"c@example.com,,,,",  # 5 nothing but the email: unchanged
    ]
)


@pytest.mark.parametrize("parallel", [False, True])
async def test_prepared_batches_insert_update_and_conflict(
    ctx: AppContext, workspace: WorkspaceHandle, parallel: bool
) -> None:
    first = await _import(ctx, workspace.id, FIRST, parallel=parallel)
    assert (first.processed, first.created, first.updated, first.failed) == (9, 6, 1, 2)
    assert [(e["line"], e["code"]) for e in first.errors] == [(4, "invalid_email"), (7, "conflict")]
    second = await _import(ctx, workspace.id, SECOND, parallel=parallel)
    assert (second.created, second.updated, second.failed) == (1, 2, 1)
    assert [(e["line"], e["field"]) for e in second.errors] == [(2, "external_id")]

    stored = await _contacts(ctx, workspace.id)
    assert sorted(stored) == [f"{c}@example.com" for c in "abcefgh"]
    a = stored["a@example.com"]
    assert (a["email"], a["first_name"], a["status"]) == (
        "A@example.com",
        "Ann Again",
        "subscribed",
    )
    assert a["attributes"] == {"plan": "pro", "age": 32}
    assert (a["opt_in"], a["consent"]) == (True, True)
    assert stored["b@example.com"]["status"] == "unsubscribed"
    assert stored["b@example.com"]["external_id"] == "x-b"
    assert stored["b@example.com"]["attributes"] == {"plan": "free"}
    assert stored["c@example.com"]["attributes"] == {"plan": "free", "age": 40}
    assert stored["e@example.com"]["status"] == "bounced"
    assert stored["e@example.com"]["attributes"] == {"plan": "gold"}
    assert stored["f@example.com"]["attributes"] == {"age": 1000.0}
    assert stored["g@example.com"]["consent"] is False
    assert stored["g@example.com"]["opt_in"] is None
    for key, contact in stored.items():
        assert contact["email_hash"] == email_hash(key)
        assert contact["id_version"] == 7
        assert contact["created"] == ctx.clock.now()


async def test_reader_process_matches_in_process_reader(
    ctx: AppContext, make_workspace: Any
) -> None:
    lines = [b"email;first_name;score:number;note"]
    bad_lines = []
    for i in range(300):
        lines.append(f"user{i}@example.org;N{i};{i / 4};".encode() + (b"x" if i % 2 else b""))
        if i % 37 == 0:
            lines.append(b"broken@;;;")
            bad_lines.append(len(lines))
        if i % 50 == 0:
            lines.append(f"USER{i // 2}@example.org;Again;1;".encode())
    data = b"\r\n".join(lines) + b"\r\n"
    results = []
    for parallel in (False, True):
        ws = await make_workspace(name=f"pipeline-{parallel}")
        summary = await _import(ctx, ws.id, data, parallel=parallel)
        stored = await _contacts(ctx, ws.id)
        results.append((summary.as_dict(), {k: v["attributes"] for k, v in stored.items()}))
    assert results[0] == results[1]
    summary = results[0][0]
    assert summary["failed"] == 9 and summary["created"] == 300 and summary["updated"] == 6
    assert [e["line"] for e in summary["errors"]] == bad_lines


async def test_reader_process_reports_a_bad_header(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    summary = await _import(ctx, workspace.id, b"name,plan\nAnn,pro\n" * 3, parallel=True)
    assert summary.failed == 1 and summary.errors[0]["code"] == "invalid_header"


async def test_import_json_nulls_delete_attributes(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    first = [{"email": "n@example.com", "attributes": {"keep": 1, "drop": 2}}]
    await ContactImporter(ctx, workspace.id).run(io.BytesIO(json.dumps(first).encode()))
    second = [
        {"email": "n@example.com", "attributes": {"drop": None, "new": "v"}},
        {"email": "m@example.com", "attributes": {"gone": None, "kept": True}},
    ]
    summary = await ContactImporter(ctx, workspace.id).run(io.BytesIO(json.dumps(second).encode()))
    assert (summary.created, summary.updated) == (1, 1)
    stored = await _contacts(ctx, workspace.id)
    assert stored["n@example.com"]["attributes"] == {"keep": 1, "new": "v"}
    assert stored["m@example.com"]["attributes"] == {"kept": True}


@pytest.mark.parametrize("parallel", [False, True])
async def test_import_into_a_list_subscribes_created_and_updated(
    ctx: AppContext, client: httpx.AsyncClient, workspace: WorkspaceHandle, parallel: bool
) -> None:
    await _import(ctx, workspace.id, b"email\nold@example.com\n", parallel=False)
    response = await client.post("/v1/lists", headers=workspace.headers, json={"name": "News"})
    list_id = uuid.UUID(response.json()["id"])
    data = b"email\nold@example.com\n" + b"".join(
        f"new{i}@example.com\n".encode() for i in range(6)
    )
    summary = await _import(ctx, workspace.id, data, parallel=parallel, list_id=list_id)
    assert (summary.created, summary.updated) == (6, 1)
    async with ctx.db.transaction() as session:
        page = await SubscriptionRepository(session, workspace.id).page(list_id, None, None, 100)
    assert len(page) == 7


async def test_a_failing_import_stops_its_reader_process(
    ctx: AppContext, workspace: WorkspaceHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from postroom.contacts import importer as importer_module

    started: list[subprocess.Popen[bytes]] = []

    class RecordingPopen(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(importer_module.subprocess, "Popen", RecordingPopen)

    async def fail(_summary: ImportSummary) -> None:
        raise RuntimeError("progress store is down")

    data = b"email\n" + b"".join(f"u{i}@example.com\n".encode() for i in range(5000))
    importer = ContactImporter(ctx, workspace.id, parallel=True, batch_size=10, progress=fail)
    with pytest.raises(RuntimeError, match="progress store is down"):
        await importer.run(io.BytesIO(data))
    [process] = started
    assert process.poll() is not None  # stopped and reaped, not left reading
    assert importer.summary.created == 10  # the first batch committed before the failure
