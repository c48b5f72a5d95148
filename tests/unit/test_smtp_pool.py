"""The SMTP relay pool against a real (in-process aiosmtpd) server."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from postroom.delivery.outcomes import OutcomeKind
from postroom.delivery.relay_url import parse_relay_url
from postroom.delivery.smtp_pool import SmtpRelayPool, WeightedRelayChooser, wire_payload
from postroom.delivery.transport import Envelope, SendResult
from tests.support.smtp_server import RecordingHandler, TestSmtpServer, free_port

MESSAGE = (
    b"From: News <news@sender.example>\r\nTo: someone@example.com\r\nSubject: Hello\r\n"
    b"Message-ID: <m@sender.example>\r\n\r\nHello there.\r\n"
)


class _CountingHandler(RecordingHandler):
    """Counts MAIL commands per client connection, and can drop one MAIL on request."""

    server: CountingSmtpServer

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.server.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.server.mail_by_peer[session.peer] += 1
        if self.server.mail_delay:
            await asyncio.sleep(self.server.mail_delay)
        if self.server.goodbye_next_mail:
            self.server.goodbye_next_mail = False
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.4.2 Error: timeout exceeded"
        if self.server.drop_next_mail:
            # A relay that timed out an idle connection: the next command finds it gone.
            self.server.drop_next_mail = False
            server.transport.close()
            return "421 closing"
        return await super().handle_MAIL(server, session, envelope, address, options)


class CountingSmtpServer(TestSmtpServer):
    __test__ = False

    def __init__(self, *, pipelining: bool = False) -> None:
        super().__init__()
        self.pipelining = pipelining
        self.mail_by_peer: Counter[Any] = Counter()
        self.drop_next_mail = False
        self.goodbye_next_mail = False
        self.mail_delay = 0.0
        self.controller.handler = _CountingHandler(self)

    def reset(self) -> None:
        super().reset()
        self.mail_by_peer.clear()
        self.drop_next_mail = False
        self.goodbye_next_mail = False
        self.mail_delay = 0.0

    @property
    def connections(self) -> int:
        return len(self.mail_by_peer)


# Every pool test runs against a relay without PIPELINING (one command per round trip)
# and one that advertises it (MAIL, RCPT and DATA in one write): the outcomes must match.
@pytest.fixture(scope="module", params=[False, True], ids=["lockstep", "pipelined"])
def counting_server(request: pytest.FixtureRequest) -> Iterator[CountingSmtpServer]:
    server = CountingSmtpServer(pipelining=request.param)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def relay(counting_server: CountingSmtpServer) -> CountingSmtpServer:
    counting_server.reset()
    return counting_server


def make_pool(
    server: TestSmtpServer,
    *,
    connections: int = 4,
    per_connection: int = 100,
    credentials: str = "",
) -> SmtpRelayPool:
    url = f"smtp://{credentials}{server.host}:{server.port}?timeout=5&helo=client.test"
    return SmtpRelayPool(
        parse_relay_url(url),
        max_connections=connections,
        max_messages_per_connection=per_connection,
    )


def envelopes(count: int, *, rcpts: list[str] | None = None) -> list[Envelope]:
    addresses = rcpts or [f"user{i}@example.com" for i in range(count)]
    return [
        Envelope("bounces+x@sender.example", rcpt, MESSAGE, f"delivery-{i}")
        for i, rcpt in enumerate(addresses)
    ]


def kinds(results: list[SendResult]) -> list[str]:
    return [result.outcome.kind.value for result in results]


async def test_sends_many_messages_over_a_few_reused_connections(
    relay: CountingSmtpServer,
) -> None:
    pool = make_pool(relay, connections=4)
    batch = envelopes(40)
    results = await pool.send_many(batch)
    await pool.close()
    assert kinds(results) == ["sent"] * 40
    assert [r.delivery_id for r in results] == [e.delivery_id for e in batch]
    assert all(r.response == "250 OK queued" and r.elapsed_ms > 0 for r in results)
    assert sorted(relay.recipients()) == sorted(e.rcpt_to for e in batch)
    assert 1 <= relay.connections <= 4 < 40
    assert pool.connections_opened == relay.connections
    assert pool.healthy


async def test_a_second_batch_reuses_the_idle_connections(relay: CountingSmtpServer) -> None:
    pool = make_pool(relay, connections=2)
    await pool.send_many(envelopes(10))
    opened = pool.connections_opened
    await pool.send_many(envelopes(10))
    await pool.close()
    assert relay.count() == 20
    assert pool.connections_opened == opened == relay.connections


async def test_concurrent_batches_share_the_connection_limit(relay: CountingSmtpServer) -> None:
    pool = make_pool(relay, connections=2)
    first, second = await asyncio.gather(
        pool.send_many(envelopes(15)), pool.send_many(envelopes(15))
    )
    await pool.close()
    assert kinds(first + second) == ["sent"] * 30
    assert relay.connections <= 2


async def test_the_message_arrives_byte_for_byte(relay: CountingSmtpServer) -> None:
    # A line starting with a dot must be stuffed on the wire and unstuffed by the server.
    data = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nbare lf\nend"
    pool = make_pool(relay, connections=1)
    [result] = await pool.send_many([Envelope("a@sender.example", "b@example.com", data, "d1")])
    await pool.close()
    assert result.outcome.kind is OutcomeKind.SENT
    received = relay.messages[0]
    assert received.mail_from == "a@sender.example"
    assert received.rcpt_tos == ["b@example.com"]
    assert received.data == b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nbare lf\r\nend\r\n"


def test_wire_payload_normalises_and_terminates() -> None:
    assert wire_payload(b"a\n.b\r.c") == b"a\r\n..b\r\n..c\r\n.\r\n"
    assert wire_payload(b"x\r\n") == b"x\r\n.\r\n"


async def test_unknown_user_bounces_and_the_connection_is_reused(
    relay: CountingSmtpServer,
) -> None:
    relay.behaviour.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    pool = make_pool(relay, connections=1)
    batch = envelopes(3, rcpts=["a@example.com", "gone@example.com", "b@example.com"])
    results = await pool.send_many(batch)
    await pool.close()
    assert kinds(results) == ["sent", "bounced", "sent"]
    bounce = results[1].outcome
    assert (bounce.code, bounce.enhanced, bounce.suppress) == (550, "5.1.1", True)
    assert results[1].response == "550 5.1.1 no such user"
    assert relay.recipients() == ["a@example.com", "b@example.com"]
    assert relay.connections == 1  # RSET after the refusal kept the connection usable
    assert pool.healthy


async def test_temporary_refusal_defers(relay: CountingSmtpServer) -> None:
    relay.behaviour.rcpt_replies["later@example.com"] = "451 4.3.0 try again later"
    pool = make_pool(relay, connections=1)
    results = await pool.send_many(envelopes(2, rcpts=["later@example.com", "ok@example.com"]))
    await pool.close()
    assert kinds(results) == ["deferred", "sent"]
    assert results[0].outcome.suppress is False
    assert relay.connections == 1
    assert pool.healthy


async def test_policy_rejection_at_data_fails_without_suppressing(
    relay: CountingSmtpServer,
) -> None:
    relay.behaviour.data_reply = "554 5.7.1 rejected for policy"
    pool = make_pool(relay, connections=1)
    results = await pool.send_many(envelopes(3))
    await pool.close()
    assert kinds(results) == ["failed"] * 3
    assert all(r.outcome.enhanced == "5.7.1" and not r.outcome.suppress for r in results)
    assert relay.count() == 0
    assert relay.connections == 1
    assert pool.healthy


async def test_an_address_that_cannot_go_on_the_wire_fails_alone(
    relay: CountingSmtpServer,
) -> None:
    # Not an addr-spec: a parser would read "x@example.com" out of the first (another
    # recipient than meant), so it is refused before anything goes on the wire.
    pool = make_pool(relay, connections=1)
    rcpts = ["x@example.com>\r\nRCPT TO:<victim@example.com", "Jo <jo@example.com>"]
    results = await pool.send_many(envelopes(3, rcpts=[*rcpts, "ok@example.com"]))
    await pool.close()
    assert kinds(results) == ["failed", "failed", "sent"]
    assert "not a bare envelope address" in results[0].response
    assert relay.recipients() == ["ok@example.com"]
    assert pool.healthy
    assert relay.connections == 1


async def test_non_ascii_addresses_go_out_with_smtputf8(relay: CountingSmtpServer) -> None:
    pool = make_pool(relay, connections=1)
    results = await pool.send_many(envelopes(1, rcpts=["jürgen@exämple.com"]))
    await pool.close()
    assert kinds(results) == ["sent"]
    assert relay.recipients() == ["jürgen@exämple.com"]


async def test_auth_failure_is_a_relay_error_and_stops_the_batch(
    relay: CountingSmtpServer,
) -> None:
    relay.behaviour.auth_fail = True
    pool = make_pool(relay, connections=4, credentials="user:wrong@")
    results = await pool.send_many(envelopes(6))
    assert kinds(results) == ["relay_error"] * 6
    assert results[0].outcome.code == 535
    assert all(r.response.startswith("not attempted") for r in results[1:])
    assert all(not r.outcome.suppress for r in results)
    assert relay.count() == 0
    assert not pool.healthy
    assert "535" in pool.last_error

    # An unhealthy pool does not touch the relay until the engine says so.
    relay.behaviour.auth_fail = False
    later = await pool.send_many(envelopes(2))
    assert kinds(later) == ["relay_error"] * 2
    assert relay.count() == 0

    pool.reset_health()
    retried = await pool.send_many(envelopes(2))
    await pool.close()
    assert kinds(retried) == ["sent"] * 2
    assert relay.logins[-1] == ("user", "wrong")


async def test_credentials_are_sent_decoded(relay: CountingSmtpServer) -> None:
    pool = make_pool(relay, connections=1, credentials="api%40key:p%40ss%3Aword@")
    assert kinds(await pool.send_many(envelopes(1))) == ["sent"]
    await pool.close()
    assert relay.logins[-1] == ("api@key", "p@ss:word")


@pytest.mark.parametrize(
    "reply", ["421 4.3.2 service shutting down", "553 5.7.1 sender not allowed", "451 4.3.0 later"]
)
async def test_mail_from_refused_is_a_relay_error(relay: CountingSmtpServer, reply: str) -> None:
    relay.behaviour.mail_reply = reply
    pool = make_pool(relay, connections=1)
    results = await pool.send_many(envelopes(5))
    await pool.close()
    assert kinds(results) == ["relay_error"] * 5
    assert results[0].outcome.code == int(reply[:3])
    assert all(r.response.startswith("not attempted") for r in results[1:])
    assert sum(relay.mail_by_peer.values()) == 1  # one MAIL FROM, then the batch stopped
    assert not pool.healthy
    assert pool.last_error == reply


@pytest.mark.parametrize("point", ["mail", "rcpt"])
async def test_a_drop_before_the_message_defers(relay: CountingSmtpServer, point: str) -> None:
    relay.behaviour.drop_at = point
    pool = make_pool(relay, connections=1)
    results = await pool.send_many(envelopes(2))
    assert kinds(results) == ["deferred"] * 2
    assert pool.healthy
    relay.behaviour.drop_at = None
    assert kinds(await pool.send_many(envelopes(1))) == ["sent"]  # on a new connection
    await pool.close()
    assert pool.connections_opened == 3


@pytest.mark.parametrize(("point", "kept"), [("after_data", 1), ("data", 0)])
async def test_a_drop_after_the_message_is_uncertain(
    relay: CountingSmtpServer, point: str, kept: int
) -> None:
    relay.behaviour.drop_at = point
    pool = make_pool(relay, connections=1)
    [result] = await pool.send_many(envelopes(1))
    await pool.close()
    assert result.outcome.kind is OutcomeKind.UNCERTAIN
    assert result.outcome.suppress is False
    assert relay.count() == kept  # "after_data": delivered though we never heard so
    assert pool.healthy


async def test_connection_refused_is_a_relay_error_tried_once() -> None:
    closed = TestSmtpServer.__new__(TestSmtpServer)  # only host and port are used
    closed.host, closed.port = "127.0.0.1", free_port()
    pool = make_pool(closed, connections=4)
    results = await pool.send_many(envelopes(8))
    await pool.close()
    assert kinds(results) == ["relay_error"] * 8
    assert results[0].outcome.code is None
    assert results[0].response.startswith("connect:")
    assert all(r.response.startswith("not attempted") for r in results[1:])
    assert not pool.healthy
    assert pool.last_error == results[0].response


@pytest.mark.parametrize(
    ("scheme", "says"),
    [("smtp+starttls", "STARTTLS extension not supported"), ("smtps", "TLS failure")],
)
async def test_tls_that_cannot_be_had_is_a_relay_error(
    relay: CountingSmtpServer, scheme: str, says: str
) -> None:
    # The test server speaks plain SMTP only: required TLS must not fall back to plain.
    config = parse_relay_url(f"{scheme}://{relay.host}:{relay.port}?timeout=5")
    pool = SmtpRelayPool(config, max_connections=2, max_messages_per_connection=10)
    results = await pool.send_many(envelopes(3))
    await pool.close()
    assert kinds(results) == ["relay_error"] * 3
    assert says in results[0].response
    assert relay.count() == 0
    assert not pool.healthy


async def test_max_messages_per_connection_is_honoured(relay: CountingSmtpServer) -> None:
    pool = make_pool(relay, connections=1, per_connection=3)
    results = await pool.send_many(envelopes(10))
    await pool.close()
    assert kinds(results) == ["sent"] * 10
    assert sorted(relay.mail_by_peer.values()) == [1, 3, 3, 3]
    assert pool.connections_opened == 4


async def test_an_idle_connection_the_relay_dropped_is_replaced_transparently(
    relay: CountingSmtpServer,
) -> None:
    pool = make_pool(relay, connections=1)
    assert kinds(await pool.send_many(envelopes(1))) == ["sent"]
    relay.drop_next_mail = True
    assert kinds(await pool.send_many(envelopes(1))) == ["sent"]
    await pool.close()
    assert relay.count() == 2
    assert pool.connections_opened == 2


async def test_a_connection_left_mid_transaction_by_a_cancel_is_not_reused(
    relay: CountingSmtpServer,
) -> None:
    relay.mail_delay = 0.3
    pool = make_pool(relay, connections=1)
    sending = asyncio.create_task(pool.send_many(envelopes(3)))
    await asyncio.sleep(0.1)  # the first MAIL FROM is waiting for its reply
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    relay.mail_delay = 0.0
    results = await pool.send_many(envelopes(2))
    await pool.close()
    assert kinds(results) == ["sent"] * 2
    assert relay.count() == 2
    assert pool.connections_opened == 2


async def test_a_closed_pool_sends_nothing(relay: CountingSmtpServer) -> None:
    pool = make_pool(relay, connections=1)
    await pool.close()
    results = await pool.send_many(envelopes(2))
    assert kinds(results) == ["relay_error"] * 2
    assert relay.count() == 0
    assert await pool.send_many([]) == []


def test_pool_limits_must_be_positive() -> None:
    config = parse_relay_url("smtp://relay.example.com")
    with pytest.raises(ValueError, match=">= 1"):
        SmtpRelayPool(config, max_connections=0, max_messages_per_connection=10)


def test_weighted_choice_follows_the_weights() -> None:
    chooser = WeightedRelayChooser([("a", 1), ("b", 3), ("c", 0)], rng=random.Random(7))
    picks = Counter(chooser.choose({"a", "b", "c"}) for _ in range(4000))
    assert picks["c"] == 0
    assert 850 <= picks["a"] <= 1150
    assert 2850 <= picks["b"] <= 3150


def test_weighted_choice_skips_unhealthy_relays() -> None:
    chooser = WeightedRelayChooser([("a", 5), ("b", 1)], rng=random.Random(1))
    assert {chooser.choose({"b"}) for _ in range(50)} == {"b"}
    assert chooser.choose(set()) is None
    assert chooser.choose({"unknown"}) is None
    assert WeightedRelayChooser([("c", 0)]).choose({"c"}) is None


def test_weighted_choice_is_deterministic_with_a_seeded_random() -> None:
    relays = [("a", 2), ("b", 2), ("c", 1)]
    first = WeightedRelayChooser(relays, rng=random.Random(42))
    second = WeightedRelayChooser(relays, rng=random.Random(42))
    healthy = {"a", "b", "c"}
    assert [first.choose(healthy) for _ in range(20)] == [second.choose(healthy) for _ in range(20)]


def test_weighted_choice_validates_relays() -> None:
    with pytest.raises(ValueError, match="unique"):
        WeightedRelayChooser([("a", 1), ("a", 2)])
    with pytest.raises(ValueError, match="negative"):
        WeightedRelayChooser([("a", -1)])


class ScriptedRelay:
    """A relay that answers from a script and records what arrived in each read, to see
    the client's writes: with PIPELINING, MAIL, RCPT and DATA must arrive together."""

    def __init__(self, rcpt_reply: bytes = b"250 ok", data_reply: bytes = b"354 go") -> None:
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.chunks: list[bytes] = []
        self.messages: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedRelay:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        buffer = b""
        in_data = False
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            self.chunks.append(chunk)
            buffer += chunk
            while True:
                if in_data:
                    end = buffer.find(b"\r\n.\r\n")
                    if end < 0 and not buffer.startswith(b".\r\n"):
                        break
                    end = 0 if buffer.startswith(b".\r\n") else end + 2
                    message, buffer = buffer[:end], buffer[end + 3 :]
                    self.messages.append(message)
                    writer.write(b"250 2.0.0 queued\r\n" if message else b"554 5.5.1 no rcpt\r\n")
                    in_data = False
                    continue
                line, sep, rest = buffer.partition(b"\r\n")
                if not sep:
                    break
                buffer = rest
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-scripted\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
                elif verb == b"MAIL" or verb == b"RSET":
                    writer.write(b"250 ok\r\n")
                elif verb == b"RCPT":
                    writer.write(self.rcpt_reply + b"\r\n")
                elif verb == b"DATA":
                    writer.write(self.data_reply + b"\r\n")
                    in_data = self.data_reply.startswith(b"354")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    writer.close()
                    return
            await writer.drain()
        writer.close()


