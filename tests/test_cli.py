"""The ``postroom`` command, run as a user runs it: a real process on a fresh data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.smtp_server import free_port

POSTROOM = [sys.executable, "-m", "postroom"]


def _run(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env["POSTROOM_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [*POSTROOM, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def test_workspaces_and_keys_commands(tmp_path: Path) -> None:
    created = _run(tmp_path, "workspaces", "create", "acme")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_")
    assert "acme" in _run(tmp_path, "workspaces", "list").stdout
    scoped = _run(
        tmp_path, "keys", "create", "--workspace", "acme", "--scopes", "contacts:read,lists:write"
    )
    assert scoped.stdout.strip().splitlines()[-1].startswith("sk_")
    public = _run(tmp_path, "keys", "create", "--workspace", "acme", "--public")
    assert public.stdout.strip().splitlines()[-1].startswith("pk_")
    admin = _run(tmp_path, "keys", "create", "--admin")
    assert admin.stdout.strip().splitlines()[-1].startswith("ak_")
    listing = _run(tmp_path, "keys", "list", "--workspace", "acme").stdout
    assert listing.count("secret") == 2
    assert "public" in listing
    key_id = scoped.stdout.split()[1]
    assert "revoked" in _run(tmp_path, "keys", "revoke", key_id).stdout
    bad = _run(
        tmp_path, "keys", "create", "--workspace", "acme", "--scopes", "nope:read", check=False
    )
    assert bad.returncode != 0
    assert "unknown scopes" in bad.stderr + bad.stdout
    missing = _run(tmp_path, "keys", "create", "--workspace", "ghost", check=False)
    assert missing.returncode != 0
    assert "not found" in missing.stderr + missing.stdout
    assert "re-encrypted 0" in _run(tmp_path, "secrets", "rotate").stdout


def test_production_without_secret_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATA_DIR=str(tmp_path), POSTROOM_ENV="production")
    result = subprocess.run(
        [*POSTROOM, "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "POSTROOM_SECRET_KEY" in result.stderr


def test_serve_first_start_prints_keys_and_answers(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATA_DIR=str(tmp_path / "var"), POSTROOM_PORT=str(port), COLUMNS="200")
    proc = subprocess.Popen(
        [*POSTROOM, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("serve did not answer /healthz")
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after a graceful shutdown
    assert proc.returncode in (0, -signal.SIGTERM), output
    keys = {
        line.split(":")[0].strip(): line.split()[-1]
        for line in output.splitlines()
        if "key (" in line
    }
    admin = keys["admin key (workspaces)"]
    workspace = keys["workspace key (every scope)"]
    assert admin.startswith("ak_")
    assert workspace.startswith("sk_")
    assert (tmp_path / "var" / "postroom.db").exists()
    assert (tmp_path / "var" / "secret_key").exists()
