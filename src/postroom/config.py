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
    inbound_port: int | None = Field(None, ge=0, le=65535)
    inbound_host: str = "127.0.0.1"
    # Inbound mail (feedback): the SMTP size limit, how much of a kept message is stored,
    # and soft bounces: this many for one address within this many days suppress it.
    inbound_max_message_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    inbound_keep_bytes: int = Field(256 * 1024, ge=1024)
    soft_bounce_limit: int = Field(3, ge=1)
    soft_bounce_days: int = Field(30, ge=1)

    # Background work.
    worker_concurrency: int = Field(4, ge=1, le=256)
    # Per-batch work (claim, load, outcome write, commit) is shared by the batch: 200 sends
    # ~40 % faster than 50 (bench/send_campaign.py). The price: after a kill -9, up to
    # concurrency x batch messages that went out but were not yet recorded go out again.
    worker_claim_batch: int = Field(200, ge=1, le=5000)
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
    # Workers re-read workspaces' relay rows and sending domains' limits at most this often.
    relay_refresh_seconds: float = Field(5.0, ge=0)
    smtp_max_connections: int = Field(4, ge=1, le=200)
    smtp_messages_per_connection: int = Field(100, ge=1)

    # Campaigns: contacts per fan-out chunk (one INSERT … SELECT and one commit each);
    # how long workers may trust a send's state (cancel/pause stop mail within this);
    # how long a campaign may go without one delivery reaching a relay before it fails.
    campaign_fanout_chunk: int = Field(20_000, ge=100, le=1_000_000)
    # PostgreSQL only: chunks inserted side by side (one connection each); SQLite has
    # one writer and runs them one after another.
    campaign_fanout_parallel: int = Field(2, ge=1, le=16)
    campaign_state_cache_seconds: float = Field(1.0, ge=0, le=1.0)
    campaign_relay_fail_hours: float = Field(24.0, gt=0)

    # Double opt-in: unconfirmed subscriptions are removed after this long; the
    # confirmation mail's sender when the list names none (default: no-reply@ the
    # workspace's first sending domain, else the public host).
    double_opt_in_expiry_hours: int = Field(72, ge=1)
    double_opt_in_from: str | None = None

    # Outbound webhooks. Private, loopback and link-local targets are refused unless
    # allowed (a self-hosted install posting to its own LAN; the tests' local receiver).
    webhooks_allow_private: bool = False
    webhooks_timeout_seconds: float = Field(10.0, gt=0, le=60)
    webhooks_concurrency: int = Field(32, ge=1, le=512)  # requests in flight, all endpoints
    webhooks_endpoint_concurrency: int = Field(8, ge=1, le=64)  # … to one endpoint
    webhooks_claim_batch: int = Field(200, ge=1, le=5000)
    webhooks_outbox_batch: int = Field(2000, ge=1, le=50_000)
    # How long a hole in the events sequence (an uncommitted or rolled-back insert on
    # PostgreSQL) is waited for before it is taken as rolled back.
    webhooks_outbox_hole_seconds: int = Field(300, ge=1)

    # Analytics consumer: on PostgreSQL it reads only events whose seq was seen at least
    # this many seconds ago (a transaction may commit a lower seq after a higher one);
    # events per batch and batches per scheduler tick; a click this soon after the
    # message was sent is a security scanner's.
    analytics_lag_seconds: int = Field(10, ge=0)
    # (A batch holds SQLite's write lock while applied: 10,000 events take ~0.3 s here.)
    analytics_batch_size: int = Field(10_000, ge=1)
    analytics_batches_per_tick: int = Field(3, ge=1)
    analytics_scanner_click_seconds: int = Field(10, ge=0)

    # HTTP.
    idempotency_ttl_hours: int = Field(24, ge=1)
    db_pool_size: int = Field(10, ge=1)
    # SQLite page cache per connection (a process keeps up to 2 x db_pool_size).
    sqlite_cache_mb: int = Field(8, ge=1, le=4096)
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
