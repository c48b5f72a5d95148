"""The ledger's schema after migration 0012 (ledger_speed): a contact's deliveries go with
it though deliveries.contact_id has no foreign key, fan-out ids are time-ordered, the
SQLite rebuild keeps every row (including the analytics rows that cascade from
deliveries), and events.seq is never reused on SQLite."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, delete, func, inspect, select, text

from postroom.campaigns.fanout import fan_out
from postroom.context import AppContext
from postroom.db import migrate
from postroom.events.service import record
from postroom.ids import uuid7
from postroom.models.delivery import Delivery, Send
from postroom.models.platform import Event
from postroom.models.workspaces import Workspace
from tests.conftest import WorkspaceHandle
from tests.support.campaigns import add_contacts, add_domain, create_campaign
from tests.support.databases import sqlite_url


def emails(n: int) -> list[str]:
    return [f"person{i:03d}@example.org" for i in range(n)]


async def _send(ctx: AppContext, workspace_id: uuid.UUID) -> uuid.UUID:
    now = ctx.clock.now()
    send = Send(
        id=uuid7(),
        workspace_id=workspace_id,
        kind="transactional",
        content={"inline": {"subject": "s", "html": "<p>h</p>"}},
        from_email="news@example.org",
        list_ids=[],
        tags=[],
        metadata_={},
        created_at=now,
    )
    async with ctx.db.transaction() as session:
        session.add(send)
    return send.id


async def _deliver_to(
    ctx: AppContext, workspace_id: uuid.UUID, send_id: uuid.UUID, contacts: list[uuid.UUID]
) -> None:
    now = ctx.clock.now()
    async with ctx.db.transaction() as session:
        for n, contact_id in enumerate(contacts):
            session.add(
                Delivery(
                    id=uuid7(),
                    workspace_id=workspace_id,
                    send_id=send_id,
                    contact_id=contact_id,
                    email=f"r{n}@example.org",
                    status="sent",
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )


async def _ledger(ctx: AppContext, send_id: uuid.UUID) -> set[uuid.UUID | None]:
    async with ctx.db.transaction() as session:
        rows = await session.execute(select(Delivery.contact_id).where(Delivery.send_id == send_id))
        return {row[0] for row in rows}


async def test_contact_delete_and_bulk_delete_remove_their_deliveries_only(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    ids = await add_contacts(ctx, workspace.id, emails(4))
    send_id = await _send(ctx, workspace.id)
    await _deliver_to(ctx, workspace.id, send_id, ids)

    deleted = await client.delete(f"/v1/contacts/{ids[0]}", headers=workspace.headers)
    assert deleted.status_code == 204, deleted.text
    assert await _ledger(ctx, send_id) == set(ids[1:])

    bulk = await client.post(
        "/v1/contacts/bulk-delete",
        json={"ids": [str(ids[1]), str(ids[2])]},
        headers=workspace.headers,
    )
    assert bulk.status_code in (200, 204), bulk.text
    assert await _ledger(ctx, send_id) == {ids[3]}


async def test_erase_removes_the_contacts_deliveries_and_not_another_workspaces(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    make_workspace: Any,
) -> None:
    ids = await add_contacts(ctx, workspace.id, emails(2))
    send_id = await _send(ctx, workspace.id)
    await _deliver_to(ctx, workspace.id, send_id, ids)
    # A row of another workspace naming the same contact id (no foreign key holds it back)
    # must not be touched by this workspace's erase.
    other = await make_workspace()
    other_send = await _send(ctx, other.id)
    await _deliver_to(ctx, other.id, other_send, [ids[0]])

    erased = await client.post(f"/v1/contacts/{ids[0]}/erase", headers=workspace.headers)
    assert erased.status_code in (200, 204), erased.text
    assert await _ledger(ctx, send_id) == {ids[1]}
    assert await _ledger(ctx, other_send) == {ids[0]}


async def test_deleting_a_workspace_still_removes_its_deliveries(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    ids = await add_contacts(ctx, workspace.id, emails(2))
    send_id = await _send(ctx, workspace.id)
    await _deliver_to(ctx, workspace.id, send_id, ids)
    async with ctx.db.transaction() as session:
        await session.execute(delete(Workspace).where(Workspace.id == workspace.id))
    assert await _ledger(ctx, send_id) == set()


async def test_fan_out_ids_are_unique_uuid7_and_ordered_by_chunk(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    await add_domain(client, workspace)
    contact_ids = await add_contacts(ctx, workspace.id, emails(17))
    campaign = await create_campaign(client, workspace)
    response = await client.post(f"/v1/campaigns/{campaign['id']}/send", headers=workspace.headers)
    assert response.status_code == 202, response.text
    summary = await fan_out(ctx, uuid.UUID(campaign["id"]), chunk=5)
    assert summary["inserted"] == 17
    async with ctx.db.transaction() as session:
        rows = (
            await session.execute(
                select(Delivery.contact_id, Delivery.id).where(
                    Delivery.send_id == uuid.UUID(response.json()["send_id"])
                )
            )
        ).all()
    by_contact = dict(rows)
    assert len({row[1] for row in rows}) == 17
    assert all(row[1].version == 7 for row in rows)
    # Chunks are ranges of contact ids, in order: each chunk's ids sort after the last's.
    ordered = [by_contact[c] for c in sorted(contact_ids)]
    chunks = [ordered[i : i + 5] for i in range(0, 17, 5)]
    for before, after in itertools.pairwise(chunks):
        assert max(before) < min(after)


async def test_an_event_seq_is_never_reused_after_the_newest_event_is_deleted(
    ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    """On SQLite a plain INTEGER PRIMARY KEY hands out max(seq) + 1; GDPR erase deletes a
    contact's events, and a consumer already past the deleted seq would skip the next
    event. Runs on PostgreSQL too, where a sequence gives the same guarantee."""

    async def add(kind: str) -> int:
        async with ctx.db.transaction() as session:
            await record(
                session,
                workspace_id=workspace.id,
                type=kind,
                occurred_at=ctx.clock.now(),
                resource_type="contact",
            )
        async with ctx.db.transaction() as session:
            return int((await session.execute(select(func.max(Event.seq)))).scalar_one())

    await add("contact.created")
    newest = await add("contact.updated")
    async with ctx.db.transaction() as session:
        await session.execute(delete(Event).where(Event.seq == newest))
    assert await add("contact.deleted") > newest


# --- the migration itself on SQLite (the table rebuilds) --------------------------------------


def _insert(engine: Engine, table: str, values: dict[str, Any]) -> None:
    """A row with ``values`` and a placeholder for every other NOT NULL column."""
    row = dict(values)
    for column in inspect(engine).get_columns(table):
        # seq: left to the database (the point of the test).
        if column["name"] in row or column["nullable"] or column["name"] == "seq":
            continue
        kind = str(column["type"]).upper()
        if "INT" in kind or "BOOL" in kind or "NUMERIC" in kind:
            row[column["name"]] = 0
        elif "JSON" in kind:
            row[column["name"]] = "{}"
        elif "DATETIME" in kind or "TIMESTAMP" in kind:
            row[column["name"]] = datetime(2026, 12, 5).isoformat(" ")
        else:
            row[column["name"]] = "x"
    names = ", ".join(row)
    marks = ", ".join(f":{name}" for name in row)
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), row)


def _sql(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": name}
            ).scalar()
        )


def test_the_sqlite_rebuild_keeps_every_row_and_makes_seq_autoincrement(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url, "0011")
    engine = migrate.sync_engine(url)
    try:
        ws, send, contact, delivery = (uuid7().hex for _ in range(4))
        _insert(engine, "workspaces", {"id": ws})
        _insert(engine, "contacts", {"id": contact, "workspace_id": ws, "status": "subscribed"})
        _insert(
            engine,
            "sends",
            {
                "id": send,
                "workspace_id": ws,
                "kind": "campaign",
                "state": "active",
                "purpose": "marketing",
            },
        )
        _insert(
            engine,
            "deliveries",
            {
                "id": delivery,
                "workspace_id": ws,
                "send_id": send,
                "contact_id": contact,
                "status": "queued",
            },
        )
        _insert(
            engine,
            "analytics_firsts",
            {"send_id": send, "delivery_id": delivery, "kind": "open", "first_seq": 1},
        )
        for seq in (1, 2, 3):
            _insert(engine, "events", {"seq": seq, "id": uuid7().hex, "workspace_id": ws})
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM events WHERE seq = 3"))
    finally:
        engine.dispose()

    migrate.upgrade(url, "0012")
    engine = migrate.sync_engine(url)
    try:
        assert "AUTOINCREMENT" in _sql(engine, "events")
        assert "message_id IS NOT NULL" in _sql(engine, "ix_deliveries_message_id")
        assert "status IN" in _sql(engine, "ix_deliveries_claim")
        keys = {key["referred_table"] for key in inspect(engine).get_foreign_keys("deliveries")}
        assert keys == {"sends"}
        with engine.connect() as conn:
            count = "SELECT count(*) FROM {}"
            assert conn.execute(text(count.format("deliveries"))).scalar() == 1
            assert conn.execute(text(count.format("analytics_firsts"))).scalar() == 1
            assert conn.execute(text(count.format("events"))).scalar() == 2
        # The newest event deleted, the next insert still gets a higher seq.
        _insert(engine, "events", {"id": uuid7().hex, "workspace_id": ws})
        with engine.begin() as conn:
            newest = conn.execute(text("SELECT max(seq) FROM events")).scalar_one()
            conn.execute(text("DELETE FROM events WHERE seq = :s"), {"s": newest})
        _insert(engine, "events", {"id": uuid7().hex, "workspace_id": ws})
        with engine.connect() as conn:
            assert conn.execute(text("SELECT max(seq) FROM events")).scalar_one() > newest
    finally:
        engine.dispose()

    migrate.downgrade(url, "0011")
    engine = migrate.sync_engine(url)
    try:
        keys = {key["referred_table"] for key in inspect(engine).get_foreign_keys("deliveries")}
        assert keys == {"sends", "contacts", "workspaces"}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM analytics_firsts")).scalar() == 1
    finally:
        engine.dispose()
