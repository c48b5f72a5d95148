"""Settings, read from ``POSTROOM_*`` environment variables (and a ``.env`` file).

Nothing is built at import time: ``get_settings()`` builds a fresh ``Settings`` and
``resolve_secrets()`` settles the secret key, generating one into the data dir only in
development on SQLite. Production, or any PostgreSQL database (which implies several
processes sharing one key), refuses to start without ``POSTROOM_SECRET_KEY``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from postroom.errors import ConfigurationError

SECRET_KEY_FILE = "secret_key"
MIN_SECRET_KEY_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POSTROOM_", env_file=".env", extra="ignore", validate_default=True
    )

    env: Literal["development", "production"] = "development"
    database_url: str | None = None
    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    base_url: str | None = None
    secret_key: SecretStr | None = None
    old_secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    smtp_url: str | None = None
    bounce_domain: str | None = None
    reply_domain: str | None = None
    inbound_port: int | None = None

    # Background work.
    worker_concurrency: int = Field(4, ge=1, le=256)
    worker_claim_batch: int = Field(50, ge=1, le=5000)
    worker_lease_seconds: int = Field(60, ge=5)
    worker_poll_seconds: float = Field(0.5, gt=0)
    job_lease_seconds: int = Field(120, ge=5)
    job_max_attempts: int = Field(5, ge=1)

    # Delivery: retries back off exponentially from the base, capped, until the lifetime
    # (counted from when the delivery was queued) runs out and the delivery fails.
    delivery_retry_base_seconds: int = Field(60, ge=1)
    delivery_retry_max_seconds: int = Field(6 * 3600, ge=1)
    delivery_lifetime_hours: int = Field(72, ge=1)
    # A relay that fails itself (auth, refused connection, 421) rests this long.
    relay_pause_seconds: int = Field(60, ge=1)
    smtp_max_connections: int = Field(4, ge=1, le=200)
    smtp_messages_per_connection: int = Field(100, ge=1)

    # HTTP.
    idempotency_ttl_hours: int = Field(24, ge=1)
    db_pool_size: int = Field(10, ge=1)
    log_level: str = "info"

    @field_validator("old_secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the async driver SQLAlchemy needs."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'postroom.db').as_posix()}"
        return async_database_url(url)

    @property
    def is_postgresql(self) -> bool:
        return self.sqlalchemy_url.startswith("postgresql")

    @property
    def public_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def effective_bounce_domain(self) -> str:
        if self.bounce_domain:
            return self.bounce_domain
        host = self.public_base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        return f"bounces.{host}" if "." in host else "bounces.localhost"

    @property
    def effective_reply_domain(self) -> str:
        return self.reply_domain or self.effective_bounce_domain

    def resolve_secrets(self) -> Settings:
        """Settle the secret key; returns self for chaining.

        Development on SQLite may generate and persist a key in the data dir. Production
        or PostgreSQL without ``POSTROOM_SECRET_KEY`` is a configuration error.
        """
        if self.secret_key is not None:
            if len(self.secret_key.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
                raise ConfigurationError(
                    f"POSTROOM_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters"
                )
            return self
        if self.env == "production":
            raise ConfigurationError("POSTROOM_SECRET_KEY is required when POSTROOM_ENV=production")
        if self.is_postgresql:
            raise ConfigurationError(
                "POSTROOM_SECRET_KEY is required with PostgreSQL: every process must share it"
            )
        self.secret_key = SecretStr(load_or_create_dev_secret(self.data_dir))
        return self

    @property
    def signing_keys(self) -> list[bytes]:
        """Current key first, then old ones (verification and decryption only)."""
        if self.secret_key is None:
            raise ConfigurationError("secret key not resolved; call resolve_secrets() first")
        keys = [self.secret_key.get_secret_value()]
        keys += [k.get_secret_value() for k in self.old_secret_keys]
        return [k.encode() for k in keys]


def async_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` and ``sqlite://`` URLs and pick the async driver."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def load_or_create_dev_secret(data_dir: Path) -> str:
    path = data_dir / SECRET_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # Created with 0600 so other local users cannot read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def get_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
