"""Custom events (``POST /v1/events``): the Mailglyph/Plunk ``/v1/track`` body.

A name is 1-100 printable characters without spaces at either end; names starting with
``email.``, ``contact.``, ``campaign.``, ``sequence.``, ``import.``, ``export.`` or
``webhook.`` are Postroom's own and refused.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from postroom.events.service import RESERVED_PREFIXES, is_reserved

NAME_MAX = 100
DATA_MAX_BYTES = 16_384
BATCH_MAX = 100


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a custom event name, or ``None``."""
    if not name or len(name) > NAME_MAX:
        return f"an event name is 1 to {NAME_MAX} characters"
    if name != name.strip() or any(not char.isprintable() for char in name):
        return "an event name is printable characters without spaces at either end"
    if is_reserved(name):
        return (
            f"'{name}' is reserved: names starting with {', '.join(RESERVED_PREFIXES)} "
            "are Postroom's own events"
        )
    return None


class TrackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320, examples=["ada@example.com"])
    event: str = Field(examples=["signed_up"])
    data: dict[str, Any] = Field(default_factory=dict, description="Stored with the event")
    subscribed: bool | None = Field(
        None,
        description="Status of a contact created by this call (default: subscribed). An "
        "existing contact's subscription is never changed here.",
    )

    @field_validator("event")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("data")
    @classmethod
    def _size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > DATA_MAX_BYTES:
            raise ValueError(f"data is at most {DATA_MAX_BYTES} bytes of JSON")
        return value


class TrackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[TrackEvent] = Field(min_length=1, max_length=BATCH_MAX)


class ContactRef(BaseModel):
    id: uuid.UUID
    email: str
    created: bool = Field(description="The call created the contact")


class TrackedEvent(BaseModel):
    id: uuid.UUID
    event: str
    contact: ContactRef
    data: dict[str, Any]
    occurred_at: datetime


class TrackedBatch(BaseModel):
    data: list[TrackedEvent]
