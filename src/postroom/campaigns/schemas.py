"""Request and response bodies of the campaigns API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from postroom.contacts.audience import Audience
from postroom.messages.schemas import Mailbox

MAX_TEST_RECIPIENTS = 5


class ContentIn(BaseModel):
    """Exactly one source: ``template_id`` (its published locale variants, frozen when
    sending starts and chosen per contact by locale), ``version_id`` (exactly that
    published version) or inline ``subject`` with ``html`` and/or ``text``."""

    model_config = ConfigDict(extra="forbid")

    template_id: uuid.UUID | None = None
    version_id: uuid.UUID | None = None
    subject: str | None = Field(None, max_length=998)
    html: str | None = Field(None, max_length=1_000_000)
    text: str | None = Field(None, max_length=1_000_000)
    preheader: str | None = Field(None, max_length=998)


class SendCalendar(BaseModel):
    """When the campaign may send, in its timezone: ISO weekdays (1 = Monday) and the
    hours ``[start_hour, end_hour)``. Outside, the campaign waits and resumes by itself."""

    model_config = ConfigDict(extra="forbid")

    weekdays: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])
    start_hour: int = Field(0, ge=0, le=23)
    end_hour: int = Field(24, ge=1, le=24)

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one weekday (1 = Monday … 7 = Sunday)")
        if any(day < 1 or day > 7 for day in value):
            raise ValueError("weekdays are 1 (Monday) to 7 (Sunday)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _hours(self) -> SendCalendar:
        if self.end_hour <= self.start_hour:
            raise ValueError("end_hour must be after start_hour")
        return self


class CampaignFields(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, min_length=1, max_length=200)
    content: ContentIn | None = None
    subject: str | None = Field(
        None, max_length=998, description="Overrides the subject of the content"
    )
    from_: Mailbox | None = Field(None, alias="from")
    reply_to: str | None = Field(None, max_length=320)
    audience: Audience | None = None
    track_opens: bool | None = None
    track_clicks: bool | None = None
    timezone: str | None = Field(None, max_length=64, examples=["Europe/Paris"])
    tags: list[str] | None = Field(None, max_length=20)
    send_calendar: SendCalendar | None = None


class CampaignCreate(CampaignFields):
    name: str = Field(min_length=1, max_length=200)
    content: ContentIn
    from_: Mailbox = Field(alias="from")


class CampaignUpdate(CampaignFields):
    """Only the fields given change; ``send_calendar: null`` removes the calendar."""


class ScheduleIn(BaseModel):
    """``scheduled_at`` with an offset (``2027-03-01T09:00:00+01:00``) is an instant; without
    one it is a local time in ``timezone`` (default: the campaign's). A local time that does
    not exist (a DST gap) is refused; one that happens twice (a DST overlap) is its first
    occurrence unless ``fold`` is 1."""

    model_config = ConfigDict(extra="forbid")

    scheduled_at: datetime
    timezone: str | None = Field(None, max_length=64)
    fold: Literal[0, 1] = 0


class TestSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    emails: list[str] = Field(description="1 to 5 addresses")
    contact_id: uuid.UUID | None = Field(None, description="Render for this contact")
    data: dict[str, Any] = Field(
        default_factory=dict, description="Sample variables (used when no contact is chosen)"
    )


class TestSendOut(BaseModel):
    send_ids: list[uuid.UUID]
    emails: list[str]


class ContentOut(BaseModel):
    template_id: uuid.UUID | None = None
    version_id: uuid.UUID | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    preheader: str | None = None


class Progress(BaseModel):
    total: int = 0
    queued: int = 0
    sending: int = 0
    sent: int = 0
    deferred: int = 0
    uncertain: int = 0
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    cancelled: int = 0
    rate_per_second: float = Field(0.0, description="Messages sent per second, last minute")
    eta_seconds: float | None = Field(None, description="Remaining / rate; null when idle")


class CampaignOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: uuid.UUID
    name: str
    status: str
    content: ContentOut
    subject: str | None
    from_: Mailbox = Field(serialization_alias="from")
    reply_to: str | None
    audience: dict[str, Any]
    track_opens: bool
    track_clicks: bool
    timezone: str
    tags: list[str]
    send_calendar: SendCalendar | None
    scheduled_at: datetime | None
    send_id: uuid.UUID | None
    fanout_job_id: uuid.UUID | None
    recipients: int | None = Field(None, description="Deliveries made by the fan-out")
    failure_reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime
    progress: Progress | None = Field(None, description="Present once sending started")


class CampaignAccepted(CampaignOut):
    """202 of ``…/send``: the campaign, its send and the fan-out job to poll."""


class AudienceOut(BaseModel):
    size: int
    locales: dict[str, int] = Field(description="Audience contacts per locale")
    coverage: dict[str, str | None] = Field(
        description="For each audience locale, the template locale it will receive"
    )
    uncovered: int = Field(description="Contacts that get the default locale (no match)")


class DeliveryOut(BaseModel):
    id: uuid.UUID
    contact_id: uuid.UUID | None
    email: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    message_id: str | None
    smtp_response: str | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime
