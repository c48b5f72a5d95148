"""Request and response bodies for outbound webhooks. The secret appears only in the
answers of create and rotate-secret."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DeliveryStatus = Literal["pending", "sending", "retrying", "succeeded", "failed"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, examples=["https://example.com/hooks"])
    event_types: list[str] = Field(
        min_length=1,
        max_length=100,
        description="Event types (`email.opened`), a category (`email.*`), custom event "
        "names, or `*` for everything",
        examples=[["email.*", "contact.unsubscribed"]],
    )
    description: str | None = Field(None, max_length=500)
    enabled: bool = True


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, min_length=1, max_length=2048)
    event_types: list[str] | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=500)
    enabled: bool | None = Field(
        None, description="Re-enabling an endpoint Postroom disabled clears the notice"
    )


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why Postroom disabled the endpoint (HTTP 410, or failing for 5 days)"
    )
    disabled_at: datetime | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="`whsec_…`; shown only now. Verify signatures with it.")


class WebhookDeliveryOut(BaseModel):
    id: uuid.UUID = Field(description="Also the `webhook-id` header")
    webhook_id: uuid.UUID
    kind: Literal["event", "test", "replay"]
    event_id: uuid.UUID | None
    event_type: str
    status: DeliveryStatus
    attempts: int
    response_status: int | None
    latency_ms: int | None
    error: str | None
    next_attempt_at: datetime | None = Field(description="When a retrying delivery is due")
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
