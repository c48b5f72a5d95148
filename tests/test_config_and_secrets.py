"""Configuration rules, signed tokens and encrypted stored secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, insert, select

from postroom.config import Settings, async_database_url
from postroom.context import AppContext
from postroom.errors import ConfigurationError
from postroom.security.rotation import rotate_stored_secrets
from postroom.security.secret_box import SecretBox
from postroom.security.tokens import TokenSigner


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_development_generates_and_reuses_a_secret(tmp_path: Path) -> None:
    first = _settings(data_dir=tmp_path).resolve_secrets()
    key_file = tmp_path / "secret_key"
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = _settings(data_dir=tmp_path).resolve_secrets()
    assert first.secret_key is not None and second.secret_key is not None
    assert first.secret_key.get_secret_value() == second.secret_key.get_secret_value()


def test_production_requires_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="POSTROOM_SECRET_KEY"):
        _settings(data_dir=tmp_path, env="production").resolve_secrets()
    assert not (tmp_path / "secret_key").exists()


def test_postgresql_requires_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        _settings(data_dir=tmp_path, database_url="postgresql://u@h/db").resolve_secrets()


def test_short_secret_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="at least"):
        _settings(data_dir=tmp_path, secret_key="short").resolve_secrets()


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POSTROOM_PORT", "9001")
    monkeypatch.setenv("POSTROOM_OLD_SECRET_KEYS", "a" * 32 + ", " + "b" * 32)
    monkeypatch.setenv("POSTROOM_WORKER_CONCURRENCY", "7")
    settings = _settings(data_dir=tmp_path, secret_key="c" * 40)
    assert settings.port == 9001
    assert settings.worker_concurrency == 7
    assert [k.get_secret_value() for k in settings.old_secret_keys] == ["a" * 32, "b" * 32]
    assert settings.public_base_url == "http://127.0.0.1:9001"
    assert settings.signing_keys[0] == b"c" * 40


def test_database_urls() -> None:
    assert async_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert async_database_url("sqlite:///var/x.db") == "sqlite+aiosqlite:///var/x.db"


def test_tokens_verify_with_old_keys_and_refuse_forgeries() -> None:
    old = TokenSigner([b"old-key" * 5], "unsubscribe")
    token = old.sign(b"delivery-42")
    rotated = TokenSigner([b"new-key" * 5, b"old-key" * 5], "unsubscribe")
    assert rotated.verify(token) == b"delivery-42"
    assert TokenSigner([b"new-key" * 5], "unsubscribe").verify(token) is None
    assert TokenSigner([b"old-key" * 5], "click").verify(token) is None  # purpose-bound
    body, mac = token.rsplit(".", 1)
    assert rotated.verify(body[:-1] + ("A" if body[-1] != "A" else "B") + "." + mac) is None
    for junk in ["", ".", "abc", "a.b.c", "%%%.***", "x" * 5000]:
        assert rotated.verify(junk) is None


def test_secret_box_decrypts_with_old_keys() -> None:
    old_box = SecretBox([b"old" * 12])
    sealed = old_box.encrypt("relay-password")
    box = SecretBox([b"new" * 12, b"old" * 12])
    assert box.decrypt(sealed) == "relay-password"
    assert not box.is_current(sealed)
    assert box.is_current(box.rotate(sealed))
    with pytest.raises(ConfigurationError, match="OLD_SECRET_KEYS"):
        SecretBox([b"new" * 12]).decrypt(sealed)


async def test_rotate_stored_secrets(ctx: AppContext) -> None:
    metadata = MetaData()
    table = Table(
        "rotation_probe",
        metadata,
        Column("id", String(10), primary_key=True),
        Column("secret", String(500)),
    )
    async with ctx.db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        old_box = SecretBox([b"old" * 12])
        box = SecretBox([b"new" * 12, b"old" * 12])
        async with ctx.db.transaction() as session:
            await session.execute(
                insert(table),
                [{"id": str(i), "secret": old_box.encrypt(f"s{i}")} for i in range(7)]
                + [{"id": "cur", "secret": box.encrypt("already")}, {"id": "none", "secret": None}],
            )
        columns: list[tuple[object, str, str]] = [(table, "id", "secret")]
        async with ctx.db.transaction() as session:
            assert await rotate_stored_secrets(session, box, columns, batch=3) == 7
        async with ctx.db.transaction() as session:
            assert await rotate_stored_secrets(session, box, columns) == 0
            rows = dict((await session.execute(select(table.c.id, table.c.secret))).all())
        new_only = SecretBox([b"new" * 12])
        assert {k: new_only.decrypt(v) for k, v in rows.items() if v} == {
            **{str(i): f"s{i}" for i in range(7)},
            "cur": "already",
        }
    finally:
        async with ctx.db.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
