"""Response bodies of ``/v1/inbound``: inbound mail kept for inspection."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class InboundOut(BaseModel):
    id: uuid.UUID
    kind: Literal["unclassified", "error"] = Field(
        description="`unclassified`: not a bounce, complaint, unsubscribe or reply we could "
        "use (or about no delivery of ours); `error`: its handling failed, or a reply could "
        "not be forwarded"
    )
    reason: str
    mail_from: str = Field(description="The envelope sender (empty for a null sender)")
    rcpt_to: list[str]
    subject: str | None
    delivery_id: uuid.UUID | None = Field(description="The delivery it was matched to, if any")
    contact_id: uuid.UUID | None
    size: int = Field(description="Size of the whole message in bytes")
    truncated: bool = Field(description="Only the first POSTROOM_INBOUND_KEEP_BYTES were kept")
    received_at: datetime


class InboundDetail(InboundOut):
    raw: str = Field(description="The kept bytes, decoded as UTF-8 (undecodable bytes replaced)")
