"""Postfix's smtp-sink as the receiving end of sending benchmarks, and the two baselines
a sender is compared with, measured against the same sink with the same count and size.

Stable API (other benchmarks import it):

- ``with smtp_sink() as sink:`` starts ``smtp-sink`` on a free loopback port (it accepts
  PIPELINING, as Postfix does) and stops it on exit. ``sink.url`` is the relay URL for
  ``POSTROOM_SMTP_URL``, ``sink.host``/``sink.port`` the address, ``sink.received()`` the
  number of messages it has accepted so far (completed DATA), ``sink.wait_for(n, timeout)``
  waits until it has at least ``n``.
- ``smtp_source_rate(sink, count, size, sessions=…)`` runs Postfix's ``smtp-source`` (the
  reference sender: C, reusing connections) and returns messages per second.
- ``naive_sender_rate(sink, count, size)`` sends with the stdlib the way a script would:
  ``smtplib.SMTP`` over one connection, one ``EmailMessage`` built per recipient.

Both baselines count what the sink received, not what the sender believes it sent.
``python bench/_sink.py --quick`` runs both baselines once (a self-check).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
_COUNTER = re.compile(rb"mesg=(\d+)")


class SinkUnavailable(RuntimeError):
    """smtp-sink or smtp-source is missing: run ``scripts/ensure-bench-tools.sh``."""


def _require(path: str) -> str:
    if not (os.path.exists(path) and os.access(path, os.X_OK)):
        found = shutil.which(os.path.basename(path))
        if found is None:
            raise SinkUnavailable(
                f"{os.path.basename(path)} not found; run scripts/ensure-bench-tools.sh"
            )
        return found
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Sink:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    counter_file: Path

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def received(self) -> int:
        """Messages accepted so far. ``-c`` rewrites a ``sess=… quit=… mesg=N`` counter
        line (separated by carriage returns) after every completed DATA; the last one wins."""
        with open(self.counter_file, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256))
            found = _COUNTER.findall(handle.read())
        return int(found[-1]) if found else 0

    def wait_for(self, count: int, timeout: float = 60.0, poll: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.received() >= count:
                return True
            if self.process.poll() is not None:
                raise RuntimeError(f"smtp-sink exited with {self.process.returncode}")
            time.sleep(poll)
        return self.received() >= count

    def wait_idle(self, quiet: float = 0.5, timeout: float = 60.0) -> int:
        """Wait until the counter has not moved for ``quiet`` seconds; returns it."""
        deadline = time.monotonic() + timeout
        last, since = self.received(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now_count = self.received()
            if now_count != last:
                last, since = now_count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last


@contextmanager
def smtp_sink(host: str = "127.0.0.1", *, backlog: int = 1024) -> Iterator[Sink]:
    """smtp-sink on a free port of ``host``; stopped (and its counter file removed) on exit."""
    binary = _require(SMTP_SINK)
    with tempfile.TemporaryDirectory(prefix="postroom-sink-") as tmp:
        counter = Path(tmp) / "counter"
        for _attempt in range(5):
            port = free_port(host)
            command = [binary, "-c", "-4", "-m", "1024"]
            if os.geteuid() == 0:
                command += ["-u", "nobody"]  # smtp-sink refuses to run as root otherwise
            command += [f"{host}:{port}", str(backlog)]
            out = open(counter, "wb")  # noqa: SIM115 - closed below, after the process
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            if _listening(host, port, process):
                break
            process.kill()
            process.wait()
            out.close()
        else:
            raise RuntimeError("smtp-sink did not start; see its output in " + str(counter))
        sink = Sink(host, port, process, counter)
        try:
            yield sink
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            out.close()


def _listening(host: str, port: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5) as conn:
                conn.recv(512)  # the greeting; this test session then ends
            return True
        except OSError:
            time.sleep(0.02)
    return False


def smtp_source_rate(sink: Sink, count: int, size: int, *, sessions: int = 4) -> float:
    """Messages/s of Postfix's smtp-source: ``sessions`` parallel connections, each reused
    for many messages (``-d``), ``size`` bytes of body each."""
    binary = _require(SMTP_SOURCE)
    before = sink.received()
    started = time.perf_counter()
    subprocess.run(
        [
            binary,
            "-d",
            "-s",
            str(sessions),
            "-m",
            str(count),
            "-l",
            str(size),
            "-f",
            "bench@example.com",
            "-t",
            "rcpt@example.com",
            f"{sink.host}:{sink.port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not sink.wait_for(before + count, timeout=30):
        raise RuntimeError(f"smtp-sink got {sink.received() - before} of {count} messages")
    return count / (time.perf_counter() - started)


def naive_sender_rate(sink: Sink, count: int, size: int) -> float:
    """Messages/s of the script everyone writes first: stdlib ``EmailMessage`` per recipient
    and ``smtplib.SMTP.send_message`` over one connection."""
    body = ("x" * 75 + "\n") * max(1, size // 76)
    before = sink.received()
    started = time.perf_counter()
    with smtplib.SMTP(sink.host, sink.port) as smtp:
        for index in range(count):
            message = EmailMessage()
            message["From"] = "Bench <bench@example.com>"
            message["To"] = f"user{index}@example.com"
            message["Subject"] = f"Hello user {index}"
            message.set_content(body)
            smtp.send_message(message)
    if not sink.wait_for(before + count, timeout=30):
        raise RuntimeError(f"smtp-sink got {sink.received() - before} of {count} messages")
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few thousand messages")
    parser.add_argument("--size", type=int, default=4000, help="message body bytes")
    args = parser.parse_args()
    count = 2000 if args.quick else 20_000
    with smtp_sink() as sink:
        source = smtp_source_rate(sink, count, args.size)
        naive = naive_sender_rate(sink, count, args.size)
        total = sink.received()
    print(f"smtp-source  {source:10,.0f} msg/s  ({count:,} x {args.size:,} B, 4 sessions)")
    print(f"naive sender {naive:10,.0f} msg/s  (smtplib + EmailMessage, one connection)")
    print(f"sink received {total:,} messages")
    print(f"sink_baselines: {source:.0f} msg/s (x{source / naive:.1f} vs naive sender)")


if __name__ == "__main__":
    main()
