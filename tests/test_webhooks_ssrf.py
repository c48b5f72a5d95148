"""SSRF: webhook targets on private networks are refused when an endpoint is made and
again at every connection (DNS rebinding); redirects are never followed."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from postroom.config import Settings
from postroom.context import AppContext
from postroom.webhooks.ssrf import check_url, refusal
from tests.conftest import WorkspaceHandle, make_settings
from tests.support.webhook_receiver import WebhookReceiver, running_receiver
from tests.test_webhooks import create_endpoint, deliveries_of, emit, pump


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path, webhooks_allow_private=False)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    yield from running_receiver()


REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "2002:7f00:1::",  # 6to4 around 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
]
ALLOWED = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_private_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


async def test_check_url() -> None:
    assert await check_url("https://93.184.215.14/hook", allow_private=False) is None
    assert "loopback" in (await check_url("http://localhost:9/x", allow_private=False) or "")
    assert await check_url("http://localhost:9/x", allow_private=True) is None
    assert "http" in (await check_url("ftp://93.184.215.14/", allow_private=False) or "")
    assert "credentials" in (
        await check_url("https://u:p@93.184.215.14/", allow_private=False) or ""
    )
    assert await check_url("https://no-such-host.invalid/", allow_private=False) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:8080/hook",  # a host name that resolves to loopback
        "http://0.0.0.0/",
    ],
)
async def test_create_refuses_private_targets(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, url: str
) -> None:
    response = await client.post(
        "/v1/webhooks", headers=workspace.headers, json={"url": url, "event_types": ["*"]}
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "url"
    assert error["code"] == "refused_target"


async def test_update_refuses_private_targets(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    created = await client.post(
        "/v1/webhooks",
        headers=workspace.headers,
        json={"url": "https://93.184.215.14/hook", "event_types": ["*"]},
    )
    assert created.status_code == 201, created.text
    response = await client.patch(
        f"/v1/webhooks/{created.json()['id']}",
        headers=workspace.headers,
        json={"url": "http://192.168.0.10/"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "url"


async def test_send_time_check_stops_a_rebound_host(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    # The endpoint was accepted while allowed (as if the name had resolved to a public
    # address then); at send time it resolves to loopback and nothing may leave.
    ctx.settings.webhooks_allow_private = True
    endpoint = await create_endpoint(client, workspace, receiver.url(host="localhost"))
    ctx.settings.webhooks_allow_private = False
    await emit(ctx, workspace)
    await pump(ctx)
    assert receiver.requests == []
    [row] = await deliveries_of(client, workspace, endpoint["id"])
    assert row["status"] == "retrying"
    assert row["response_status"] is None
    assert "refused target" in row["error"] and "loopback" in row["error"]
    # Allowed again (the operator's choice), the retry goes through.
    ctx.settings.webhooks_allow_private = True
    ctx.clock.advance(5)  # type: ignore[attr-defined]
    await pump(ctx)
    assert len(receiver.requests) == 1


async def test_redirects_are_not_followed(
    client: httpx.AsyncClient,
    ctx: AppContext,
    workspace: WorkspaceHandle,
    receiver: WebhookReceiver,
) -> None:
    ctx.settings.webhooks_allow_private = True  # the receiver is local
    endpoint = await create_endpoint(client, workspace, receiver.url())
    receiver.respond(302, location=receiver.url("/elsewhere"))
    await emit(ctx, workspace, data={"n": 1})
    await pump(ctx)
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert json.loads(receiver.requests[0].body)["data"]["n"] == 1
    [row] = await deliveries_of(client, workspace, endpoint["id"])
    assert row["status"] == "retrying"
    assert row["response_status"] == 302
    assert "not followed" in row["error"]
