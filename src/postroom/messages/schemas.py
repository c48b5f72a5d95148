"""Request and response bodies of the transactional messages API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_BATCH = 100


def _one_line(value: str | None) -> str | None:
    # These become header values: a line break would end the header (or start another),
    # and the message could never be sent. Refused here rather than at delivery.
    if value is not None and ("\r" in value or "\n" in value):
        raise ValueError("must be a single line (no CR or LF)")
    return value


OneLine = Annotated[str | None, AfterValidator(_one_line)]


class Mailbox(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320)
    name: OneLine = Field(None, max_length=255)


class BatchEntry(BaseModel):
    """One recipient of a batch; its ``variables`` override the request's."""

    model_config = ConfigDict(extra="forbid")

    to: str | Mailbox
    variables: dict[str, Any] | None = None


class MessageCreate(BaseModel):
    """One message to one recipient (``to``) or to up to 100 (``batch``), from a template
    (``template_id``: its published locale variants; ``template_version_id``: exactly that
    version) or inline (``subject`` with ``html`` and/or ``text``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str | Mailbox | None = None
    batch: list[BatchEntry] | None = Field(None, max_length=MAX_BATCH)
    template_id: uuid.UUID | None = None
    template_version_id: uuid.UUID | None = None
    subject: OneLine = Field(None, max_length=998)
    html: str | None = Field(None, max_length=1_000_000)
    text: str | None = Field(None, max_length=1_000_000)
    preheader: str | None = Field(None, max_length=998)
    from_: Mailbox = Field(alias="from")
    reply_to: str | None = Field(None, max_length=320)
    variables: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list, max_length=20)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Off by default: receipts and password resets should not carry a pixel or have
    # their links rewritten unless asked.
    track_opens: bool = False
    track_clicks: bool = False


class RecipientResult(BaseModel):
    email: str
    status: Literal["queued", "rejected"]
    reason: str | None = Field(
        None, description="Why a recipient was rejected: invalid_email, suppressed, duplicate"
    )
    detail: str | None = None
    delivery_id: uuid.UUID | None = None


class MessageAccepted(BaseModel):
    id: uuid.UUID
    created_at: datetime
    queued: int
    rejected: int
    recipients: list[RecipientResult]


class MessageEvent(BaseModel):
    type: str
    occurred_at: datetime
    data: dict[str, Any]


class MessageDelivery(BaseModel):
    id: uuid.UUID
    email: str
    contact_id: uuid.UUID | None
    status: str
    attempts: int
    next_attempt_at: datetime | None = Field(
        None, description="When a deferred or uncertain delivery is tried again"
    )
    message_id: str | None
    smtp_response: str | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime
    events: list[MessageEvent]


class MessageOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: uuid.UUID
    state: str
    from_: Mailbox = Field(alias="from")
    reply_to: str | None
    subject: str | None = Field(None, description="The inline subject; null for templates")
    template_id: uuid.UUID | None
    template_version_ids: dict[str, uuid.UUID] = Field(
        description="The template versions frozen for this message, by locale"
    )
    tags: list[str]
    metadata: dict[str, Any]
    track_opens: bool
    track_clicks: bool
    created_at: datetime
    counts: dict[str, int] = Field(description="Deliveries per status")
    deliveries: list[MessageDelivery]
