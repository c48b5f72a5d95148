"""The receiver as it is run: ``postroom inbound`` as a real process, and ``serve``'s app
starting it in its lifespan when POSTROOM_INBOUND_PORT is set."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi import FastAPI

from postroom.app import create_app
from postroom.config import Settings
from postroom.context import AppContext
from tests.conftest import make_settings
from tests.support.smtp_server import free_port

POSTROOM = [sys.executable, "-m", "postroom"]
QUESTION = (
    b"From: someone@example.org\r\nTo: info@bounces.cli.test\r\n"
    b"Subject: hello there\r\nMessage-ID: <q@example.org>\r\n\r\nWho are you?\r\n"
)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env["POSTROOM_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "250"
    env["POSTROOM_BOUNCE_DOMAIN"] = "bounces.cli.test"
    return env


def _wait_for_port(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the receiver never listened")


def test_inbound_command_receives_lists_and_stops(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*POSTROOM, "inbound", "--port", str(port)],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, process)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            assert smtp.sendmail("someone@example.org", ["info@bounces.cli.test"], QUESTION) == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                smtp.sendmail("someone@example.org", ["victim@example.com"], QUESTION)
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=60)
        assert process.returncode == 0, errors
        assert f"inbound SMTP on 127.0.0.1:{port}" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    listed = subprocess.run(
        [*POSTROOM, "inbound-list"], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert "hello there" in listed.stdout
    assert "unclassified" in listed.stdout
    stats = subprocess.run(
        [*POSTROOM, "inbound-stats"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stats.returncode == 0, stats.stderr
    assert "kept" in stats.stdout


def test_inbound_command_needs_a_port(tmp_path: Path) -> None:
    result = subprocess.run(
        [*POSTROOM, "inbound"], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "POSTROOM_INBOUND_PORT" in result.stderr + result.stdout


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path, inbound_port=free_port())


async def test_serve_starts_the_receiver_when_a_port_is_set(
    ctx: AppContext, settings: Settings
) -> None:
    app: FastAPI = create_app(settings, ctx=ctx)
    port = settings.inbound_port
    assert port is not None

    def send() -> dict[str, object]:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            return dict(
                smtp.sendmail(
                    "someone@example.org", [f"info@{settings.effective_bounce_domain}"], QUESTION
                )
            )

    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(send) == {}
    # Stopped with the app: nothing listens any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
