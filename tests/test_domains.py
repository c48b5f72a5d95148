"""Sending domains over HTTP on both databases: DNS records, encrypted DKIM keys, key
rotation, DNS checks against a stand-in DNS (a fake lookup object and a real DNS server on
the loopback) and against this machine's resolver, and the CLI commands."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from sqlalchemy import select

from postroom.context import AppContext
from postroom.delivery.dkim import DkimSigner
from postroom.domains.api import dns_lookup
from postroom.domains.dns import (
    DnsPythonLookup,
    KeyRecordInput,
    LookupUnavailable,
    NameMissing,
    check_records,
    split_txt,
)
from postroom.domains.service import DomainService
from postroom.models.domains import DkimKey
from postroom.security.rotation import ENCRYPTED_COLUMNS, rotate_stored_secrets
from postroom.security.secret_box import SecretBox
from tests.conftest import TEST_SECRET, WorkspaceHandle
from tests.test_api_keys import assert_problem

BOUNCE_HOST = "bounces.postroom.test"  # from base_url http://postroom.test in the tests
SPF_INCLUDE = "v=spf1 include:postroom.test ~all"


class FakeDns:
    """Stands in for the internet's DNS: answers from a dict, or is unreachable."""

    def __init__(
        self,
        txt: dict[str, list[str]] | None = None,
        cname: dict[str, str] | None = None,
        mx: dict[str, list[str]] | None = None,
        down: bool = False,
    ) -> None:
        self.txt_records = txt or {}
        self.cname_records = cname or {}
        self.mx_records = mx or {}
        self.down = down

    def _answer(self, table: dict[str, Any], name: str) -> Any:
        if self.down:
            raise LookupUnavailable("network unreachable")
        if name not in table:
            raise NameMissing(name)
        return table[name]

    async def txt(self, name: str) -> list[str]:
        return list(self._answer(self.txt_records, name))

    async def cname(self, name: str) -> str:
        return str(self._answer(self.cname_records, name))

    async def mx(self, name: str) -> list[str]:
        return list(self._answer(self.mx_records, name))


