"""An in-process SMTP server (aiosmtpd) for tests.

It records every accepted message, and can be told to answer chosen codes for chosen
recipients or commands, or to drop the connection at a chosen point:

    smtp.behaviour.rcpt_replies["bad@example.com"] = "550 5.1.1 no such user"
    smtp.behaviour.mail_reply = "421 4.3.2 shutting down"
    smtp.behaviour.data_reply = "451 4.3.0 try later"
    smtp.behaviour.drop_at = "rcpt" | "data" | "after_data"
    smtp.behaviour.auth_fail = True       # every AUTH answers 535
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpBehaviour:
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    rcpt_reply_fn: Callable[[str], str | None] | None = None
    mail_reply: str | None = None
    data_reply: str | None = None
    drop_at: str | None = None  # "mail" | "rcpt" | "data" | "after_data"
    auth_fail: bool = False


class RecordingHandler:
    def __init__(self, server: TestSmtpServer) -> None:
        self.server = server

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        behaviour = self.server.behaviour
        if behaviour.drop_at == "mail":
            server.transport.close()
            return "421 closing"
        if behaviour.mail_reply:
            return behaviour.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        behaviour = self.server.behaviour
        if behaviour.drop_at == "rcpt":
            server.transport.close()
            return "421 closing"
        reply = behaviour.rcpt_replies.get(address.lower())
        if reply is None and behaviour.rcpt_reply_fn is not None:
            reply = behaviour.rcpt_reply_fn(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        behaviour = self.server.behaviour
        if behaviour.drop_at == "data":
            server.transport.close()
            return "421 closing"
        if behaviour.data_reply:
            return behaviour.data_reply
        message = ReceivedMessage(
            envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)
        )
        with self.server.lock:
            self.server.messages.append(message)
        if behaviour.drop_at == "after_data":
            # The message is in, but the client never hears so: an "uncertain" outcome.
            server.transport.abort()
            return "250 never seen"
        return "250 OK queued"


class TestSmtpServer:
    __test__ = False  # not a pytest test class

    def __init__(self, *, require_auth: bool = False) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.behaviour = SmtpBehaviour()
        self.messages: list[ReceivedMessage] = []
        self.lock = threading.Lock()
        self.logins: list[tuple[str, str]] = []

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            if self.behaviour.auth_fail or not isinstance(auth_data, LoginPassword):
                return AuthResult(success=False, handled=False)
            self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
            return AuthResult(success=True)

        self.controller = Controller(
            RecordingHandler(self),
            hostname=self.host,
            port=self.port,
            authenticator=authenticator,
            auth_require_tls=False,
            auth_required=require_auth,
        )

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
        self.behaviour = SmtpBehaviour()

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def recipients(self) -> list[str]:
        with self.lock:
            return [rcpt for msg in self.messages for rcpt in msg.rcpt_tos]
