"""A pool of SMTP connections to one relay, and a weighted choice among relays.

Each envelope is one SMTP transaction (MAIL, RCPT, DATA) on a reused connection. The
commands are issued one by one, not through ``sendmail``, so the pool knows which stage
failed and whether the payload had gone out: a connection lost after the payload is
``uncertain`` (the message may be delivered), before it is ``deferred``.

When the relay itself fails (refused connection, AUTH rejected, MAIL FROM rejected, 421)
the pool marks itself unhealthy and answers the rest of the batch, and every later batch,
with ``relay_error`` without trying them, until the engine calls :meth:`reset_health`.
A broken relay is not hammered once per recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace

import aiosmtplib

from postroom.delivery.outcomes import (
    Outcome,
    OutcomeKind,
    Stage,
    classify_exception,
    classify_reply,
)
from postroom.delivery.relay_url import RelayConfig
from postroom.delivery.transport import Envelope, SendResult

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
# aiosmtplib runs addresses through parseaddr, which quietly turns "a@x> junk" into
# "a@x": a different recipient. Envelope addresses must arrive bare.
_NOT_BARE = re.compile(r"[\x00-\x20\x7f<>]")
_QUIT_TIMEOUT = 2.0
_DETAIL_LIMIT = 1000


def wire_payload(data: bytes) -> bytes:
    """The bytes sent after ``354``: CRLF line endings, dot-stuffed, ending ``.\\r\\n``."""
    data = _LINE_ENDINGS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"


class _Connection:
    __slots__ = ("busy", "client", "from_idle", "transactions")

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.transactions = 0
        self.from_idle = False  # taken from the idle list: the relay may have dropped it
        self.busy = False  # inside a transaction: if we stop here, the state is unknown


class _Worker:
    """What one worker holds, so a cancelled worker still releases its connection."""

    __slots__ = ("conn",)

    def __init__(self) -> None:
        self.conn: _Connection | None = None


class _OpenFailed(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


@dataclass(slots=True)
class _Attempt:
    outcome: Outcome
    response: str
    reusable: bool  # the connection is in a clean state for the next transaction
    stale: bool = False  # lost at MAIL before any reply: safe to retry on a new connection


class _Batch:
    def __init__(self, envelopes: Sequence[Envelope]) -> None:
        self.envelopes = envelopes
        self.results: list[SendResult | None] = [None] * len(envelopes)
        self.pending: Iterator[int] = iter(range(len(envelopes)))
        self.aborted = False


class SmtpRelayPool:
    """Implements :class:`~postroom.delivery.transport.Transport` over one SMTP relay."""

    def __init__(
        self, config: RelayConfig, *, max_connections: int, max_messages_per_connection: int
    ) -> None:
        if max_connections < 1 or max_messages_per_connection < 1:
            raise ValueError("max_connections and max_messages_per_connection must be >= 1")
        self.config = config
        self.max_connections = max_connections
        self.max_messages_per_connection = max_messages_per_connection
        self.connections_opened = 0  # for metrics
        self._slots = asyncio.Semaphore(max_connections)
        self._probe_lock = asyncio.Lock()
        self._idle: list[_Connection] = []
        self._healthy = True
        self._proven = False  # a connection has opened since the last health change
        self._last_error = ""
        self._local_hostname = config.helo
        self._closed = False

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def last_error(self) -> str:
        return self._last_error

    def reset_health(self) -> None:
        """Let the next batch try the relay again (the engine decides when)."""
        self._healthy = True
        self._proven = False

    async def send_many(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        batch = _Batch(envelopes)
        if self._healthy and not self._closed and envelopes:
            workers = min(self.max_connections, len(envelopes))
            await asyncio.gather(*(self._work(batch) for _ in range(workers)))
        return [
            result if result is not None else self._untried(batch.envelopes[index])
            for index, result in enumerate(batch.results)
        ]

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(conn) for conn in idle))

    # -- one worker holds one connection and takes envelopes until the batch is done --

    async def _work(self, batch: _Batch) -> None:
        async with self._slots:
            worker = _Worker()
            try:
                while not batch.aborted and self._healthy:
                    index = next(batch.pending, None)
                    if index is None:
                        break
                    result = await self._send_one(worker, batch, batch.envelopes[index])
                    if result is None:  # the relay failed while we waited to probe it
                        break
                    batch.results[index] = result
                    if result.outcome.kind is OutcomeKind.RELAY_ERROR:
                        batch.aborted = True
                        self._mark_unhealthy(result.outcome.detail)
            finally:
                if worker.conn is not None:
                    await self._release(worker.conn)

    async def _send_one(
        self, worker: _Worker, batch: _Batch, envelope: Envelope
    ) -> SendResult | None:
        started = time.perf_counter()
        retried = False
        while True:
            if worker.conn is None:
                try:
                    worker.conn = await self._checkout(batch)
                except _OpenFailed as failed:
                    return _result(envelope, failed.outcome, failed.outcome.detail, started)
                if worker.conn is None:
                    return None
            conn = worker.conn
            attempt = await self._transaction(conn, envelope)
            # An idle connection the relay had dropped: nothing was sent, try a fresh one.
            retry = attempt.stale and conn.from_idle and not retried
            conn.from_idle = False
            if not attempt.reusable:
                worker.conn = None
                conn.client.close()
            elif conn.transactions >= self.max_messages_per_connection:
                worker.conn = None
                await self._quit(conn)
            if not retry:
                return _result(envelope, attempt.outcome, attempt.response, started)
            retried = True

    async def _transaction(self, conn: _Connection, envelope: Envelope) -> _Attempt:
        client = conn.client
        conn.transactions += 1
        conn.busy = True
        attempt = await self._attempt(client, envelope)
        conn.busy = False
        return attempt

    async def _attempt(self, client: aiosmtplib.SMTP, envelope: Envelope) -> _Attempt:
        stage: Stage = "mail"
        data_sent = False
        try:
            _require_bare(envelope.mail_from, envelope.rcpt_to)
            options, encoding = _mail_options(client, envelope)
            await client.mail(envelope.mail_from, options=options, encoding=encoding)
            stage = "rcpt"
            await client.rcpt(envelope.rcpt_to, encoding=encoding)
            stage = "data"
            start = await client.execute_command(b"DATA")
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol = client.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost before the message")
            # aiosmtplib's data() sends DATA and the payload in one call, which hides
            # whether a lost connection happened before or after the payload went out.
            protocol.write(wire_payload(envelope.data))
            data_sent = True
            reply = await protocol.read_response(timeout=self.config.timeout)
        except aiosmtplib.SMTPResponseException as exc:
            outcome = classify_exception(exc, stage=stage, data_sent=data_sent)
            # The relay answered; the connection survives unless it said 421 (closing).
            # After a final DATA reply the transaction is over; before it, RSET ends it.
            reusable = exc.code != 421 and client.is_connected
            if reusable and not data_sent:
                reusable = await _rset(client)
            return _Attempt(outcome, outcome.detail, reusable)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            outcome = classify_exception(exc, stage=stage, data_sent=data_sent)
            stale = stage == "mail" and isinstance(exc, aiosmtplib.SMTPServerDisconnected)
            return _Attempt(outcome, outcome.detail, reusable=False, stale=stale)
        except Exception as exc:
            # An address that cannot be encoded and the like: nothing went on the wire
            # for it, but the transaction may be open, so RSET before reuse.
            outcome = classify_exception(exc, stage=stage, data_sent=data_sent)
            reusable = not data_sent and client.is_connected and await _rset(client)
            return _Attempt(outcome, outcome.detail, reusable)
        outcome = classify_reply(reply.code, reply.message, stage="data")
        reusable = client.is_connected and outcome.kind is not OutcomeKind.RELAY_ERROR
        return _Attempt(outcome, outcome.detail, reusable)

    # -- connections --

    async def _checkout(self, batch: _Batch) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.client.is_connected:
                conn.from_idle = True
                return conn
            conn.client.close()
        if self._proven:
            return await self._open()
        # Until one connection has worked, open them one at a time: when the relay is
        # down, the first failure stops the batch instead of every worker hitting it.
        async with self._probe_lock:
            if batch.aborted or not self._healthy:
                return None
            conn = await self._open()
            self._proven = True
            return conn

    async def _open(self) -> _Connection:
        config = self.config
        if self._local_hostname is None:
            # getfqdn may query DNS; once per pool, off the event loop.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            timeout=config.timeout,
            use_tls=config.tls == "implicit",
            start_tls=False,
            validate_certs=config.verify_tls,
            local_hostname=self._local_hostname,
        )
        stage: Stage = "connect"
        try:
            await client.connect()
            stage = "ehlo"
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
            if config.tls == "starttls":
                await client.starttls()
            if config.username is not None:
                stage = "auth"
                await client.login(config.username, config.password or "")
        except Exception as exc:
            client.close()
            outcome = classify_exception(exc, stage=stage, data_sent=False)
            # No session means the relay failed, whatever an odd reply code suggests.
            outcome = replace(outcome, kind=OutcomeKind.RELAY_ERROR, suppress=False)
            raise _OpenFailed(outcome) from exc
        self.connections_opened += 1
        return _Connection(client)

    async def _release(self, conn: _Connection) -> None:
        if conn.busy or not conn.client.is_connected:
            conn.client.close()  # cancelled mid-transaction: never reuse it
        elif self._closed or not self._healthy:
            await self._quit(conn)
        else:
            self._idle.append(conn)

    async def _quit(self, conn: _Connection) -> None:
        with contextlib.suppress(Exception):  # a failed goodbye changes nothing
            await conn.client.quit(timeout=_QUIT_TIMEOUT)
        conn.client.close()

    def _mark_unhealthy(self, detail: str) -> None:
        self._healthy = False
        self._proven = False
        self._last_error = detail
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.client.close()

    def _untried(self, envelope: Envelope) -> SendResult:
        detail = f"not attempted: the relay is paused ({self._last_error or 'closed'})"
        outcome = Outcome(OutcomeKind.RELAY_ERROR, None, None, detail[:_DETAIL_LIMIT], False)
        return SendResult(envelope.delivery_id, outcome, outcome.detail, 0.0)


def _result(envelope: Envelope, outcome: Outcome, response: str, started: float) -> SendResult:
    elapsed = (time.perf_counter() - started) * 1000
    return SendResult(envelope.delivery_id, outcome, response, elapsed)


def _require_bare(*addresses: str) -> None:
    for address in addresses:
        if _NOT_BARE.search(address):
            raise ValueError(f"{address!r} is not a bare envelope address")


def _mail_options(client: aiosmtplib.SMTP, envelope: Envelope) -> tuple[list[str], str]:
    options: list[str] = []
    encoding = "ascii"
    if not envelope.data.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    # A non-ASCII address needs SMTPUTF8; without it the ASCII encode fails -> failed.
    ascii_addresses = envelope.mail_from.isascii() and envelope.rcpt_to.isascii()
    if not ascii_addresses and client.supports_extension("smtputf8"):
        options.append("SMTPUTF8")
        encoding = "utf-8"
    return options, encoding


async def _rset(client: aiosmtplib.SMTP) -> bool:
    """End an open transaction so the connection can carry the next one."""
    try:
        reply = await client.rset()
    except Exception:
        return False
    return reply.code == 250 and client.is_connected


class WeightedRelayChooser:
    """Pick a relay at random in proportion to its weight, among the healthy ones."""

    def __init__(
        self, relays: Sequence[tuple[str, int]], *, rng: random.Random | None = None
    ) -> None:
        names = [name for name, _ in relays]
        if len(set(names)) != len(names):
            raise ValueError("relay names must be unique")
        if any(weight < 0 for _, weight in relays):
            raise ValueError("relay weights must not be negative")
        self._relays = list(relays)
        self._rng = rng or random.Random()  # load spreading, not security

    def choose(self, healthy: Collection[str]) -> str | None:
        """A healthy relay with a positive weight, or None when there is none."""
        candidates = [(name, weight) for name, weight in self._relays if name in healthy]
        candidates = [(name, weight) for name, weight in candidates if weight > 0]
        if not candidates:
            return None
        names = [name for name, _ in candidates]
        weights = [weight for _, weight in candidates]
        return self._rng.choices(names, weights=weights)[0]
