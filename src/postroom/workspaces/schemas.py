"""Request and response bodies for workspaces and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from postroom.security.api_keys import ALL_SCOPES, invalid_scopes

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$"


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, description="Unique name: letters, digits, space . _ -")


class WorkspaceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)


class WorkspaceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=100)
    kind: Literal["secret", "public"] = "secret"
    scopes: list[str] | None = Field(
        None, description="Scopes for a secret key; omitted means every scope."
    )

    @field_validator("scopes")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        bad = invalid_scopes(value)
        if bad:
            raise ValueError(f"unknown scopes {bad}; known scopes: {', '.join(ALL_SCOPES)}")
        return sorted(set(value))


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    kind: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself. Shown once: store it now.")


class WorkspaceCreated(WorkspaceOut):
    api_key: ApiKeyCreated
