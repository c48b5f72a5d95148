"""Capture mode: "send" every message into a Maildir instead of a relay.

For development, demos and staging: nothing leaves the machine, and the admin capture
browser lists what would have gone out. Each message is written to ``tmp/`` and then
linked into ``new/``, so a reader never sees half a file (the Maildir protocol). Names
are ``<unix seconds>.<delivery id>.<hostname>``; a second capture of the same delivery in
the same second gets a ``-2``, ``-3`` … suffix on the middle part.

The listing and reading helpers are synchronous file IO; async callers wrap them in
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import email.policy
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path

from postroom.delivery.outcomes import Outcome, OutcomeKind
from postroom.delivery.transport import Envelope, SendResult
from postroom.errors import NotFound

_WRITE_BATCH = 200  # messages per worker-thread hop: amortises the hop, keeps batches short
_HEADER_LIMIT = 64 * 1024  # headers are read from at most this much of a file
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # '/' and ':' would break the Maildir name
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._,:=-]{0,254}")
_FOLDERS = ("new", "cur")
_SENT = Outcome(OutcomeKind.SENT, 250, None, "250 captured to Maildir", False)
_HEADER_PARSER = BytesHeaderParser(policy=email.policy.default)


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    path: Path
    subject: str
    to: str
    from_: str
    date: datetime | None
    size: int

    @property
    def name(self) -> str:
        """What :func:`read_message` takes."""
        return self.path.name


class MaildirTransport:
    """Implements :class:`~postroom.delivery.transport.Transport`; every outcome is sent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._hostname = _UNSAFE.sub("_", socket.gethostname()) or "localhost"
        self._ready = False

    async def send_many(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        results: list[SendResult] = []
        for start in range(0, len(envelopes), _WRITE_BATCH):
            chunk = envelopes[start : start + _WRITE_BATCH]
            results.extend(await asyncio.to_thread(self._write_all, chunk))
        return results

    async def close(self) -> None:
        return None

    def _write_all(self, envelopes: Sequence[Envelope]) -> list[SendResult]:
        if not self._ready:
            for folder in ("tmp", "new", "cur"):
                (self.root / folder).mkdir(parents=True, exist_ok=True)
            self._ready = True
        results = []
        for envelope in envelopes:
            started = time.perf_counter()
            name = self._deliver(envelope)
            elapsed = (time.perf_counter() - started) * 1000
            results.append(SendResult(envelope.delivery_id, _SENT, f"250 {name}", elapsed))
        return results

    def _deliver(self, envelope: Envelope) -> str:
        # Like a local delivery agent, record the envelope: the capture browser shows
        # where the message was really going, whatever the To header says.
        content = (
            f"Return-Path: <{envelope.mail_from}>\r\nDelivered-To: {envelope.rcpt_to}\r\n"
        ).encode() + envelope.data
        unique = _UNSAFE.sub("_", envelope.delivery_id) or "message"
        seconds = int(time.time())
        for attempt in range(1, 1000):
            suffix = "" if attempt == 1 else f"-{attempt}"
            name = f"{seconds}.{unique}{suffix}.{self._hostname}"
            tmp = self.root / "tmp" / name
            try:
                descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            except FileExistsError:
                continue
            try:
                with os.fdopen(descriptor, "wb") as file:
                    # No fsync: a capture is not a delivery, and losing the last few
                    # to a power cut costs nothing but speed is felt in every demo.
                    file.write(content)
                # link() refuses an existing name where rename() would replace it.
                os.link(tmp, self.root / "new" / name)
            except FileExistsError:
                continue
            finally:
                tmp.unlink(missing_ok=True)
            return name
        raise RuntimeError(f"no free Maildir name for delivery {envelope.delivery_id}")


def list_messages(root: Path, limit: int = 50, offset: int = 0) -> list[CapturedMessage]:
    """Captured messages, newest first (names start with the capture time)."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    entries: list[tuple[str, Path]] = []
    for folder in _FOLDERS:
        directory = root / folder
        if not directory.is_dir():
            continue
        with os.scandir(directory) as scan:
            entries.extend((entry.name, Path(entry.path)) for entry in scan if entry.is_file())
    entries.sort(reverse=True)
    return [_summary(path) for _, path in entries[offset : offset + limit]]


def read_message(root: Path, name: str) -> bytes:
    """The raw bytes of one captured message; any name that is not one is NotFound."""
    return _locate(root, name).read_bytes()


def _locate(root: Path, name: str) -> Path:
    # Only plain Maildir names: no separators, no leading dot, so no "..", no absolute
    # paths; the resolved parent is checked too in case a folder is a symlink trap.
    if _NAME.fullmatch(name):
        for folder in _FOLDERS:
            directory = (root / folder).resolve()
            candidate = (directory / name).resolve()
            if candidate.parent == directory and candidate.is_file():
                return candidate
    raise NotFound("captured message", name)


def _summary(path: Path) -> CapturedMessage:
    with path.open("rb") as file:
        head = file.read(_HEADER_LIMIT)
        size = os.fstat(file.fileno()).st_size
    headers = _HEADER_PARSER.parsebytes(head)
    return CapturedMessage(
        path=path,
        subject=_header(headers, "Subject"),
        to=_header(headers, "To") or _header(headers, "Delivered-To"),
        from_=_header(headers, "From"),
        date=_date(_header(headers, "Date")),
        size=size,
    )


def _header(headers: Message, name: str) -> str:
    try:
        value = headers.get(name)
    except Exception:  # a malformed header must not hide the message from the list
        return ""
    return "" if value is None else " ".join(str(value).split())


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