def scripted_pool(relay: ScriptedRelay) -> SmtpRelayPool:
    config = parse_relay_url(f"smtp://127.0.0.1:{relay.port}?timeout=5&helo=client.test")
    return SmtpRelayPool(config, max_connections=1, max_messages_per_connection=100)


async def test_pipelining_sends_mail_rcpt_and_data_in_one_write() -> None:
    async with ScriptedRelay() as relay:
        pool = scripted_pool(relay)
        results = await pool.send_many(envelopes(3))
        await pool.close()
    assert kinds(results) == ["sent"] * 3
    assert [m.endswith(b"Hello there.\r\n") for m in relay.messages] == [True] * 3
    commands = [chunk for chunk in relay.chunks if chunk.startswith(b"MAIL FROM:")]
    assert len(commands) == 3
    assert all(
        chunk.endswith(b"\r\nDATA\r\n") and b"\r\nRCPT TO:<user" in chunk for chunk in commands
    )


async def test_pipelined_refused_recipient_with_data_accepted_anyway() -> None:
    # RFC 2920: a relay may answer 354 to a pipelined DATA although no RCPT succeeded;
    # the client then ends the transaction with an empty message and stays in step.
    async with ScriptedRelay(rcpt_reply=b"550 5.1.1 no such user") as relay:
        pool = scripted_pool(relay)
        results = await pool.send_many(envelopes(2))
        relay.rcpt_reply = b"250 ok"
        later = await pool.send_many(envelopes(1))
        await pool.close()
    assert kinds(results) == ["bounced", "bounced"]
    assert results[0].outcome.enhanced == "5.1.1"
    assert kinds(later) == ["sent"]
    assert relay.messages[:2] == [b"", b""]  # the two empty ends, nothing delivered
    assert pool.connections_opened == 1


