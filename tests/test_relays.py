"""Workspace SMTP relays: the /v1/relays resource, the CLI, and how the engine chooses a
relay (own relays over the instance default, weights, pauses), on both databases."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from postroom.clock import FrozenClock
from postroom.context import AppContext
from postroom.delivery.engine import DeliveryEngine
from postroom.delivery.maildir import MaildirTransport, list_messages
from postroom.delivery.sends import Recipient
from postroom.delivery.transports import WorkspaceRelays, relay_config
from postroom.models.contacts import Suppression
from postroom.models.delivery import Delivery
from postroom.models.relays import Relay
from postroom.relays.service import split_url
from postroom.security.rotation import ENCRYPTED_COLUMNS, rotate_stored_secrets
from postroom.security.secret_box import SecretBox
from tests.conftest import TEST_SECRET, MakeWorkspace, WorkspaceHandle
from tests.support.smtp_server import TestSmtpServer, free_port
from tests.test_engine import addresses, deliveries, event_counts, queue_send

PASSWORD = "Pa55-w0rd-that-must-not-leak"
MakeRelayEngine = Callable[..., DeliveryEngine]


def problem_fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    return [error["field"] for error in response.json().get("errors", [])]


async def add_relay(
    client: httpx.AsyncClient, ws: WorkspaceHandle, url: str, **extra: Any
) -> dict[str, Any]:
    response = await client.post("/v1/relays", headers=ws.headers, json={"url": url, **extra})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
async def make_relay_engine(ctx: AppContext, tmp_path: Path) -> AsyncIterator[MakeRelayEngine]:
    """An engine whose ``transport_for`` is the production one (workspace relays, re-read
    on every batch), with a Maildir under tmp_path as the instance default."""
    engines: list[DeliveryEngine] = []

    def factory(*, batch: int = 50, seed: int | None = 7) -> DeliveryEngine:
        relays = WorkspaceRelays(
            ctx,
            default=MaildirTransport(tmp_path / "default-mail"),
            rng=random.Random(seed),
            refresh_seconds=0,
        )
        engine = DeliveryEngine(ctx, relays, owner=f"relay-test-{len(engines)}", batch_size=batch)
        relays.pauses = engine.pauses
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.close()


# --- the resource --------------------------------------------------------------------------


async def test_relay_crud_with_the_password_masked(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle, clock: FrozenClock
) -> None:
    created = await add_relay(
        client,
        workspace,
        f"smtp+starttls://mailer%40acme:{PASSWORD}@smtp.example.com?timeout=10",
        per_second=20,
        weight=3,
    )
    assert created["url"] == "smtp+starttls://mailer%40acme:***@smtp.example.com?timeout=10"
    assert created["name"] == "smtp.example.com:587"
    assert (created["host"], created["port"], created["tls"]) == (
        "smtp.example.com",
        587,
        "starttls",
    )
    assert created["username"] == "mailer@acme" and created["has_password"] is True
    assert (created["weight"], created["per_second"], created["per_hour"]) == (3, 20, None)
    assert created["max_connections"] == ctx.settings.smtp_max_connections
    assert created["enabled"] is True
    relay_id = created["id"]
    async with ctx.db.transaction() as session:
        stored = (await session.execute(select(Relay))).scalar_one()
    assert stored.password and PASSWORD not in stored.password
    assert ctx.secret_box.decrypt(stored.password) == PASSWORD

    fetched = await client.get(f"/v1/relays/{relay_id}", headers=workspace.headers)
    assert fetched.status_code == 200 and fetched.json() == created
    listing = (await client.get("/v1/relays", headers=workspace.headers)).json()
    assert [row["id"] for row in listing["data"]] == [relay_id]
    assert listing["next_cursor"] is None

    clock.advance(5)
    # Sending the URL back as read keeps the stored password; null clears a limit.
    patched = await client.patch(
        f"/v1/relays/{relay_id}",
        headers=workspace.headers,
        json={"url": created["url"], "per_second": None, "per_day": 1000, "name": "primary"},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["per_second"], body["per_day"], body["name"]) == (None, 1000, "primary")
    assert body["updated_at"] != created["updated_at"]
    async with ctx.db.transaction() as session:
        kept = (await session.execute(select(Relay.password))).scalar_one()
    assert kept is not None and ctx.secret_box.decrypt(kept) == PASSWORD

    replaced = await client.patch(
        f"/v1/relays/{relay_id}",
        headers=workspace.headers,
        json={"url": "smtps://other:n3w@smtp2.example.com", "enabled": False},
    )
    assert replaced.json()["url"] == "smtps://other:***@smtp2.example.com"
    assert replaced.json()["enabled"] is False
    async with ctx.db.transaction() as session:
        new_secret = (await session.execute(select(Relay.password))).scalar_one()
    assert new_secret is not None and ctx.secret_box.decrypt(new_secret) == "n3w"

    without = await client.patch(
        f"/v1/relays/{relay_id}", headers=workspace.headers, json={"url": "smtp://127.0.0.1:2525"}
    )
    assert without.json()["has_password"] is False and without.json()["username"] is None

    deleted = await client.delete(f"/v1/relays/{relay_id}", headers=workspace.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/v1/relays/{relay_id}", headers=workspace.headers)
    assert gone.status_code == 404


async def test_bad_input_is_422_naming_the_field_and_foreign_ids_are_404(
    client: httpx.AsyncClient,
    workspace: WorkspaceHandle,
    make_workspace: MakeWorkspace,
    make_key: Callable[..., Any],
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": "http://smtp.example.com"}, "url"),
        ({"url": "smtp://user@smtp.example.com"}, "url"),  # a user without a password
        ({"url": "smtp://smtp.example.com?tls=yes"}, "url"),
        ({"url": "smtp://smtp.example.com:99999"}, "url"),
        ({"url": "smtp://smtp.example.com", "weight": 0}, "weight"),
        ({"url": "smtp://smtp.example.com", "weight": 1001}, "weight"),
        ({"url": "smtp://smtp.example.com", "per_second": 0}, "per_second"),
        ({"url": "smtp://smtp.example.com", "max_connections": 0}, "max_connections"),
        ({"url": "smtp://smtp.example.com", "colour": "red"}, "colour"),
        ({}, "url"),
    ]
    for body, field in cases:
        response = await client.post("/v1/relays", headers=workspace.headers, json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in problem_fields(response), (body, response.json())

    relay = await add_relay(client, workspace, "smtp://smtp.example.com", name="main")
    duplicate = await client.post(
        "/v1/relays",
        headers=workspace.headers,
        json={"url": "smtp://b.example.com", "name": "main"},
    )
    assert duplicate.status_code == 409
    for patch, field in [({"weight": None}, "weight"), ({"url": "ftp://x"}, "url")]:
        response = await client.patch(
            f"/v1/relays/{relay['id']}", headers=workspace.headers, json=patch
        )
        assert response.status_code == 422 and field in problem_fields(response), patch

    other = await make_workspace("other")
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(
            method, f"/v1/relays/{relay['id']}", headers=other.headers, json={"weight": "bad"}
        )
        assert response.status_code == 404, (method, response.text)
    assert (await client.get("/v1/relays", headers=other.headers)).json()["data"] == []
    unknown = await client.get(f"/v1/relays/{uuid.uuid4()}", headers=workspace.headers)
    assert unknown.status_code == 404

    reader = {"Authorization": f"Bearer {await make_key(workspace, ['relays:read'])}"}
    assert (await client.get("/v1/relays", headers=reader)).status_code == 200
    refused = await client.post("/v1/relays", headers=reader, json={"url": "smtp://x.example.com"})
    assert refused.status_code == 403


async def test_secrets_rotate_re_encrypts_relay_passwords(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    assert (Relay, "id", "password") in ENCRYPTED_COLUMNS
    await add_relay(client, workspace, f"smtp://u:{PASSWORD}@smtp.example.com")
    await add_relay(client, workspace, "smtp://no-auth.example.com")
    new_key = b"a-brand-new-secret-key-" + b"z" * 32
    async with ctx.db.transaction() as session:
        count = await rotate_stored_secrets(
            session, SecretBox([new_key, TEST_SECRET.encode()]), [(Relay, "id", "password")]
        )
    assert count == 1  # the relay without a password has nothing to rotate
    async with ctx.db.transaction() as session:
        secrets = [s for s in (await session.execute(select(Relay.password))).scalars() if s]
    assert [SecretBox([new_key]).decrypt(secret) for secret in secrets] == [PASSWORD]


# --- which relay carries the mail ---------------------------------------------------------


async def test_a_workspaces_relays_carry_its_mail_and_others_use_the_default(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    make_workspace: MakeWorkspace,
    smtp_server: TestSmtpServer,
    make_relay_engine: MakeRelayEngine,
    tmp_path: Path,
) -> None:
    relay = await add_relay(client, workspace, smtp_server.url + "?timeout=5")
    other = await make_workspace("no-relays")
    own, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(5, "own")])
    plain, _ = await queue_send(ctx, other.id, [Recipient(e) for e in addresses(4, "def")])
    engine = make_relay_engine()

    assert await engine.run_until_idle() == Counter(sent=9)
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == addresses(5, "own")
    captured = list_messages(tmp_path / "default-mail", limit=100)
    assert sorted(m.to for m in captured) == addresses(4, "def")
    assert {row.relay for row in (await deliveries(ctx, own.id)).values()} == {
        f"relay:{relay['id']}"
    }
    assert {row.relay for row in (await deliveries(ctx, plain.id)).values()} == {"maildir"}

    # A disabled relay is not used: the workspace falls back to the instance default.
    await client.patch(
        f"/v1/relays/{relay['id']}", headers=workspace.headers, json={"enabled": False}
    )
    later, _ = await queue_send(ctx, workspace.id, [Recipient("later@example.com")])
    assert await engine.run_until_idle() == Counter(sent=1)
    assert (await deliveries(ctx, later.id))["later@example.com"].relay == "maildir"
    assert smtp_server.count() == 5


async def test_weighted_choice_sends_about_three_to_one(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_relay_engine: MakeRelayEngine,
) -> None:
    heavy = await add_relay(client, workspace, f"smtp://127.0.0.1:{smtp_server.port}", weight=3)
    light = await add_relay(client, workspace, f"smtp://localhost:{smtp_server.port}", weight=1)
    await add_relay(  # disabled: never chosen, whatever its weight
        client,
        workspace,
        f"smtp://127.0.0.1:{smtp_server.port}?helo=x.test",
        weight=1000,
        enabled=False,
        name="disabled",
    )
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(400)])
    # The relay is chosen per batch and workspace: 100 choices of 4 rows each.
    assert await make_relay_engine(batch=4, seed=11).run_until_idle() == Counter(sent=400)

    used = Counter(row.relay for row in (await deliveries(ctx, send.id)).values())
    assert set(used) == {f"relay:{heavy['id']}", f"relay:{light['id']}"}
    share = used[f"relay:{heavy['id']}"] / 400
    # Seeded, so the figure is fixed; the range is what any seed gives with overwhelming
    # probability (3 standard deviations around 75 % for 100 choices).
    assert 0.60 <= share <= 0.90, used
    assert smtp_server.count() == 400


async def test_a_relay_failing_auth_rests_and_the_other_takes_over(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_relay_engine: MakeRelayEngine,
) -> None:
    """535 from a relay pauses that relay and defers its rows without counting an
    attempt; no recipient fails or is suppressed; meanwhile the healthy relay sends."""
    smtp_server.behaviour.auth_fail = True
    broken = await add_relay(
        client, workspace, f"smtp://user:{PASSWORD}@127.0.0.1:{smtp_server.port}", weight=1000
    )
    healthy = await add_relay(client, workspace, f"smtp://localhost:{smtp_server.port}", weight=1)
    send, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(20)])
    engine = make_relay_engine(batch=5, seed=3)
    start = clock.now()

    totals = await engine.run_until_idle()
    rows = await deliveries(ctx, send.id)
    via_broken = [r for r in rows.values() if r.relay == f"relay:{broken['id']}"]
    via_healthy = [r for r in rows.values() if r.relay == f"relay:{healthy['id']}"]
    assert len(via_broken) == 5  # the first batch, before the pause
    assert {r.status for r in via_broken} == {"deferred"}
    assert {r.attempts for r in via_broken} == {0}
    assert {r.next_attempt_at for r in via_broken} == {start + timedelta(seconds=60)}
    assert all("535" in (r.smtp_response or "") for r in via_broken)
    assert len(via_healthy) == 15 and {r.status for r in via_healthy} == {"sent"}
    assert totals == Counter(deferred=5, sent=15)
    counts = await event_counts(ctx)
    assert not counts["email.failed"] and not counts["email.bounced"]
    async with ctx.db.transaction() as session:
        assert (await session.execute(select(func.count()).select_from(Suppression))).scalar() == 0

    # The pause ends and the relay has been fixed: the deferred rows go out.
    smtp_server.behaviour.auth_fail = False
    clock.advance(61)
    assert await engine.run_until_idle() == Counter(sent=5)
    assert smtp_server.count() == 20


async def test_a_fixed_relay_url_takes_effect_at_once(
    client: httpx.AsyncClient,
    ctx: AppContext,
    clock: FrozenClock,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_relay_engine: MakeRelayEngine,
) -> None:
    """A changed row opens a new pool: the broken one rests, the fixed one sends now."""
    dead = f"smtp://127.0.0.1:{free_port()}?timeout=2"
    relay = await add_relay(client, workspace, dead, name="main")
    first, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(3, "a")])
    engine = make_relay_engine()
    assert await engine.run_until_idle() == Counter(deferred=3)  # connection refused
    assert {r.attempts for r in (await deliveries(ctx, first.id)).values()} == {0}

    fixed = await client.patch(
        f"/v1/relays/{relay['id']}", headers=workspace.headers, json={"url": smtp_server.url}
    )
    assert fixed.status_code == 200
    second, _ = await queue_send(ctx, workspace.id, [Recipient(e) for e in addresses(2, "b")])
    assert await engine.run_until_idle() == Counter(sent=2)
    clock.advance(61)  # the deferred rows wait for the end of the old pool's pause
    assert await engine.run_until_idle() == Counter(sent=3)
    assert smtp_server.count() == 5
    relays = {r.relay for r in (await deliveries(ctx, second.id)).values()}
    assert relays == {f"relay:{relay['id']}"}


async def test_the_password_never_appears_in_answers_or_logs(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    smtp_server: TestSmtpServer,
    make_relay_engine: MakeRelayEngine,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    url = f"smtp://relay-user:{PASSWORD}@127.0.0.1:{smtp_server.port}"
    answers = [await client.post("/v1/relays", headers=workspace.headers, json={"url": url})]
    relay_id = answers[0].json()["id"]
    answers.append(await client.get("/v1/relays", headers=workspace.headers))
    answers.append(await client.get(f"/v1/relays/{relay_id}", headers=workspace.headers))
    answers.append(
        await client.patch(f"/v1/relays/{relay_id}", headers=workspace.headers, json={"url": url})
    )
    answers.append(
        await client.post(  # a 409 names the relay, not its URL
            "/v1/relays",
            headers=workspace.headers,
            json={"url": url, "name": "127.0.0.1:" + str(smtp_server.port)},
        )
    )
    answers.append(await client.get("/openapi.json"))
    for answer in answers:
        assert PASSWORD not in answer.text

    # Mail goes out with the password (AUTH), and a failing AUTH is logged without it.
    await queue_send(ctx, workspace.id, [Recipient("a@example.com")])
    engine = make_relay_engine()
    assert await engine.run_until_idle() == Counter(sent=1)
    assert smtp_server.logins[-1] == ("relay-user", PASSWORD)
    smtp_server.behaviour.auth_fail = True
    await queue_send(ctx, workspace.id, [Recipient("b@example.com")])
    await make_relay_engine().run_until_idle()
    logged = capsys.readouterr()
    assert "relay_paused" in logged.out + logged.err + caplog.text  # something was logged
    assert PASSWORD not in logged.out + logged.err + caplog.text
    async with ctx.db.transaction() as session:
        responses = (await session.execute(select(Delivery.smtp_response))).scalars()
        assert all(PASSWORD not in (text or "") for text in responses)


# --- the CLI -------------------------------------------------------------------------------


def _cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATA_DIR=str(data_dir), COLUMNS="250")
    result = subprocess.run(
        [sys.executable, "-m", "postroom", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def test_cli_relays_add_and_list(tmp_path: Path) -> None:
    _cli(tmp_path, "workspaces", "create", "acme")
    added = _cli(
        tmp_path,
        "relays",
        "add",
        f"smtps://mailer:{PASSWORD}@smtp.example.com",
        "--workspace",
        "acme",
        "--name",
        "esp",
        "--weight",
        "3",
        "--per-second",
        "20",
        "--per-day",
        "50000",
    )
    assert "smtps://mailer:***@smtp.example.com" in added.stdout
    _cli(tmp_path, "relays", "add", "smtp://127.0.0.1:2525", "--workspace", "acme")
    listing = _cli(tmp_path, "relays", "list", "--workspace", "acme").stdout
    assert "esp" in listing and "127.0.0.1:2525" in listing
    assert "smtps://mailer:***@smtp.example.com" in listing
    assert "50000" in listing and "20" in listing
    for output in (added.stdout + added.stderr, listing):
        assert PASSWORD not in output

    bad = _cli(
        tmp_path, "relays", "add", "http://x.example.com", "--workspace", "acme", check=False
    )
    assert bad.returncode != 0 and "smtp://" in bad.stderr + bad.stdout
    taken = _cli(
        tmp_path,
        "relays",
        "add",
        "smtp://y.example.com",
        "--workspace",
        "acme",
        "--name",
        "esp",
        check=False,
    )
    assert taken.returncode != 0 and "already exists" in taken.stderr + taken.stdout
    missing = _cli(tmp_path, "relays", "list", "--workspace", "ghost", check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr + missing.stdout


def test_a_relay_url_is_stored_masked_and_rebuilt_with_its_password() -> None:
    split = split_url("smtp+starttls://mailer%40acme:p%40ss%3Aw@[::1]:2525?helo=mx.example.com")
    assert split.masked == "smtp+starttls://mailer%40acme:***@[::1]:2525?helo=mx.example.com"
    assert split.password == "p@ss:w"
    config = relay_config(split.masked, split.password)
    assert (config.host, config.port, config.username) == ("::1", 2525, "mailer@acme")
    assert config.password == "p@ss:w" and config.helo == "mx.example.com"
    assert "p@ss" not in repr(config)
    plain = split_url("smtp://relay.example.com")
    assert (plain.masked, plain.password) == ("smtp://relay.example.com", None)
    assert relay_config(plain.masked, None).username is None
