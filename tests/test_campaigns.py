"""Campaigns through the API on both databases: editing rules, the transition table (every
row and every refused pair), test sends, audience size and locale coverage."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from postroom.context import AppContext
from postroom.models.delivery import PRIORITY_TEST, Delivery, Send
from postroom.models.platform import Event
from tests.conftest import WorkspaceHandle
from tests.support.campaigns import (
    SENDER,
    add_contacts,
    add_domain,
    campaign_row,
    create_campaign,
    force_status,
)

STATUSES = ("draft", "scheduled", "sending", "waiting", "paused", "sent", "cancelled", "failed")

# The table, written out independently of postroom.campaigns.states: for each
# manual action, the statuses it is allowed from and the status it leads to (None: the
# same status; "gone": deleted; "new draft": a copy).
TABLE: dict[str, tuple[set[str], str | None]] = {
    "edit": ({"draft", "scheduled"}, None),
    "delete": ({"draft", "cancelled", "sent", "failed"}, "gone"),
    "duplicate": (set(STATUSES), "new draft"),
    "retry-failed": ({"sending", "waiting", "paused", "sent"}, None),
    "schedule": ({"draft", "scheduled"}, "scheduled"),
    "unschedule": ({"scheduled"}, "draft"),
    "send": ({"draft", "scheduled"}, "sending"),
    "pause": ({"sending", "waiting"}, "paused"),
    "resume": ({"paused"}, "sending"),
    "cancel": ({"scheduled", "sending", "waiting", "paused"}, "cancelled"),
}


@pytest.fixture
async def ready(client: httpx.AsyncClient, workspace: WorkspaceHandle) -> WorkspaceHandle:
    await add_domain(client, workspace)
    return workspace


async def _act(
    client: httpx.AsyncClient, ws: WorkspaceHandle, campaign_id: str, action: str
) -> httpx.Response:
    url = f"/v1/campaigns/{campaign_id}"
    if action == "edit":
        return await client.patch(url, headers=ws.headers, json={"name": "edited"})
    if action == "delete":
        return await client.delete(url, headers=ws.headers)
    body: dict[str, Any] | None = None
    if action == "schedule":
        body = {"scheduled_at": "2030-01-01T09:00:00Z"}
    return await client.post(f"{url}/{action}", headers=ws.headers, json=body)


async def _campaign_in(
    client: httpx.AsyncClient, ctx: AppContext, ws: WorkspaceHandle, status: str
) -> str:
    """A campaign in ``status``; the ones past ``sending`` have a real send."""
    campaign = await create_campaign(client, ws)
    campaign_id = str(campaign["id"])
    if status in ("sending", "waiting", "paused", "sent", "cancelled", "failed"):
        response = await client.post(f"/v1/campaigns/{campaign_id}/send", headers=ws.headers)
        assert response.status_code == 202, response.text
    if status != "draft":
        scheduled_at = ctx.clock.now().replace(year=2031) if status == "scheduled" else None
        values: dict[str, Any] = {"scheduled_at": scheduled_at} if scheduled_at else {}
        await force_status(ctx, campaign_id, status, **values)
    return campaign_id


# --- editing ----------------------------------------------------------------------------------


async def test_create_get_list_edit_and_duplicate(
    client: httpx.AsyncClient, ready: WorkspaceHandle
) -> None:
    created = await create_campaign(
        client,
        ready,
        subject="Override",
        reply_to="Replies@Brand.example",
        tags=["spring"],
        track_clicks=False,
        timezone="Europe/Paris",
        send_calendar={"weekdays": [1, 2, 3], "start_hour": 9, "end_hour": 17},
    )
    assert created["status"] == "draft"
    assert created["from"] == SENDER
    assert created["reply_to"] == "Replies@brand.example"
    assert created["content"]["subject"].startswith("Hello")
    assert created["track_clicks"] is False and created["track_opens"] is True
    assert created["send_calendar"] == {"weekdays": [1, 2, 3], "start_hour": 9, "end_hour": 17}
    assert created["progress"] is None

    url = f"/v1/campaigns/{created['id']}"
    patched = await client.patch(
        url, headers=ready.headers, json={"name": "Renamed", "send_calendar": None}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Renamed" and patched.json()["send_calendar"] is None
    assert patched.json()["tags"] == ["spring"]

    copy = await client.post(f"{url}/duplicate", headers=ready.headers)
    assert copy.status_code == 201
    assert copy.json()["name"] == "Renamed (copy)" and copy.json()["status"] == "draft"
    assert copy.json()["id"] != created["id"] and copy.json()["subject"] == "Override"

    listed = await client.get("/v1/campaigns", headers=ready.headers, params={"limit": 1})
    assert listed.status_code == 200
    assert len(listed.json()["data"]) == 1 and listed.json()["next_cursor"]
    drafts = await client.get("/v1/campaigns", headers=ready.headers, params={"status": "draft"})
    assert {c["id"] for c in drafts.json()["data"]} == {created["id"], copy.json()["id"]}


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"from": {"email": "news@elsewhere.example"}}, "from.email", "unknown_sending_domain"),
        ({"from": {"email": "not an address"}}, "from.email", "invalid_email"),
        ({"content": {"subject": "Hi"}}, "content.html", "required"),
        ({"content": {"template_id": str(uuid.uuid4()), "subject": "x"}}, "content", None),
        ({"content": {"template_id": str(uuid.uuid4())}}, "content.template_id", "not_found"),
        ({"content": {"version_id": str(uuid.uuid4())}}, "content.version_id", "not_found"),
        ({"timezone": "Mars/Olympus"}, "timezone", "invalid_timezone"),
        ({"audience": {"lists": [str(uuid.uuid4())]}}, "audience.lists.0", "not_found"),
        ({"send_calendar": {"weekdays": [8]}}, None, None),
        ({"send_calendar": {"start_hour": 17, "end_hour": 9}}, None, None),
    ],
)
async def test_invalid_campaigns_are_422_naming_the_field(
    client: httpx.AsyncClient,
    ready: WorkspaceHandle,
    overrides: dict[str, Any],
    field: str | None,
    code: str | None,
) -> None:
    from tests.support.campaigns import campaign_body

    response = await client.post(
        "/v1/campaigns", headers=ready.headers, json=campaign_body(**overrides)
    )
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    if field is not None:
        assert any(e["field"] == field for e in errors), errors
    if code is not None:
        assert any(e["code"] == code for e in errors), errors


# --- the transition table ---------------------------------------------------------------------


async def test_every_row_of_the_transition_table_and_every_refusal(
    client: httpx.AsyncClient, ctx: AppContext, ready: WorkspaceHandle
) -> None:
    checked = 0
    for action, (allowed, to) in TABLE.items():
        for status in STATUSES:
            campaign_id = await _campaign_in(client, ctx, ready, status)
            response = await _act(client, ready, campaign_id, action)
            label = f"{action} from {status}"
            if status not in allowed:
                assert response.status_code == 409, f"{label}: {response.text}"
                problem = response.json()
                assert f"'{status}'" in problem["detail"], f"{label}: {problem}"
                assert (await campaign_row(ctx, campaign_id)).status == status
                checked += 1
                continue
            assert response.status_code in (200, 201, 202, 204), f"{label}: {response.text}"
            if to == "gone":
                gone = await client.get(f"/v1/campaigns/{campaign_id}", headers=ready.headers)
                assert gone.status_code == 404
            elif to == "new draft":
                assert response.json()["status"] == "draft"
                assert response.json()["id"] != campaign_id
                assert (await campaign_row(ctx, campaign_id)).status == status
            else:
                assert (await campaign_row(ctx, campaign_id)).status == (to or status), label
            checked += 1
    assert checked == len(TABLE) * len(STATUSES)


async def test_transitions_write_their_events_and_flip_the_send_state(
    client: httpx.AsyncClient, ctx: AppContext, ready: WorkspaceHandle
) -> None:
    campaign = await create_campaign(client, ready)
    url = f"/v1/campaigns/{campaign['id']}"
    for action in ("send", "pause", "resume", "cancel"):
        response = await client.post(f"{url}/{action}", headers=ready.headers)
        assert response.status_code in (200, 202), response.text
        send_id = response.json()["send_id"]
        async with ctx.db.transaction() as session:
            state = (await session.get(Send, uuid.UUID(send_id))).state  # type: ignore[union-attr]
        expected = {"send": "active", "pause": "paused", "resume": "active"}
        assert state == expected.get(action, "cancelled"), action
    async with ctx.db.transaction() as session:
        types = list(
            (
                await session.execute(
                    select(Event.type)
                    .where(Event.resource_id == uuid.UUID(campaign["id"]))
                    .order_by(Event.seq)
                )
            ).scalars()
        )
    assert types == [
        "campaign.sending",
        "campaign.paused",
        "campaign.resumed",
        "campaign.cancelled",
    ]


async def test_a_refused_transition_names_the_current_status(
    client: httpx.AsyncClient, ready: WorkspaceHandle
) -> None:
    campaign = await create_campaign(client, ready)
    response = await client.post(f"/v1/campaigns/{campaign['id']}/resume", headers=ready.headers)
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "'draft'" in response.json()["detail"]


async def test_send_needs_the_sending_domain_still_there(
    client: httpx.AsyncClient, ready: WorkspaceHandle
) -> None:
    campaign = await create_campaign(client, ready)
    domains = (await client.get("/v1/domains", headers=ready.headers)).json()["data"]
    await client.delete(f"/v1/domains/{domains[0]['id']}", headers=ready.headers)
    response = await client.post(f"/v1/campaigns/{campaign['id']}/send", headers=ready.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "unknown_sending_domain"


# --- test sends -------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 6])
async def test_test_send_needs_one_to_five_addresses(
    client: httpx.AsyncClient, ready: WorkspaceHandle, count: int
) -> None:
    campaign = await create_campaign(client, ready)
    emails = [f"t{i}@example.com" for i in range(count)]
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/test", headers=ready.headers, json={"emails": emails}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "emails"


async def test_test_send_makes_test_sends_outside_the_campaign(
    client: httpx.AsyncClient, ctx: AppContext, ready: WorkspaceHandle
) -> None:
    campaign = await create_campaign(client, ready)
    [contact_id] = await add_contacts(ctx, ready.id, ["ann@example.com"], first_name="Ann")
    url = f"/v1/campaigns/{campaign['id']}"
    response = await client.post(
        f"{url}/test",
        headers=ready.headers,
        json={"emails": ["qa@example.com", "boss@example.com"], "contact_id": str(contact_id)},
    )
    assert response.status_code == 202, response.text
    send_ids = [uuid.UUID(s) for s in response.json()["send_ids"]]
    assert len(send_ids) == 2
    async with ctx.db.transaction() as session:
        sends = list((await session.execute(select(Send).where(Send.id.in_(send_ids)))).scalars())
        rows = list(
            (
                await session.execute(select(Delivery).where(Delivery.send_id.in_(send_ids)))
            ).scalars()
        )
    assert {s.kind for s in sends} == {"test"} and {s.priority for s in sends} == {PRIORITY_TEST}
    assert {s.campaign_id for s in sends} == {None}  # never in the campaign's stats
    assert all(s.content["subject_prefix"] == "[Test] " for s in sends)
    assert {r.email for r in rows} == {"qa@example.com", "boss@example.com"}
    assert {r.contact_id for r in rows} == {contact_id}
    # The campaign itself did not move and has no send.
    fetched = (await client.get(url, headers=ready.headers)).json()
    assert fetched["status"] == "draft" and fetched["send_id"] is None

    unknown = await client.post(
        f"{url}/test",
        headers=ready.headers,
        json={"emails": ["qa@example.com"], "contact_id": str(uuid.uuid4())},
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "contact_id"


# --- audience ---------------------------------------------------------------------------------


async def _published_template(client: httpx.AsyncClient, ws: WorkspaceHandle) -> str:
    template = await client.post(
        "/v1/templates", headers=ws.headers, json={"name": "news", "default_locale": "en"}
    )
    assert template.status_code == 201, template.text
    template_id = template.json()["id"]
    for locale, subject in (("en", "Hello"), ("fr", "Bonjour")):
        version = await client.post(
            f"/v1/templates/{template_id}/versions",
            headers=ws.headers,
            json={"subject": subject, "html": f"<p>{subject}</p>", "locale": locale},
        )
        assert version.status_code == 201, version.text
        published = await client.post(
            f"/v1/templates/{template_id}/versions/{version.json()['id']}/publish",
            headers=ws.headers,
        )
        assert published.status_code == 200, published.text
    return str(template_id)


async def test_audience_size_and_locale_coverage(
    client: httpx.AsyncClient, ctx: AppContext, ready: WorkspaceHandle
) -> None:
    template_id = await _published_template(client, ready)
    listed = await client.post("/v1/lists", headers=ready.headers, json={"name": "News"})
    list_id = uuid.UUID(listed.json()["id"])
    await add_contacts(ctx, ready.id, ["a@x.example", "b@x.example"], list_id=list_id, locale="fr")
    await add_contacts(ctx, ready.id, ["c@x.example"], list_id=list_id, locale="de")
    await add_contacts(ctx, ready.id, ["d@x.example"], list_id=list_id)
    await add_contacts(ctx, ready.id, ["e@x.example"], list_id=list_id, status="unsubscribed")
    await add_contacts(ctx, ready.id, ["f@x.example"])  # not on the list
    campaign = await create_campaign(
        client,
        ready,
        content={"template_id": template_id},
        audience={"lists": [str(list_id)]},
    )
    response = await client.get(f"/v1/campaigns/{campaign['id']}/audience", headers=ready.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == 4
    assert body["locales"] == {"fr": 2, "de": 1, "unknown": 1}
    assert body["coverage"] == {"fr": "fr", "de": "en", "unknown": "en"}
    assert body["uncovered"] == 2
