"""Request and response bodies for SMTP relays. A relay's password is write-only: the
URL is always shown with it masked as ``***``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from postroom.models.relays import MAX_WEIGHT

RateLimit = Annotated[int, Field(ge=1, le=1_000_000_000)]

_URL_HELP = (
    "`smtp://`, `smtp+starttls://` or `smtps://`, with optional `user:password@` "
    "(URL-encoded) and `?timeout=`, `tls_verify=`, `helo=`. In a PATCH, a password of "
    "`***` keeps the stored one."
)


class RelayCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2000,
        description=_URL_HELP,
        examples=["smtps://u:p@smtp.example.com"],
    )
    name: str | None = Field(None, min_length=1, max_length=100, description="default host:port")
    weight: int = Field(1, ge=1, le=MAX_WEIGHT, description="share of the workspace's mail")
    max_connections: int | None = Field(None, ge=1, le=200)
    max_messages_per_connection: int | None = Field(None, ge=1, le=1_000_000)
    enabled: bool = True
    per_second: RateLimit | None = Field(None, description="messages per second; null: unlimited")
    per_hour: RateLimit | None = None
    per_day: RateLimit | None = None


class RelayPatch(BaseModel):
    """Only the fields given change; ``null`` rate limits mean unlimited."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, min_length=1, max_length=2000, description=_URL_HELP)
    name: str | None = Field(None, min_length=1, max_length=100)
    weight: int | None = Field(None, ge=1, le=MAX_WEIGHT)
    max_connections: int | None = Field(None, ge=1, le=200)
    max_messages_per_connection: int | None = Field(None, ge=1, le=1_000_000)
    enabled: bool | None = None
    per_second: RateLimit | None = None
    per_hour: RateLimit | None = None
    per_day: RateLimit | None = None


class RelayOut(BaseModel):
    id: uuid.UUID
    name: str
    url: str = Field(description="The relay URL with the password masked as ***")
    host: str
    port: int
    tls: Literal["none", "starttls", "implicit"]
    username: str | None
    has_password: bool
    weight: int
    max_connections: int
    max_messages_per_connection: int
    enabled: bool
    per_second: int | None
    per_hour: int | None
    per_day: int | None
    created_at: datetime
    updated_at: datetime
