"""Outbound webhooks end to end on both databases, against a real local HTTP receiver:
Standard Webhooks signatures (checked with the ``standardwebhooks`` library), the outbox
(nothing for a rolled-back change, late commits), retries through the clock, disabling on
410 and after five days, test/replay/rotate, the delivery log and GDPR erase."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook, WebhookVerificationError

from postroom.clock import FrozenClock
from postroom.config import Settings
from postroom.context import AppContext
from postroom.events.service import record
from postroom.models.platform import Event
from postroom.models.webhooks import WebhookDelivery, WebhookEndpoint, WebhookOutbox
from postroom.security.rotation import rotate_stored_secrets
from postroom.security.secret_box import SecretBox
from postroom.webhooks.deliveries import RETRY_GAPS
from postroom.webhooks.outbox import fan_out
from postroom.webhooks.sender import WebhookSender
from postroom.wiring import build_scheduler
from tests.conftest import WorkspaceHandle, make_settings
from tests.support.webhook_receiver import WebhookReceiver, running_receiver


@pytest.fixture
def clock() -> FrozenClock:
    # Near real time: standardwebhooks refuses timestamps more than 5 minutes off.
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path, webhooks_allow_private=True)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    yield from running_receiver()


async def pump(ctx: AppContext) -> int:
    """One scheduler turn of the webhook tasks: fan out, then send what is due."""
    async with ctx.db.transaction() as session:
        await fan_out(session, ctx)
    return await WebhookSender(ctx).run_due()


async def emit(
    ctx: AppContext,
    workspace: WorkspaceHandle,
    type: str = "signup",
    data: dict[str, Any] | None = None,
    contact_id: uuid.UUID | None = None,
) -> uuid.UUID:
    async with ctx.db.transaction() as session:
        return await record(
            session,
            workspace_id=workspace.id,  # type: ignore[arg-type]
            type=type,
            occurred_at=ctx.clock.now(),
            contact_id=contact_id,
            data=data or {},
        )


async def create_endpoint(
    client: httpx.AsyncClient,
    workspace: WorkspaceHandle,
    url: str,
    event_types: list[str] | None = None,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhooks",
        headers=workspace.headers,
        json={"url": url, "event_types": event_types or ["signup"], "description": "test"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def deliveries_of(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, endpoint_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=workspace.headers)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def verify(secret: str, request: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def test_signed_delivery_verified_with_standardwebhooks(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url())
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    event_id = await emit(ctx, workspace, data={"plan": "pro"})
    assert await pump(ctx) == 1

    [request] = receiver.requests
    assert request.path == "/hook"
    payload = verify(secret, request)
    assert payload["type"] == "signup"
    assert payload["data"]["plan"] == "pro"
    assert payload["data"]["event_id"] == str(event_id)
    assert datetime.fromisoformat(payload["timestamp"]) == ctx.clock.now()
    assert set(payload) == {"type", "timestamp", "data"}
    # A wrong secret or a changed body does not verify.
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body.replace(b"pro", b"max"), request.headers)

    [logged] = await deliveries_of(client, workspace, endpoint["id"])
    assert logged["id"] == request.headers["webhook-id"]
    assert logged["status"] == "succeeded"
    assert logged["response_status"] == 200
    assert logged["attempts"] == 1
    assert logged["latency_ms"] is not None and logged["latency_ms"] >= 0
    assert logged["event_id"] == str(event_id)
    # Nothing is sent twice.
    assert await pump(ctx) == 0
    assert len(receiver.requests) == 1


async def test_secret_is_shown_once_and_stored_encrypted(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url())
    fetched = (await client.get(f"/v1/webhooks/{endpoint['id']}", headers=workspace.headers)).json()
    assert "secret" not in fetched
    listed = (await client.get("/v1/webhooks", headers=workspace.headers)).json()["data"]
    assert [row["id"] for row in listed] == [endpoint["id"]]
    assert endpoint["secret"] not in json.dumps(listed)
    async with ctx.db.read_sessions() as session:
        stored = await session.scalar(select(WebhookEndpoint.secret))
    assert stored is not None and stored != endpoint["secret"]
    assert ctx.secret_box.decrypt(stored) == endpoint["secret"]
    # `postroom secrets rotate` re-encrypts it under a new key.
    new_box = SecretBox([b"a-new-secret-key-" + b"y" * 32, *ctx.settings.signing_keys])
    async with ctx.db.transaction() as session:
        assert await rotate_stored_secrets(session, new_box) >= 1
    async with ctx.db.read_sessions() as session:
        rotated = await session.scalar(select(WebhookEndpoint.secret))
    assert rotated is not None
    assert SecretBox([b"a-new-secret-key-" + b"y" * 32]).decrypt(rotated) == endpoint["secret"]


async def test_event_types_filter_what_an_endpoint_hears(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    make_workspace: Any,
    receiver: WebhookReceiver,
) -> None:
    await create_endpoint(client, workspace, receiver.url("/email"), ["email.*"])
    await create_endpoint(client, workspace, receiver.url("/exact"), ["email.opened", "signup"])
    await create_endpoint(client, workspace, receiver.url("/all"), ["*"])
    other = await make_workspace("other")
    await emit(ctx, workspace, "email.opened")
    await emit(ctx, workspace, "email.clicked")
    await emit(ctx, workspace, "signup")
    await emit(ctx, workspace, "signup.later")
    await emit(ctx, other, "email.opened")  # another workspace: nobody here hears it
    await pump(ctx)
    heard: dict[str, list[str]] = {}
    for request in receiver.requests:
        heard.setdefault(request.path, []).append(json.loads(request.body)["type"])
    assert sorted(heard["/email"]) == ["email.clicked", "email.opened"]
    assert sorted(heard["/exact"]) == ["email.opened", "signup"]
    assert sorted(heard["/all"]) == ["email.clicked", "email.opened", "signup", "signup.later"]


async def test_bad_event_types_are_422(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, receiver: WebhookReceiver
) -> None:
    response = await client.post(
        "/v1/webhooks",
        headers=workspace.headers,
        json={"url": receiver.url(), "event_types": ["email.opened", "email.nope", "a*b"]},
    )
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"event_types.1", "event_types.2"}


async def test_no_webhook_for_a_rolled_back_change(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    await create_endpoint(client, workspace, receiver.url())
    async with ctx.db.sessions() as session:
        await record(
            session,
            workspace_id=workspace.id,  # type: ignore[arg-type]
            type="signup",
            occurred_at=ctx.clock.now(),
            data={"n": "rolled back"},
        )
        await session.flush()
        await session.rollback()
    await emit(ctx, workspace, data={"n": "kept"})
    await pump(ctx)
    assert [json.loads(r.body)["data"]["n"] for r in receiver.requests] == ["kept"]
    # The burnt number (PostgreSQL) is waited for, then forgotten.
    ctx.clock.advance(ctx.settings.webhooks_outbox_hole_seconds + 1)  # type: ignore[attr-defined]
    await pump(ctx)
    async with ctx.db.read_sessions() as session:
        holes = await session.scalar(select(WebhookOutbox.holes))
    assert holes == []
    assert len(receiver.requests) == 1


async def test_an_event_committed_late_is_still_delivered(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    await create_endpoint(client, workspace, receiver.url())
    if ctx.db.dialect == "postgresql":
        # A transaction takes seq n, a later one commits n+1 first: the outbox moves past
        # n+1 but remembers n, and delivers it once it commits.
        async with ctx.db.sessions() as slow:
            await record(
                slow,
                workspace_id=workspace.id,  # type: ignore[arg-type]
                type="signup",
                occurred_at=ctx.clock.now(),
                data={"n": "slow"},
            )
            await slow.flush()
            await emit(ctx, workspace, data={"n": "fast"})
            await pump(ctx)
            assert [json.loads(r.body)["data"]["n"] for r in receiver.requests] == ["fast"]
            await slow.commit()
    else:
        # SQLite serialises writers: commits come in seq order.
        await emit(ctx, workspace, data={"n": "slow"})
        await emit(ctx, workspace, data={"n": "fast"})
    await pump(ctx)
    assert sorted(json.loads(r.body)["data"]["n"] for r in receiver.requests) == ["fast", "slow"]


async def test_retries_follow_the_schedule_then_fail(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url())
    receiver.respond(500)
    await emit(ctx, workspace)
    await pump(ctx)
    assert len(receiver.requests) == 1
    [row] = await deliveries_of(client, workspace, endpoint["id"])
    assert row["status"] == "retrying"
    assert row["response_status"] == 500
    assert row["error"] == "HTTP 500"
    assert datetime.fromisoformat(row["next_attempt_at"]) == clock.now() + timedelta(seconds=5)
    ids = {receiver.requests[0].headers["webhook-id"]}
    for number, gap in enumerate(RETRY_GAPS, start=2):
        clock.advance(gap - timedelta(seconds=1))
        await pump(ctx)
        assert len(receiver.requests) == number - 1, "sent before its time"
        clock.advance(timedelta(seconds=1))
        await pump(ctx)
        assert len(receiver.requests) == number
        ids.add(receiver.requests[-1].headers["webhook-id"])
    assert len(ids) == 1, "webhook-id must stay the same across retries"
    [row] = await deliveries_of(client, workspace, endpoint["id"])
    assert row["status"] == "failed"
    assert row["attempts"] == 8
    assert row["next_attempt_at"] is None
    clock.advance(timedelta(days=1))
    await pump(ctx)
    assert len(receiver.requests) == 8
    fetched = (await client.get(f"/v1/webhooks/{endpoint['id']}", headers=workspace.headers)).json()
    assert fetched["enabled"] is True  # about 28 hours of failures: not yet 5 days
    assert fetched["failing_since"] is not None


async def test_a_success_after_failures_stops_retrying(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url())
    receiver.respond(503)
    await emit(ctx, workspace)
    await pump(ctx)
    receiver.respond(204)
    clock.advance(5)
    await pump(ctx)
    [row] = await deliveries_of(client, workspace, endpoint["id"])
    assert (row["status"], row["attempts"], row["response_status"]) == ("succeeded", 2, 204)
    fetched = (await client.get(f"/v1/webhooks/{endpoint['id']}", headers=workspace.headers)).json()
    assert fetched["failing_since"] is None


async def _disabled_notices(ctx: AppContext) -> list[dict[str, Any]]:
    async with ctx.db.read_sessions() as session:
        rows = await session.execute(
            select(Event.data).where(Event.type == "webhook.endpoint_disabled")
        )
        return [dict(row[0]) for row in rows]


async def test_410_disables_the_endpoint_with_a_notice(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url())
    watcher = await create_endpoint(
        client, workspace, receiver.url("/watcher"), ["webhook.endpoint_disabled"]
    )
    receiver.respond(500, path="/hook")
    await emit(ctx, workspace, data={"n": 1})
    await pump(ctx)
    receiver.respond(410, path="/hook")
    await emit(ctx, workspace, data={"n": 2})
    await pump(ctx)  # the new one answers 410; the first is not due yet
    fetched = (await client.get(f"/v1/webhooks/{endpoint['id']}", headers=workspace.headers)).json()
    assert fetched["enabled"] is False
    assert "410" in fetched["disabled_reason"]
    assert fetched["disabled_at"] is not None
    statuses = sorted(r["status"] for r in await deliveries_of(client, workspace, endpoint["id"]))
    assert statuses == ["failed", "failed"], "queued deliveries fail with the endpoint"
    [notice] = await _disabled_notices(ctx)
    assert notice["webhook_id"] == endpoint["id"]
    # Other endpoints hear of it; the disabled one hears nothing more.
    receiver.respond(200, path="/hook")
    await emit(ctx, workspace, data={"n": 3})
    clock.advance(timedelta(seconds=5))  # the first delivery would be due again now
    before = len([r for r in receiver.requests if r.path == "/hook"])
    await pump(ctx)
    assert len([r for r in receiver.requests if r.path == "/hook"]) == before
    [heard] = [r for r in receiver.requests if r.path == "/watcher"]
    assert verify(watcher["secret"], heard)["type"] == "webhook.endpoint_disabled"
    # Re-enabling clears the notice.
    response = await client.patch(
        f"/v1/webhooks/{endpoint['id']}", headers=workspace.headers, json={"enabled": True}
    )
    assert response.status_code == 200
    assert response.json()["disabled_reason"] is None


async def test_failing_for_five_days_disables_the_endpoint(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url())
    receiver.respond(500)
    for day in range(6):
        await emit(ctx, workspace, data={"day": day})
        await pump(ctx)
        fetched = (
            await client.get(f"/v1/webhooks/{endpoint['id']}", headers=workspace.headers)
        ).json()
        if day < 5:
            assert fetched["enabled"] is True, f"disabled on day {day}"
            clock.advance(timedelta(days=1))
    assert fetched["enabled"] is False
    assert fetched["disabled_reason"] == "failing for 5 days"
    assert len(await _disabled_notices(ctx)) == 1


async def test_test_send_replay_and_rotation(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url())
    base = f"/v1/webhooks/{endpoint['id']}"
    response = await client.post(base + "/test", headers=workspace.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["kind"] == "test"
    assert verify(endpoint["secret"], receiver.requests[-1])["type"] == "webhook.test"

    receiver.respond(500)
    response = await client.post(base + "/test", headers=workspace.headers)
    assert (response.json()["status"], response.json()["response_status"]) == ("failed", 500)

    receiver.respond(200)
    await emit(ctx, workspace, data={"n": "original"})
    await pump(ctx)
    original = receiver.requests[-1]
    delivery_id = original.headers["webhook-id"]
    response = await client.post(
        f"{base}/deliveries/{delivery_id}/replay", headers=workspace.headers
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    assert response.json()["kind"] == "replay"
    await pump(ctx)
    replayed = receiver.requests[-1]
    assert replayed.body == original.body
    assert replayed.headers["webhook-id"] == response.json()["id"] != delivery_id

    response = await client.post(base + "/rotate-secret", headers=workspace.headers)
    assert response.status_code == 200
    new_secret = response.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != endpoint["secret"]
    await emit(ctx, workspace, data={"n": "after rotation"})
    await pump(ctx)
    rotated = receiver.requests[-1]
    assert len(rotated.headers["webhook-signature"].split(" ")) == 2
    assert verify(new_secret, rotated)["data"]["n"] == "after rotation"
    assert verify(endpoint["secret"], rotated)["data"]["n"] == "after rotation"

    kinds = {row["kind"] for row in await deliveries_of(client, workspace, endpoint["id"])}
    assert kinds == {"event", "test", "replay"}
    failed = await client.get(
        base + "/deliveries", headers=workspace.headers, params={"status": "failed"}
    )
    assert [row["kind"] for row in failed.json()["data"]] == ["test"]
    one = await client.get(f"{base}/deliveries/{delivery_id}", headers=workspace.headers)
    assert one.status_code == 200 and one.json()["id"] == delivery_id


async def test_delivery_log_pages_newest_first(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url())
    for n in range(5):
        await emit(ctx, workspace, data={"n": n})
        ctx.clock.advance(0.01)  # type: ignore[attr-defined]
    await pump(ctx)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await client.get(
            f"/v1/webhooks/{endpoint['id']}/deliveries", headers=workspace.headers, params=params
        )
        seen += [row["id"] for row in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5
    assert seen == sorted(seen, reverse=True)


async def test_scheduler_runs_the_webhook_tasks(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    await create_endpoint(client, workspace, receiver.url())
    await emit(ctx, workspace)
    counts = await build_scheduler(ctx).tick()
    assert counts["webhook_outbox"] == 1  # deliveries made
    assert counts["webhook_send"] == 1
    assert len(receiver.requests) == 1


async def test_custom_events_reach_webhooks(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    make_key: Any,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url(), ["signup", "contact.*"])
    public = await make_key(workspace, kind="public")
    response = await client.post(
        "/v1/events",
        headers={"Authorization": f"Bearer {public}"},
        json={"email": "Ada@Example.com", "event": "signup", "data": {"plan": "pro"}},
    )
    assert response.status_code == 201, response.text
    await pump(ctx)
    payloads = [verify(endpoint["secret"], r) for r in receiver.requests]
    by_type = {p["type"]: p["data"] for p in payloads}
    assert set(by_type) == {"contact.created", "signup"}
    assert by_type["signup"]["plan"] == "pro"
    assert by_type["signup"]["email"] == "Ada@example.com"  # domain lower-cased
    assert by_type["signup"]["contact_id"] == response.json()["contact"]["id"]


async def test_erase_removes_webhook_deliveries_about_the_contact(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    await create_endpoint(client, workspace, receiver.url(), ["contact.*", "signup"])
    created = await client.post(
        "/v1/contacts", headers=workspace.headers, json={"email": "gone@example.com"}
    )
    contact_id = uuid.UUID(created.json()["id"])
    await emit(ctx, workspace, contact_id=contact_id)
    receiver.respond(500)  # one delivered, one still retrying: both must go
    await pump(ctx)
    async with ctx.db.read_sessions() as session:
        about = await session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.contact_id == contact_id)
        )
    assert about == 2
    response = await client.post(f"/v1/contacts/{contact_id}/erase", headers=workspace.headers)
    assert response.status_code in (200, 202, 204), response.text
    async with ctx.db.read_sessions() as session:
        left = await session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.contact_id == contact_id)
        )
        emails = await session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.contact_email == "gone@example.com")
        )
        events = await session.scalar(
            select(func.count()).select_from(Event).where(Event.contact_id == contact_id)
        )
    assert (left, emails, events) == (0, 0, 0)


async def test_deleting_an_endpoint_removes_its_log(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    endpoint = await create_endpoint(client, workspace, receiver.url())
    await emit(ctx, workspace)
    await pump(ctx)
    response = await client.delete(f"/v1/webhooks/{endpoint['id']}", headers=workspace.headers)
    assert response.status_code == 204
    assert (
        await client.get(f"/v1/webhooks/{endpoint['id']}", headers=workspace.headers)
    ).status_code == 404
    async with ctx.db.read_sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


def test_outbox_holes_split_fill_and_expire() -> None:
    from postroom.webhooks.outbox import _new_holes, _remaining_holes

    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert _new_holes(10, [11, 12, 15, 16, 20], t0) == [(13, 14, t0), (17, 19, t0)]
    assert _new_holes(10, [], t0) == []
    grace = timedelta(seconds=300)
    holes = [(13, 14, t0), (17, 19, t0)]
    # 18 committed late: the range splits around it.
    assert _remaining_holes(holes, [18], t0 + timedelta(seconds=1), grace) == [
        (13, 14, t0),
        (17, 17, t0),
        (19, 19, t0),
    ]
    assert _remaining_holes(holes, [13, 14, 17, 18, 19], t0, grace) == []
    assert _remaining_holes(holes, [], t0 + grace + timedelta(seconds=1), grace) == []


async def test_a_receiver_that_does_not_answer_times_out(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    ctx.settings.webhooks_timeout_seconds = 0.5  # a real network timeout, kept short
    endpoint = await create_endpoint(client, workspace, receiver.url("/slow"))
    release = receiver.hold("/slow")
    try:
        await emit(ctx, workspace)
        await pump(ctx)
    finally:
        release.set()
    [row] = await deliveries_of(client, workspace, endpoint["id"])
    assert row["status"] == "retrying"
    assert row["response_status"] is None
    assert "timeout" in row["error"].lower() or "no complete answer" in row["error"]
    assert row["latency_ms"] >= 400
