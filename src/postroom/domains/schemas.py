"""Request and response bodies for sending domains. Private keys never appear here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

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
