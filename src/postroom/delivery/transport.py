"""The seam between the delivery engine and whatever carries mail out.

An SMTP relay pool, the Maildir capture and any test double all implement
:class:`Transport`. The engine hands over a batch of envelopes and gets one
:class:`SendResult` per envelope back, in order; a transport reports per-message
problems as outcomes and never raises for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from postroom.delivery.outcomes import Outcome


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str  # the envelope sender (the VERP Return-Path), not the From header
    rcpt_to: str
    data: bytes  # the complete, signed RFC 5322 message
    delivery_id: str


@dataclass(frozen=True, slots=True)
class SendResult:
    delivery_id: str
    outcome: Outcome
    response: str  # the relay's last reply (e.g. "250 2.0.0 Ok: queued as X"), or the error
    elapsed_ms: float


class Transport(Protocol):
    async def send_many(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        """One result per envelope, in order; never raises for per-message problems."""
        ...

    async def close(self) -> None:
        """Release connections and files; the transport is not used afterwards."""
        ...
