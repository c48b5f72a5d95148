"""The SMTP relay pool against a real (in-process aiosmtpd) server."""

from __future__ import annotations

import asyncio
import random
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

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.server.mail_by_peer[session.peer] += 1
        if self.server.mail_delay:
            await asyncio.sleep(self.server.mail_delay)
        if self.server.drop_next_mail:
            # A relay that timed out an idle connection: the next command finds it gone.
            self.server.drop_next_mail = False
            server.transport.close()
            return "421 closing"
        return await super().handle_MAIL(server, session, envelope, address, options)


class CountingSmtpServer(TestSmtpServer):
    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.mail_by_peer: Counter[Any] = Counter()
        self.drop_next_mail = False
        self.mail_delay = 0.0
        self.controller.handler = _CountingHandler(self)

    def reset(self) -> None:
        super().reset()
        self.mail_by_peer.clear()
        self.drop_next_mail = False
        self.mail_delay = 0.0

    @property
    def connections(self) -> int:
        return len(self.mail_by_peer)


@pytest.fixture(scope="module")
def counting_server() -> Iterator[CountingSmtpServer]:
    server = CountingSmtpServer()
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