async def test_pipelined_refused_recipient_with_data_refused() -> None:
    async with ScriptedRelay(rcpt_reply=b"452 4.2.2 mailbox full", data_reply=b"554 no rcpt") as r:
        pool = scripted_pool(r)
        results = await pool.send_many(envelopes(2))
        await pool.close()
    assert kinds(results) == ["deferred", "deferred"]
    assert results[0].outcome.code == 452
    assert r.messages == []
    assert pool.connections_opened == 1


def test_wire_payload_fast_path_matches_the_general_one() -> None:
    for data in (b"a\r\nb\r\n", b"a\r\n.b\r\n", b".x\r\ny", b"a\nb\r\nc\rd", b"\r\n.\r\n"):
        expected = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if not expected.endswith(b"\r\n"):
            expected += b"\r\n"
        expected = (b"." if expected.startswith(b".") else b"") + expected
        assert wire_payload(data) == expected.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def _self_signed(tmp_path: Any) -> ssl.SSLContext:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


class _TlsHandler(_CountingHandler):
    """Records like the counting handler, advertises PIPELINING, and notes whether each
    MAIL FROM arrived over TLS."""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.server.tls_mail.append(server.transport.get_extra_info("ssl_object") is not None)
        return await super().handle_MAIL(server, session, envelope, address, options)


