"""The Maildir capture transport and the capture browser's helpers."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from postroom.delivery.maildir import MaildirTransport, list_messages, read_message
from postroom.delivery.outcomes import OutcomeKind
from postroom.delivery.transport import Envelope
from postroom.errors import NotFound


def message(subject: str, to: str = "Ann <ann@example.com>") -> bytes:
    return (
        f"From: News <news@sender.example>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Mon, 02 Mar 2026 09:00:00 +0000\r\nMessage-ID: <m@sender.example>\r\n"
        "\r\nHello.\r\n"
    ).encode()


def envelope(delivery_id: str, subject: str = "Hi", rcpt: str = "ann@example.com") -> Envelope:
    return Envelope("bounces@sender.example", rcpt, message(subject), delivery_id)


async def test_every_message_lands_in_new_and_is_sent(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "capture")
    batch = [envelope(f"d{i}", subject=f"Message {i}") for i in range(450)]  # > one batch
    results = await transport.send_many(batch)
    await transport.close()
    assert [r.delivery_id for r in results] == [e.delivery_id for e in batch]
    assert {r.outcome.kind for r in results} == {OutcomeKind.SENT}
    assert not any(r.outcome.suppress for r in results)
    names = os.listdir(tmp_path / "capture" / "new")
    assert len(names) == 450
    assert os.listdir(tmp_path / "capture" / "tmp") == []
    assert os.listdir(tmp_path / "capture" / "cur") == []
    seconds, delivery_id, host = sorted(names)[0].split(".", 2)
    assert seconds.isdigit() and delivery_id.startswith("d") and host
    assert sorted(r.response.removeprefix("250 ") for r in results) == sorted(names)


async def test_the_file_is_the_message_with_its_envelope(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path)
    [result] = await transport.send_many([envelope("d1", rcpt="real@example.com")])
    name = result.response.removeprefix("250 ")
    raw = read_message(tmp_path, name)
    assert raw.endswith(message("Hi"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Return-Path"] == "<bounces@sender.example>"
    assert parsed["Delivered-To"] == "real@example.com"
    assert parsed["Subject"] == "Hi"


async def test_the_same_delivery_twice_gets_two_files(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path)
    first = await transport.send_many([envelope("same-id")])
    second = await transport.send_many([envelope("same-id")])
    assert first[0].response != second[0].response
    assert len(os.listdir(tmp_path / "new")) == 2


async def test_unsafe_characters_in_ids_do_not_escape_the_folder(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "box")
    [result] = await transport.send_many([envelope("../../etc/x:2,S")])
    name = result.response.removeprefix("250 ")
    assert "/" not in name and ":" not in name
    assert os.listdir(tmp_path) == ["box"]
    assert read_message(tmp_path / "box", name).endswith(b"Hello.\r\n")


async def test_readers_only_ever_see_complete_files(tmp_path: Path) -> None:
    # Poll new/ from another thread while big messages are written: every file seen
    # there must already be whole (written in tmp/, then linked in).
    body = b"x" * 2_000_000
    data = message("big") + body
    seen_sizes: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        new = tmp_path / "new"
        while not stop.is_set():
            if new.is_dir():
                for entry in os.scandir(new):
                    with contextlib.suppress(FileNotFoundError):
                        seen_sizes.append(entry.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        transport = MaildirTransport(tmp_path)
        await transport.send_many(
            [Envelope("b@sender.example", "ann@example.com", data, f"d{i}") for i in range(8)]
        )
        await asyncio.sleep(0.05)
    finally:
        stop.set()
        watcher.join()
    full = len(data) + len(b"Return-Path: <b@sender.example>\r\nDelivered-To: ann@example.com\r\n")
    assert seen_sizes, "the watcher never saw a file"
    assert set(seen_sizes) == {full}


async def test_list_messages_newest_first_with_paging(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path)
    await transport.send_many([envelope("0001", subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=")])
    await transport.send_many([envelope("0002", subject="Second")])
    await transport.send_many([envelope("0003", subject="Third")])
    # A mail client may have moved one into cur/ with flags; it still lists.
    newest = sorted(os.listdir(tmp_path / "new"))[-1]
    os.rename(tmp_path / "new" / newest, tmp_path / "cur" / f"{newest}:2,S")

    listed = list_messages(tmp_path, limit=10, offset=0)
    assert [m.subject for m in listed] == ["Third", "Second", "Grüße"]
    first = listed[0]
    assert first.to == "Ann <ann@example.com>"
    assert first.from_ == "News <news@sender.example>"
    assert first.date == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert first.size == first.path.stat().st_size
    assert first.name.endswith(":2,S")
    assert read_message(tmp_path, first.name) == first.path.read_bytes()

    assert [m.subject for m in list_messages(tmp_path, limit=1, offset=1)] == ["Second"]
    assert list_messages(tmp_path, limit=5, offset=3) == []
    assert list_messages(tmp_path / "missing", limit=5, offset=0) == []
    with pytest.raises(ValueError, match="negative"):
        list_messages(tmp_path, limit=-1, offset=0)


async def test_a_message_without_usual_headers_still_lists(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path)
    await transport.send_many([Envelope("b@x.example", "c@y.example", b"\r\nbody only\r\n", "d1")])
    [summary] = list_messages(tmp_path, limit=5, offset=0)
    assert (summary.subject, summary.from_, summary.date) == ("", "", None)
    assert summary.to == "c@y.example"  # falls back to the envelope recipient


@pytest.mark.parametrize(
    "name",
    [
        "../secret.txt",
        "../../secret.txt",
        "..",
        ".",
        "",
        "/etc/passwd",
        "new/../../secret.txt",
        "..%2Fsecret.txt",
        "secret.txt\x00",
        ".hidden",
    ],
)
def test_read_message_refuses_anything_but_a_message_name(tmp_path: Path, name: str) -> None:
    root = tmp_path / "capture"
    (root / "new").mkdir(parents=True)
    (tmp_path / "secret.txt").write_bytes(b"do not read")
    (root / "new" / ".hidden").write_bytes(b"hidden")
    with pytest.raises(NotFound):
        read_message(root, name)


def test_read_message_refuses_a_symlink_out_of_the_maildir(tmp_path: Path) -> None:
    root = tmp_path / "capture"
    (root / "new").mkdir(parents=True)
    (tmp_path / "secret.txt").write_bytes(b"do not read")
    (root / "new" / "123.link.host").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(NotFound):
        read_message(root, "123.link.host")


def test_read_message_of_a_missing_name_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="captured message"):
        read_message(tmp_path, "1700000000.nothing.host")