async def _add(
    client: httpx.AsyncClient, ws: WorkspaceHandle, domain: str = "example.com", **extra: Any
) -> dict[str, Any]:
    body = {"domain": domain, "bits": 1024, **extra}
    response = await client.post("/v1/domains", headers=ws.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _record(domain: dict[str, Any], purpose: str, selector: str | None = None) -> dict[str, Any]:
    [found] = [
        r
        for r in domain["records"]
        if r["purpose"] == purpose and (selector is None or r["selector"] == selector)
    ]
    return found  # type: ignore[no-any-return]


async def test_add_domain_lists_records_and_keeps_the_key_encrypted(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    response = await client.post(
        "/v1/domains", headers=workspace.headers, json={"domain": "Mail.Example.COM."}
    )
    assert response.status_code == 201, response.text
    domain = response.json()
    assert domain["domain"] == "mail.example.com"
    assert domain["dkim_selector"] == "pr202603"  # the test clock is in March 2026
    assert domain["return_path_domain"] == "bounces.mail.example.com"
    assert [k["bits"] for k in domain["dkim_keys"]] == [2048]
    assert {domain[f"{p}_status"] for p in ("spf", "dkim", "dmarc", "return_path")} == {"unknown"}
    assert domain["verified"] is False

    dkim = _record(domain, "dkim")
    assert (dkim["type"], dkim["name"]) == ("TXT", "pr202603._domainkey.mail.example.com")
    public_key = domain["dkim_keys"][0]["public_key"]
    assert dkim["value"] == f"v=DKIM1; k=rsa; p={public_key}"
    # A 2048-bit key does not fit one 255-character TXT string
    assert len(dkim["chunks"]) == 2
    assert "".join(dkim["chunks"]) == dkim["value"]
    assert all(len(chunk) <= 255 for chunk in dkim["chunks"])
    spf = _record(domain, "spf")
    assert (spf["type"], spf["name"], spf["value"]) == ("TXT", "mail.example.com", SPF_INCLUDE)
    dmarc = _record(domain, "dmarc")
    assert (dmarc["name"], dmarc["value"]) == (
        "_dmarc.mail.example.com",
        "v=DMARC1; p=none; rua=mailto:dmarc@mail.example.com",
    )
    bounce = _record(domain, "return_path")
    assert (bounce["type"], bounce["name"], bounce["value"]) == (
        "CNAME",
        "bounces.mail.example.com",
        BOUNCE_HOST,
    )
    assert "PRIVATE" not in response.text and "private" not in response.text

    async with ctx.db.transaction() as session:
        [key] = (await session.execute(select(DkimKey))).scalars()
        service = DomainService(session, workspace.id, ctx.clock.now(), ctx.secret_box, BOUNCE_HOST)
        signing = await service.signing_key("mail.example.com")
    assert "PRIVATE KEY" not in key.private_key and "-----" not in key.private_key
    pem = ctx.secret_box.decrypt(key.private_key)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert signing is not None and signing.private_key_pem == pem
    assert (signing.selector, signing.verified) == ("pr202603", False)
    # the published public key is the stored private key's
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert base64.b64encode(der).decode() == public_key
    DkimSigner("mail.example.com", "pr202603", pem)  # loads: a usable signing key

    fetched = (await client.get(f"/v1/domains/{domain['id']}", headers=workspace.headers)).json()
    assert fetched["records"] == domain["records"]
    listing = (await client.get("/v1/domains", headers=workspace.headers)).json()
    assert [d["domain"] for d in listing["data"]] == ["mail.example.com"]


async def test_bad_names_are_422_and_duplicates_409(
    client: httpx.AsyncClient, workspace: WorkspaceHandle, make_workspace: Any
) -> None:
    for bad in [
        "localhost",
        "exa mple.com",
        "-a.example.com",
        "1.2.3.4",
        "a..b.com",
        "x" * 64 + ".com",
        "é@.com",
    ]:
        body = assert_problem(
            await client.post("/v1/domains", headers=workspace.headers, json={"domain": bad}), 422
        )
        assert body["errors"][0]["field"] == "domain", bad  # type: ignore[index]
    assert_problem(
        await client.post(
            "/v1/domains",
            headers=workspace.headers,
            json={"domain": "example.com", "selector": "bad_selector!"},
        ),
        422,
    )
    await _add(client, workspace, "example.com")
    body = assert_problem(
        await client.post(
            "/v1/domains", headers=workspace.headers, json={"domain": "EXAMPLE.com", "bits": 1024}
        ),
        409,
    )
    assert "already" in str(body["detail"])
    # the same domain in another workspace is another domain
    await _add(client, await make_workspace("other"), "example.com")
    # internationalised names are stored as IDNA
    assert (await _add(client, workspace, "bücher.example"))["domain"] == "xn--bcher-kva.example"


async def test_secrets_rotate_re_encrypts_dkim_keys(
    client: httpx.AsyncClient, ctx: AppContext, workspace: WorkspaceHandle
) -> None:
    assert (DkimKey, "id", "private_key") in ENCRYPTED_COLUMNS
    await _add(client, workspace, "example.com")
    async with ctx.db.transaction() as session:
        [before] = (await session.execute(select(DkimKey.private_key))).scalars()
    pem = ctx.secret_box.decrypt(before)
    new_box = SecretBox([b"a-brand-new-secret-key-" + b"y" * 32, TEST_SECRET.encode()])
    async with ctx.db.transaction() as session:
        count = await rotate_stored_secrets(session, new_box, [(DkimKey, "id", "private_key")])
    assert count == 1
    async with ctx.db.transaction() as session:
        [after] = (await session.execute(select(DkimKey.private_key))).scalars()
    assert after != before
    assert SecretBox([b"a-brand-new-secret-key-" + b"y" * 32]).decrypt(after) == pem

    # deleting the domain deletes its keys
    domain_id = (await client.get("/v1/domains", headers=workspace.headers)).json()["data"][0]["id"]
    deleted = await client.delete(f"/v1/domains/{domain_id}", headers=workspace.headers)
    assert deleted.status_code == 204
    assert_problem(await client.get(f"/v1/domains/{domain_id}", headers=workspace.headers), 404)
    async with ctx.db.transaction() as session:
        assert list((await session.execute(select(DkimKey.id))).scalars()) == []


async def test_check_with_dns_answers(
    app: FastAPI, client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    domain = await _add(client, workspace, "example.com")
    url = f"/v1/domains/{domain['id']}/check"
    dkim = _record(domain, "dkim")

    good = FakeDns(
        txt={
            "example.com": ["google-site-verification=abc", SPF_INCLUDE],
            dkim["name"]: [dkim["value"]],
            "_dmarc.example.com": ["v=DMARC1; p=quarantine; rua=mailto:d@example.com"],
        },
        cname={"bounces.example.com": BOUNCE_HOST},
    )
    app.dependency_overrides[dns_lookup] = lambda: good
    checked = (await client.post(url, headers=workspace.headers)).json()
    assert [checked[f"{p}_status"] for p in ("spf", "dkim", "dmarc", "return_path")] == [
        "verified"
    ] * 4
    assert checked["verified"] is True
    assert checked["checked_at"] is not None
    assert _record(checked, "spf")["found"] == [SPF_INCLUDE]
    assert checked["dkim_keys"][0]["status"] == "verified"

    app.dependency_overrides[dns_lookup] = lambda: FakeDns()
    missing = (await client.post(url, headers=workspace.headers)).json()
    assert [missing[f"{p}_status"] for p in ("spf", "dkim", "dmarc", "return_path")] == [
        "missing"
    ] * 4
    assert "no TXT record at example.com" in _record(missing, "spf")["detail"]

    wrong = FakeDns(
        txt={
            "example.com": ["v=spf1 include:_spf.google.com ~all"],
            dkim["name"]: ["v=DKIM1; k=rsa; p=QUJDRA=="],
            "_dmarc.example.com": ["v=DMARC1; rua=mailto:d@example.com"],
        },
        cname={"bounces.example.com": "elsewhere.example.net"},
    )
    app.dependency_overrides[dns_lookup] = lambda: wrong
    invalid = (await client.post(url, headers=workspace.headers)).json()
    assert [invalid[f"{p}_status"] for p in ("spf", "dkim", "dmarc", "return_path")] == [
        "invalid"
    ] * 4
    assert "elsewhere.example.net" in _record(invalid, "return_path")["detail"]

    # MX records naming the bounce host verify the return path too; two SPF records do not
    mixed = FakeDns(
        txt={"example.com": [SPF_INCLUDE, "v=spf1 -all"]},
        mx={"bounces.example.com": [BOUNCE_HOST]},
    )
    app.dependency_overrides[dns_lookup] = lambda: mixed
    result = (await client.post(url, headers=workspace.headers)).json()
    assert (result["spf_status"], result["return_path_status"]) == ("invalid", "verified")

    app.dependency_overrides[dns_lookup] = lambda: FakeDns(down=True)
    offline = (await client.post(url, headers=workspace.headers)).json()
    assert [offline[f"{p}_status"] for p in ("spf", "dkim", "dmarc", "return_path")] == [
        "unknown"
    ] * 4
    stored = (await client.get(f"/v1/domains/{domain['id']}", headers=workspace.headers)).json()
    assert stored["spf_status"] == "unknown"
    assert "network unreachable" in _record(stored, "dmarc")["detail"]


async def test_dkim_key_rotation(
    app: FastAPI, client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    domain = await _add(client, workspace, "example.com")
    url = f"/v1/domains/{domain['id']}/dkim-keys"
    rotated = await client.post(url, headers=workspace.headers, json={"bits": 1024})
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert [(k["selector"], k["active"]) for k in body["dkim_keys"]] == [
        ("pr202603", True),
        ("pr202603b", False),
    ]
    assert body["dkim_selector"] == "pr202603"  # the old key signs until the new is seen
    assert {r["selector"] for r in body["records"] if r["purpose"] == "dkim"} == {
        "pr202603",
        "pr202603b",
    }
    assert_problem(
        await client.post(url, headers=workspace.headers, json={"selector": "pr202603"}), 409
    )
    assert_problem(await client.post(url, headers=workspace.headers, json={"selector": "-x"}), 422)

    old, new = (_record(body, "dkim", s) for s in ("pr202603", "pr202603b"))
    app.dependency_overrides[dns_lookup] = lambda: FakeDns(txt={old["name"]: [old["value"]]})
    still_old = (
        await client.post(f"/v1/domains/{domain['id']}/check", headers=workspace.headers)
    ).json()
    assert still_old["dkim_selector"] == "pr202603"
    assert still_old["dkim_status"] == "verified"
    both = {old["name"]: [old["value"]], new["name"]: [" ".join(new["chunks"])]}
    app.dependency_overrides[dns_lookup] = lambda: FakeDns(txt=both)
    switched = (
        await client.post(f"/v1/domains/{domain['id']}/check", headers=workspace.headers)
    ).json()
    assert switched["dkim_selector"] == "pr202603b"
    assert [k["active"] for k in switched["dkim_keys"]] == [False, True]

    at_once = (
        await client.post(
            url, headers=workspace.headers, json={"selector": "now", "bits": 1024, "activate": True}
        )
    ).json()
    assert at_once["dkim_selector"] == "now"
    assert at_once["dkim_status"] == "unknown"


async def test_check_with_this_machines_resolver_is_unknown_and_quick(
    client: httpx.AsyncClient, workspace: WorkspaceHandle
) -> None:
    """This machine has no DNS to the internet: nothing may be reported missing."""
    domain = await _add(client, workspace, "example.com")
    started = time.monotonic()
    response = await client.post(f"/v1/domains/{domain['id']}/check", headers=workspace.headers)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    checked = response.json()
    assert [checked[f"{p}_status"] for p in ("spf", "dkim", "dmarc", "return_path")] == [
        "unknown"
    ] * 4
    assert elapsed < 5  # the lookups run at once, each giving up after 2 s


# --- the real resolver against a DNS server on the loopback ---------------------------------


class _LoopbackDns(asyncio.DatagramProtocol):
    """A tiny DNS server. ``mode``: ``authoritative`` (answers from ``zone``, negative
    answers carry the SOA), ``liar`` (NXDOMAIN for everything, without SOA, like this
    machine's resolver), ``servfail``, or ``silent`` (never answers)."""

    def __init__(self, zone: dict[tuple[str, str], list[str]], mode: str) -> None:
        self.zone = zone
        self.mode = mode
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        if self.mode == "silent":
            return
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".")
        rdtype = dns.rdatatype.to_text(question.rdtype)
        soa = dns.rrset.from_text(
            "example.com.", 300, "IN", "SOA", "ns.example.com. admin.example.com. 1 2 3 4 300"
        )
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif self.mode == "liar":
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in self.zone:
            values = self.zone[(name, rdtype)]
            response.answer.append(dns.rrset.from_text(name + ".", 300, "IN", rdtype, *values))
        elif any(known == name for known, _ in self.zone):
            response.authority.append(soa)  # NODATA: the name exists, not this type
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(soa)
        response.flags |= dns.flags.AA
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def loopback_dns() -> AsyncIterator[Any]:
    servers: list[asyncio.DatagramTransport] = []

    async def start(zone: dict[tuple[str, str], list[str]], mode: str) -> DnsPythonLookup:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _LoopbackDns(zone, mode), local_addr=("127.0.0.1", 0)
        )
        servers.append(transport)
        port = transport.get_extra_info("sockname")[1]
        return DnsPythonLookup(timeout=0.5, nameservers=["127.0.0.1"], port=port)

    yield start
    for transport in servers:
        transport.close()


def _quoted(value: str) -> str:
    return " ".join(f'"{chunk}"' for chunk in split_txt(value))


async def test_real_resolver_tells_proven_absence_from_no_answer(loopback_dns: Any) -> None:
    from postroom.delivery.dkim import generate_dkim_keypair

    _private, public = generate_dkim_keypair(1024)
    key = KeyRecordInput("s1", public)
    zone = {
        ("example.com", "TXT"): [_quoted(SPF_INCLUDE)],
        ("s1._domainkey.example.com", "TXT"): [_quoted(f"v=DKIM1; k=rsa; p={public}")],
        ("_dmarc.example.com", "TXT"): [_quoted("v=DMARC1; p=none")],
    }
    lookup = await loopback_dns(zone, "authoritative")
    assert await lookup.txt("example.com") == [SPF_INCLUDE]
    result = await check_records(lookup, "example.com", "bounces.example.com", [key], BOUNCE_HOST)
    assert (result.spf.status, result.dkim["s1"].status, result.dmarc.status) == ("verified",) * 3
    assert result.return_path.status == "missing"  # NXDOMAIN with the zone's SOA
    with pytest.raises(NameMissing):
        await lookup.cname("example.com")  # NODATA with the SOA

    for mode in ("liar", "servfail", "silent"):
        lookup = await loopback_dns(zone, mode)
        started = time.monotonic()
        result = await check_records(
            lookup, "example.com", "bounces.example.com", [key], BOUNCE_HOST
        )
        statuses = {result.spf.status, result.dmarc.status, result.return_path.status}
        assert statuses | {result.dkim["s1"].status} == {"unknown"}, mode
        assert time.monotonic() - started < 2.5, mode  # concurrent lookups, 0.5 s timeout


# --- the CLI --------------------------------------------------------------------------------


def _cli(
    data_dir: Path, *args: str, check: bool = True, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATA_DIR=str(data_dir), COLUMNS="200", **env_extra)
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


def test_cli_domains_add_dkim_generate_and_rotate(tmp_path: Path) -> None:
    cli_dir = tmp_path
    _cli(cli_dir, "workspaces", "create", "acme")
    added = _cli(cli_dir, "domains", "add", "example.com", "--workspace", "acme", "--bits", "1024")
    out = added.stdout
    selector = next(
        line.split()[2].rstrip(",")
        for line in out.splitlines()
        if line.startswith("DKIM (selector")
    )
    assert f"name:  {selector}._domainkey.example.com" in out
    assert "value: v=DKIM1; k=rsa; p=" in out
    assert "value: v=spf1 include:" in out
    assert "name:  _dmarc.example.com" in out
    assert "name:  bounces.example.com" in out
    assert "signing)" in out

    generated = _cli(
        cli_dir,
        "dkim",
        "generate",
        "example.com",
        "--workspace",
        "acme",
        "--selector",
        "rot2",
        "--bits",
        "2048",
    )
    assert "name:  rot2._domainkey.example.com" in generated.stdout
    assert "rot2, not signing yet" in generated.stdout
    assert "as 255-character strings:" in generated.stdout  # a 2048-bit key needs two
    unknown = _cli(cli_dir, "dkim", "generate", "nope.example", "--workspace", "acme", check=False)
    assert unknown.returncode != 0 and "not found" in unknown.stderr + unknown.stdout

    old_key = (cli_dir / "secret_key").read_text().strip()
    rotated = _cli(
        cli_dir,
        "secrets",
        "rotate",
        POSTROOM_SECRET_KEY="the-next-secret-key-" + "z" * 32,
        POSTROOM_OLD_SECRET_KEYS=old_key,
    )
    assert "re-encrypted 2 stored secret(s)" in rotated.stdout