@pytest.mark.parametrize("scheme", ["smtp+starttls", "smtps"])
async def test_transactions_run_over_tls_after_starttls_or_implicit_tls(
    tmp_path: Any, scheme: str
) -> None:
    from aiosmtpd.controller import Controller

    context = _self_signed(tmp_path)
    server = CountingSmtpServer(pipelining=True)
    server.tls_mail = []  # type: ignore[attr-defined]
    handler = _TlsHandler(server)
    options: dict[str, Any] = (
        {"tls_context": context, "require_starttls": True}
        if scheme == "smtp+starttls"
        else {"ssl_context": context}
    )
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        # aiosmtpd only counts STARTTLS as TLS for AUTH; with implicit TLS it is TLS anyway.
        auth_require_tls=scheme == "smtp+starttls",
        authenticator=server.controller.SMTP_kwargs["authenticator"],
        server_hostname="localhost",
        **options,
    )
    controller.start()
    try:
        url = (
            f"{scheme}://user:secret@127.0.0.1:{controller.port}"
            "?timeout=5&helo=client.test&tls_verify=false"
        )
        pool = SmtpRelayPool(
            parse_relay_url(url), max_connections=2, max_messages_per_connection=50
        )
        results = await pool.send_many(envelopes(6))
        await pool.close()
    finally:
        controller.stop()
    assert kinds(results) == ["sent"] * 6, results[0].response
    assert server.tls_mail == [True] * 6  # type: ignore[attr-defined]
    assert server.logins[-1] == ("user", "secret")
    assert sorted(server.recipients()) == sorted(e.rcpt_to for e in envelopes(6))


async def test_an_idle_timeout_goodbye_is_not_taken_for_a_refusal(
    relay: CountingSmtpServer,
) -> None:
    # Postfix closes idle sessions with "421 4.4.2 … timeout exceeded", written before our
    # next MAIL FROM arrives: that reply is the goodbye, not the relay refusing mail.
    pool = make_pool(relay, connections=1)
    assert kinds(await pool.send_many(envelopes(1))) == ["sent"]
    relay.goodbye_next_mail = True
    results = await pool.send_many(envelopes(1))
    await pool.close()
    assert kinds(results) == ["sent"]
    assert pool.connections_opened == 2
    assert pool.healthy
