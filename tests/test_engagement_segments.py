"""Engagement and event segment conditions over HTTP on both databases: ``triggered``,
``triggeredWithin``, ``triggeredOlderThan``, ``notTriggered``, ``notTriggeredWithin`` over
``email.*`` events (optionally of one campaign) and custom events. (The compiler is also
held to the Python oracle, events included, in tests/db/test_segment_compiler.py.)"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, inspect

from postroom.context import AppContext
from postroom.models.delivery import Delivery, Send
from postroom.models.platform import Event
from tests.conftest import WorkspaceHandle

CAMPAIGN_X = uuid.UUID("00000000-0000-7000-8000-00000000000a")
CAMPAIGN_Y = uuid.UUID("00000000-0000-7000-8000-00000000000b")


async def _contacts(client: httpx.AsyncClient, ws: WorkspaceHandle) -> dict[str, uuid.UUID]:
    ids = {}
    for name in "abcd":
        response = await client.post(
            "/v1/contacts", headers=ws.headers, json={"email": f"{name}@example.com"}
        )
        assert response.status_code == 201, response.text
        ids[name] = uuid.UUID(response.json()["id"])
    return ids


async def _engagement(ctx: AppContext, ws: WorkspaceHandle, contacts: dict[str, uuid.UUID]) -> None:
    """a: sent X 3 days ago, opened X 2 days ago. b: sent X and Y, opened Y an hour ago.
    c: clicked Y 10 days ago (and tracks a custom event in the test). d: nothing."""
    now = ctx.clock.now()
    sends = {CAMPAIGN_X: uuid.uuid4(), CAMPAIGN_Y: uuid.uuid4()}
    plan: list[tuple[str, uuid.UUID, str, timedelta]] = [
        ("a", CAMPAIGN_X, "email.sent", timedelta(days=3)),
        ("a", CAMPAIGN_X, "email.opened", timedelta(days=2)),
        ("b", CAMPAIGN_X, "email.sent", timedelta(days=3)),
        ("b", CAMPAIGN_Y, "email.sent", timedelta(hours=2)),
        ("b", CAMPAIGN_Y, "email.opened", timedelta(hours=1)),
        ("c", CAMPAIGN_Y, "email.sent", timedelta(days=11)),
        ("c", CAMPAIGN_Y, "email.clicked", timedelta(days=10)),
    ]
    deliveries: dict[tuple[str, uuid.UUID], uuid.UUID] = {}
    for name, campaign, _type, _ago in plan:
        deliveries.setdefault((name, campaign), uuid.uuid4())
    async with ctx.db.transaction() as session:
        await session.execute(
            insert(Send),
            [
                {
                    "id": send_id,
                    "workspace_id": ws.id,
                    "kind": "campaign",
                    "content": {"inline": {"subject": "s", "html": "<p>x</p>"}},
                    "from_email": "news@example.com",
                    "list_ids": [],
                    "campaign_id": campaign,
                    "tags": [],
                    "metadata_": {},
                    "created_at": now,
                }
                for campaign, send_id in sends.items()
            ],
        )
        await session.execute(
            insert(Delivery),
            [
                {
                    "id": delivery_id,
                    "workspace_id": ws.id,
                    "send_id": sends[campaign],
                    "contact_id": contacts[name],
                    "email": f"{name}@example.com",
                    "status": "sent",
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for (name, campaign), delivery_id in deliveries.items()
            ],
        )
        await session.execute(
            insert(Event),
            [
                {
                    "id": uuid.uuid4(),
                    "workspace_id": ws.id,
                    "type": type_,
                    "contact_id": contacts[name],
                    "resource_type": "delivery",
                    "resource_id": deliveries[(name, campaign)],
                    "data": {},
                    "occurred_at": now - ago,
                }
                for name, campaign, type_, ago in plan
            ],
        )


def _rule(field: str, operator: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"field": field, "operator": operator, **extra}
    if value is not None:
        rule["value"] = value
    return rule


async def _members(
    client: httpx.AsyncClient, ws: WorkspaceHandle, *rules: dict[str, Any]
) -> set[str]:
    body = {"audience": {"filter": {"groups": [{"filters": list(rules)}]}}}
    response = await client.post("/v1/audiences/preview", headers=ws.headers, json=body)
    assert response.status_code == 200, response.text
    preview = response.json()
    emails = {contact["email"].split("@")[0] for contact in preview["sample"]}
    assert preview["count"] == len(emails)
    return emails


@pytest.fixture
async def engaged(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> WorkspaceHandle:
    contacts = await _contacts(client, workspace)
    await _engagement(ctx, workspace, contacts)
    return workspace


DAY = {"value": 1, "unit": "days"}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([_rule("email.opened", "triggered")], {"a", "b"}),
        ([_rule("event.email.opened", "triggered")], {"a", "b"}),
        ([_rule("email.opened", "notTriggered")], {"c", "d"}),
        ([_rule("email.opened", "triggeredWithin", **DAY)], {"b"}),
        ([_rule("email.opened", "notTriggeredWithin", **DAY)], {"a", "c", "d"}),
        ([_rule("email.opened", "triggeredOlderThan", **DAY)], {"a"}),
        ([_rule("email.opened", "triggeredWithin", 49, unit="hours")], {"a", "b"}),
        ([_rule("email.clicked", "triggeredWithin", 7, unit="days")], set()),
        ([_rule("email.clicked", "triggeredOlderThan", 7, unit="days")], {"c"}),
        ([_rule("email.sent", "triggered", campaign=str(CAMPAIGN_X))], {"a", "b"}),
        ([_rule("email.sent", "triggered", campaign=str(CAMPAIGN_Y))], {"b", "c"}),
        ([_rule("email.opened", "triggered", campaign=str(CAMPAIGN_X))], {"a"}),
        ([_rule("email.opened", "notTriggered", campaign=str(CAMPAIGN_Y))], {"a", "c", "d"}),
        (
            [  # sent campaign X but never opened it: the re-engagement audience
                _rule("email.sent", "triggered", campaign=str(CAMPAIGN_X)),
                _rule("email.opened", "notTriggered", campaign=str(CAMPAIGN_X)),
            ],
            {"b"},
        ),
        ([_rule("event.signed_up", "triggered")], set()),
    ],
)
async def test_engagement_conditions(
    client: httpx.AsyncClient,
    engaged: WorkspaceHandle,
    rules: list[dict[str, Any]],
    expected: set[str],
) -> None:
    assert await _members(client, engaged, *rules) == expected


async def test_custom_events_and_saved_segments(
    client: httpx.AsyncClient,
    ctx: AppContext,
    engaged: WorkspaceHandle,
    make_key: Any,
    make_workspace: Any,
) -> None:
    public = await make_key(engaged, kind="public")
    response = await client.post(
        "/v1/events",
        headers={"Authorization": f"Bearer {public}"},
        json={"email": "c@example.com", "event": "signed_up"},
    )
    assert response.status_code == 201, response.text
    assert await _members(client, engaged, _rule("event.signed_up", "triggered")) == {"c"}
    assert await _members(client, engaged, _rule("event.signed_up", "notTriggered")) == {
        "a",
        "b",
        "d",
    }
    # The same event in another workspace counts there only.
    other = await make_workspace("other")
    other_key = await make_key(other, kind="public")
    await client.post(
        "/v1/events",
        headers={"Authorization": f"Bearer {other_key}"},
        json={"email": "a@example.com", "event": "signed_up"},
    )
    assert await _members(client, engaged, _rule("event.signed_up", "triggered")) == {"c"}
    # A saved segment is evaluated at preview time: the window moves with the clock.
    created = await client.post(
        "/v1/segments",
        headers=engaged.headers,
        json={
            "name": "recent openers",
            "filter": {"groups": [{"filters": [_rule("email.opened", "triggeredWithin", **DAY)]}]},
        },
    )
    assert created.status_code == 201, created.text
    url = f"/v1/segments/{created.json()['id']}/preview"
    assert (await client.get(url, headers=engaged.headers)).json()["count"] == 1
    ctx.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
    assert (await client.get(url, headers=engaged.headers)).json()["count"] == 0


@pytest.mark.parametrize(
    ("rule", "field", "code"),
    [
        (_rule("event.signed_up", "triggered", campaign=str(CAMPAIGN_X)), "campaign", None),
        (_rule("email.sent", "triggered", campaign="x"), "campaign", "invalid_campaign"),
        (_rule("email.opened", "triggeredWithin", 3), "unit", "invalid_unit"),
        (_rule("email.opened", "triggeredWithin", -3, unit="days"), "value", "invalid_value"),
        (_rule("email.opened", "equals", 1), "operator", "operator_not_allowed"),
        (_rule("data.plan", "triggered"), "operator", "operator_not_allowed"),
        (_rule("event.", "triggered"), "field", "invalid_event_name"),
    ],
)
async def test_invalid_event_conditions_point_at_the_node(
    client: httpx.AsyncClient,
    workspace: WorkspaceHandle,
    rule: dict[str, Any],
    field: str,
    code: str | None,
) -> None:
    body = {
        "name": "bad",
        "filter": {"groups": [{"filters": [_rule("email", "contains", "@"), rule]}]},
    }
    response = await client.post("/v1/segments", headers=workspace.headers, json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == f"filter.groups.0.filters.1.{field}"
    if code is not None:
        assert error["code"] == code


async def test_events_index_exists(ctx: AppContext) -> None:
    async with ctx.db.engine.connect() as conn:
        indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("events"))
    columns = {tuple(index["column_names"]) for index in indexes}
    assert ("workspace_id", "contact_id", "type", "occurred_at") in columns
