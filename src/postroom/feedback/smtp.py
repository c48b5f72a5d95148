"""The inbound SMTP receiver (aiosmtpd) for the bounce and reply domains.

It runs on the caller's event loop (``postroom inbound`` on its own, or inside ``serve``
when ``POSTROOM_INBOUND_PORT`` is set), so it shares the database engine with the rest of
the process. It is an MX for two domains only: a recipient on any other domain gets
``550`` (never an open relay); a message over ``POSTROOM_INBOUND_MAX_MESSAGE_BYTES`` gets
``552`` from aiosmtpd before it is stored.

Every accepted message is answered ``250`` once it is handled — bounces, complaints and
replies, but also unclassifiable or broken mail, which is kept for inspection. Only when
even keeping it failed (the database is down) is the answer ``451``, so the sender retries.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from aiosmtpd.smtp import SMTP

from postroom.context import AppContext
from postroom.delivery.transport import Transport
from postroom.feedback.inbound import InboundMail, InboundProcessor

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 50


class InboundHandler:
    """aiosmtpd handler: RCPT checks the domain, DATA hands the message over."""

    def __init__(self, processor: InboundProcessor, domains: set[str]) -> None:
        self.processor = processor
        self.domains = {d.lower().rstrip(".") for d in domains}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower().rstrip(".")
        if domain not in self.domains:
            return "550 5.7.1 relaying denied: not a domain this server receives mail for"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        mail = InboundMail(
            # aiosmtpd gives a null reverse-path (a bounce's sender) as "<>".
            mail_from=str(envelope.mail_from or "").strip().removeprefix("<").removesuffix(">"),
            rcpt_tos=[str(r) for r in envelope.rcpt_tos],
            data=bytes(content),
        )
        try:
            handled = await self.processor.handle(mail)
        except Exception:  # handle() never raises; this is the last line of defence
            log.exception("inbound handler failed")
            return "451 4.3.0 temporary failure, try again later"
        if handled.outcome == "error" and handled.kept_id is None:
            return "451 4.3.0 temporary failure, try again later"
        return "250 OK"


class _LenientSMTP(SMTP):
    # RFC 5321 caps lines at 1000 octets, but bounce generators quote the failed message
    # as they got it and some write longer lines; refusing the report would lose it.
    line_length_limit = 16 * 1024


class InboundServer:
    """Start and stop the receiver on the running loop. ``port`` 0 picks a free port
    (``bound_port`` tells which)."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        host: str | None = None,
        port: int | None = None,
        transport: Transport | None = None,
    ) -> None:
        settings = ctx.settings
        self.host = host or settings.inbound_host
        self.port = settings.inbound_port if port is None else port
        if self.port is None:
            raise ValueError("no inbound port: set POSTROOM_INBOUND_PORT or pass one")
        self.processor = InboundProcessor(ctx, transport=transport)
        self.domains = {settings.effective_bounce_domain, settings.effective_reply_domain}
        self.handler = InboundHandler(self.processor, self.domains)
        self.max_bytes = settings.inbound_max_message_bytes
        self._server: asyncio.Server | None = None
        self.bound_port: int | None = None

    def _protocol(self) -> SMTP:
        return _LenientSMTP(
            self.handler,
            data_size_limit=self.max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=sorted(self.domains)[0],
            ident="Postroom inbound",
            timeout=60,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # SO_REUSEPORT lets several `serve` processes of one machine share the port.
        reuse = hasattr(socket, "SO_REUSEPORT") and self.port != 0
        self._server = await loop.create_server(
            self._protocol, self.host, self.port, reuse_port=reuse or None
        )
        sockets = self._server.sockets or ()
        self.bound_port = int(sockets[0].getsockname()[1]) if sockets else self.port
        log.info("inbound SMTP on %s:%s for %s", self.host, self.bound_port, self.domains)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.processor.close()
