"""Request and response bodies for sending domains. Private keys never appear here."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from postroom.domains.dns import Purpose, RecordStatus

KeyBits = Literal[1024, 2048, 3072, 4096]


class DomainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(min_length=1, max_length=253, examples=["example.com"])
    selector: str | None = Field(
        None, max_length=63, description="DKIM selector; default `pr` + year and month"
    )
    bits: KeyBits = 2048


class DkimKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selector: str | None = Field(None, max_length=63)
    bits: KeyBits = 2048
    activate: bool = Field(
        False,
        description="Sign with the new key at once. By default it waits until a check sees "
        "its DNS record, and the current key keeps signing meanwhile.",
    )


class DnsRecordOut(BaseModel):
    purpose: Purpose
    type: Literal["TXT", "CNAME", "MX"]
    name: str
    value: str
    chunks: list[str] = Field(
        description="The value split into strings of at most 255 characters, for DNS "
        "providers that need long TXT values given that way"
    )
    selector: str | None = None
    status: RecordStatus
    found: list[str] = Field(default_factory=list, description="What the last check saw")
    detail: str = ""


class DkimKeyOut(BaseModel):
    id: uuid.UUID
    selector: str
    bits: int
    active: bool
    status: RecordStatus
    public_key: str
    created_at: datetime
    activated_at: datetime | None


RateLimit = Annotated[int, Field(ge=1, le=1_000_000_000)]


class DomainPatch(BaseModel):
    """Sending limits of mail from this domain (the From address); only the fields given
    change, ``null`` is unlimited."""

    model_config = ConfigDict(extra="forbid")

    per_second: RateLimit | None = None
    per_hour: RateLimit | None = None
    per_day: RateLimit | None = None


class DomainRateLimits(BaseModel):
    per_second: int | None
    per_hour: int | None
    per_day: int | None


class WarmupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_date: date | None = Field(None, description="The ramp's first day (UTC); default today")
    initial_per_day: int = Field(ge=1, le=100_000_000, description="The first day's cap")
    growth_factor: float = Field(
        ge=1.0, le=10.0, description="Each day's cap is the day before's times this"
    )
    max_per_day: int = Field(ge=1, le=1_000_000_000, description="Where the ramp ends")


class WarmupDay(BaseModel):
    date: date
    cap: int


class WarmupOut(BaseModel):
    start_date: date
    initial_per_day: int
    growth_factor: float
    max_per_day: int
    day: int = Field(description="Days since the start (0 on the first day and before it)")
    cap_today: int = Field(description="Messages from this domain allowed today (UTC)")
    completed: bool = Field(description="The cap has reached max_per_day")
    sent_today: int | None = Field(None, description="Granted so far today (on /warmup only)")
    schedule: list[WarmupDay] = Field(description="The cap of today and the following days")


class DomainOut(BaseModel):
    id: uuid.UUID
    domain: str
    return_path_domain: str
    dkim_selector: str | None = Field(description="The selector of the key that signs")
    spf_status: RecordStatus
    dkim_status: RecordStatus
    dmarc_status: RecordStatus
    return_path_status: RecordStatus
    verified: bool = Field(description="SPF, DKIM, DMARC and the return path all verified")
    checked_at: datetime | None
    created_at: datetime
    updated_at: datetime
    dkim_keys: list[DkimKeyOut]
    records: list[DnsRecordOut]
    rate_limits: DomainRateLimits
    warmup: WarmupOut | None = Field(description="The warm-up plan, if any, for the next 14 days")
