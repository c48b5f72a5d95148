"""A pool of SMTP connections to one relay, and a weighted choice among relays.

Each envelope is one SMTP transaction (MAIL, RCPT, DATA) on a reused connection. The
commands are issued one by one, not through ``sendmail``, so the pool knows which stage
failed and whether the payload had gone out: a connection lost after the payload is
``uncertain`` (the message may be delivered), before it is ``deferred``.

When the relay itself fails (refused connection, AUTH rejected, MAIL FROM rejected, 421)
the pool marks itself unhealthy and answers the rest of the batch, and every later batch,
with ``relay_error`` without trying them, until the engine calls :meth:`reset_health`.
A broken relay is not hammered once per recipient.

aiosmtplib opens each connection (TLS, EHLO, STARTTLS, AUTH); the transactions then run
on a small client of our own over the same transport (:class:`_Session`), because
aiosmtplib reads one reply per command written and so cannot pipeline. When the relay
advertises PIPELINING (RFC 2920) a transaction is two round trips: ``MAIL FROM``,
``RCPT TO`` and ``DATA`` in one write, then the payload; each reply is still checked in
order, so the stage that failed is known exactly as without pipelining.
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
from typing import cast

import aiosmtplib

from postroom.delivery.mime import WireReady
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
_REPLY_LIMIT = 64 * 1024
_DETAIL_LIMIT = 1000


def wire_payload(data: bytes) -> bytes:
    """The bytes sent after ``354``: CRLF line endings, dot-stuffed, ending ``.\\r\\n``."""
    if type(data) is WireReady:
        return data + b".\r\n"  # the builder's output: nothing to rewrite
    # The builder's output is CRLF already: three C-level counts prove it, where the
    # regex would rewrite 20 KB per message for nothing.
    crlf = data.count(b"\r\n")
    if crlf != data.count(b"\n") or crlf != data.count(b"\r"):
        data = _LINE_ENDINGS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    return data + b".\r\n"


class _Session:
    """The transaction side of one SMTP connection, on asyncio streams.

    Built from an aiosmtplib client after its handshake: the transport is handed to a
    ``StreamReaderProtocol``, so replies can be read line by line without a task or a
    future per reply, and several commands can be written before reading their replies.
    """

    __slots__ = ("eight_bit", "pipelining", "reader", "smtputf8", "transport", "writer")

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        transport = client.transport
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("connection lost after the handshake")
        loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader(limit=_REPLY_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(self.reader, loop=loop)
        # The relay says nothing until the next command, so no reply is lost here.
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        self.transport = transport
        self.writer = asyncio.StreamWriter(
            cast(asyncio.WriteTransport, transport), protocol, self.reader, loop
        )
        self.pipelining = client.supports_extension("pipelining")
        self.eight_bit = client.supports_extension("8bitmime")
        self.smtputf8 = client.supports_extension("smtputf8")

    @property
    def is_connected(self) -> bool:
        return not self.transport.is_closing() and not self.reader.at_eof()

    def write(self, data: bytes) -> None:
        if self.transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        self.writer.write(data)

    async def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: its code and its text, lines joined by LF."""
        lines: list[bytes] = []
        while True:
            try:
                line = await self.reader.readline()
            except (asyncio.LimitOverrunError, ValueError) as exc:
                self.close()
                raise aiosmtplib.SMTPServerDisconnected("reply line too long") from exc
            if not line.endswith(b"\n"):
                self.close()
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            code = line[:3]
            if not code.isdigit():
                self.close()
                raise aiosmtplib.SMTPServerDisconnected(f"not an SMTP reply: {line[:80]!r}")
            lines.append(line[4:].rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return int(code), b"\n".join(lines).decode("utf-8", "replace")

    async def rset(self) -> bool:
        """End an open transaction so the connection can carry the next one."""
        try:
            self.write(b"RSET\r\n")
            code, _ = await self.reply()
        except Exception:
            return False
        return code == 250 and self.is_connected

    async def quit(self) -> None:
        with contextlib.suppress(Exception):  # a failed goodbye changes nothing
            async with asyncio.timeout(_QUIT_TIMEOUT):
                self.write(b"QUIT\r\n")
                await self.reply()
        self.close()

    def close(self) -> None:
        self.transport.close()


class _Connection:
    __slots__ = ("busy", "from_idle", "session", "transactions")

    def __init__(self, session: _Session) -> None:
        self.session = session
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
            if workers == 1:
                await self._work(batch)  # no task for a single connection's worth
            else:
                await asyncio.gather(*(self._work(batch) for _ in range(workers)))
        return [
            result if result is not None else self._untried(batch.envelopes[index])
            for index, result in enumerate(batch.results)
        ]

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(conn.session.quit() for conn in idle))

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
                conn.session.close()
            elif conn.transactions >= self.max_messages_per_connection:
                worker.conn = None
                await conn.session.quit()
            if not retry:
                return _result(envelope, attempt.outcome, attempt.response, started)
            retried = True

    async def _transaction(self, conn: _Connection, envelope: Envelope) -> _Attempt:
        conn.transactions += 1
        conn.busy = True
        attempt = await self._attempt(conn.session, envelope)
        conn.busy = False
        return attempt

    async def _attempt(self, session: _Session, envelope: Envelope) -> _Attempt:
        stage: Stage = "mail"
        data_sent = False
        opened = False  # MAIL FROM went out: a transaction may be open on the relay
        try:
            _require_bare(envelope.mail_from, envelope.rcpt_to)
            mail, stage = _mail_command(session, envelope), "rcpt"
            rcpt, stage = _rcpt_command(session, envelope), "mail"
            async with asyncio.timeout(self.config.timeout):
                opened = True
                if session.pipelining:
                    session.write(mail + rcpt + b"DATA\r\n")
                    stage, error = await _pipelined_replies(session)
                    if error is not None:
                        raise error
                else:
                    session.write(mail)
                    _check(await session.reply(), "mail")
                    stage = "rcpt"
                    session.write(rcpt)
                    _check(await session.reply(), "rcpt")
                    stage = "data"
                    session.write(b"DATA\r\n")
                    _check(await session.reply(), "data")
                session.write(wire_payload(envelope.data))
                data_sent = True
                code, text = await session.reply()
        except aiosmtplib.SMTPResponseException as exc:
            outcome = classify_exception(exc, stage=stage, data_sent=data_sent)
            # The relay answered; the connection survives unless it said 421 (closing).
            # After a final DATA reply the transaction is over; before it, RSET ends it.
            reusable = exc.code != 421 and session.is_connected
            if reusable and not data_sent:
                reusable = await session.rset()
            # A 421 as the "reply" to MAIL on an idle connection is usually the relay's
            # idle-timeout goodbye, sent before our command arrived: nothing was sent,
            # so it is tried once more on a fresh connection (see _send_one).
            stale = exc.code == 421 and stage == "mail"
            return _Attempt(outcome, outcome.detail, reusable, stale=stale)
        except (aiosmtplib.SMTPServerDisconnected, TimeoutError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                exc = aiosmtplib.SMTPReadTimeoutError("timed out waiting for the relay's reply")
            outcome = classify_exception(exc, stage=stage, data_sent=data_sent)
            stale = stage == "mail" and isinstance(exc, aiosmtplib.SMTPServerDisconnected)
            return _Attempt(outcome, outcome.detail, reusable=False, stale=stale)
        except Exception as exc:
            # An address that cannot be encoded and the like: caught before anything
            # went on the wire, so the connection is as clean as before.
            outcome = classify_exception(exc, stage=stage, data_sent=data_sent)
            reusable = session.is_connected and (not opened or await session.rset())
            return _Attempt(outcome, outcome.detail, reusable)
        outcome = classify_reply(code, text, stage="data")
        reusable = session.is_connected and outcome.kind is not OutcomeKind.RELAY_ERROR
        if code == 421:
            reusable = False
        return _Attempt(outcome, outcome.detail, reusable)

    # -- connections --

    async def _checkout(self, batch: _Batch) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.session.is_connected:
                conn.from_idle = True
                return conn
            conn.session.close()
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
            session = _Session(client)
        except Exception as exc:
            client.close()
            outcome = classify_exception(exc, stage=stage, data_sent=False)
            # No session means the relay failed, whatever an odd reply code suggests.
            outcome = replace(outcome, kind=OutcomeKind.RELAY_ERROR, suppress=False)
            raise _OpenFailed(outcome) from exc
        self.connections_opened += 1
        return _Connection(session)

    async def _release(self, conn: _Connection) -> None:
        if conn.busy or not conn.session.is_connected:
            conn.session.close()  # cancelled mid-transaction: never reuse it
        elif self._closed or not self._healthy:
            await conn.session.quit()
        else:
            self._idle.append(conn)

    def _mark_unhealthy(self, detail: str) -> None:
        self._healthy = False
        self._proven = False
        self._last_error = detail
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.session.close()

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


def _mail_command(session: _Session, envelope: Envelope) -> bytes:
    options = b""
    if session.eight_bit and not envelope.data.isascii():
        options += b" BODY=8BITMIME"
    # A non-ASCII address needs SMTPUTF8; without it the ASCII encode fails -> failed.
    if session.smtputf8 and not (envelope.mail_from.isascii() and envelope.rcpt_to.isascii()):
        options += b" SMTPUTF8"
    return b"MAIL FROM:<" + _address(session, envelope.mail_from) + b">" + options + b"\r\n"


def _rcpt_command(session: _Session, envelope: Envelope) -> bytes:
    return b"RCPT TO:<" + _address(session, envelope.rcpt_to) + b">\r\n"


def _address(session: _Session, address: str) -> bytes:
    if address.isascii():
        return address.encode("ascii")
    if not session.smtputf8:
        raise UnicodeEncodeError(
            "ascii", address, 0, len(address), "the relay does not offer SMTPUTF8"
        )
    return address.encode("utf-8")


_EXPECTED: dict[Stage, tuple[int, ...]] = {"mail": (250,), "rcpt": (250, 251), "data": (354,)}
_REFUSED: dict[Stage, type[aiosmtplib.SMTPResponseException]] = {
    "mail": aiosmtplib.SMTPResponseException,
    "rcpt": aiosmtplib.SMTPResponseException,
    "data": aiosmtplib.SMTPDataError,
}


def _check(reply: tuple[int, str], stage: Stage) -> None:
    code, text = reply
    if code not in _EXPECTED[stage]:
        raise _REFUSED[stage](code, text)


_PIPELINED: tuple[Stage, Stage, Stage] = ("mail", "rcpt", "data")


async def _pipelined_replies(session: _Session) -> tuple[Stage, Exception | None]:
    """Read the replies to a pipelined MAIL, RCPT and DATA. All three are read even when
    one is a refusal, so the connection stays in step. Returns the stage reached and the
    error to raise for it: the first refusal, else a lost connection, else ``None``."""
    replies: list[tuple[int, str]] = []
    lost: tuple[Stage, Exception] | None = None
    for stage in _PIPELINED:
        try:
            replies.append(await session.reply())
        except aiosmtplib.SMTPServerDisconnected as exc:
            lost = (stage, exc)
            break
    refused = next(
        (
            (stage, reply)
            for stage, reply in zip(_PIPELINED, replies, strict=False)
            if reply[0] not in _EXPECTED[stage]
        ),
        None,
    )
    if refused is None:
        return lost if lost is not None else ("data", None)
    if lost is None and replies[2][0] == 354:
        # The relay took DATA though MAIL or RCPT failed (RFC 2920 allows it): end it
        # with an empty message, which it cannot deliver to no recipient.
        with contextlib.suppress(aiosmtplib.SMTPServerDisconnected):
            session.write(b".\r\n")
            await session.reply()
    stage, (code, text) = refused
    return stage, _REFUSED[stage](code, text)


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
