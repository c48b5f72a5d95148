"""Response bodies of the analytics routes."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field


class Engagement(BaseModel):
    total: int = Field(description="every open/click recorded, people and machines")
    human: int
    machine: int = Field(description="privacy proxies (Apple MPP) and security scanners")
    unique: int = Field(description="recipients with at least one")
    unique_human: int = Field(description="recipients with at least one made by a person")


class Counters(BaseModel):
    sent: int
    delivered: int = Field(description="sent minus those that bounced later (DSN)")
    deferred: int
    bounced: int = Field(description="at the relay, or later by DSN")
    late_bounced: int = Field(description="bounced after having been sent")
    complained: int
    failed: int
    skipped: int
    unsubscribed: int
    replied: int
    opens: Engagement
    clicks: Engagement

    @classmethod
    def of(cls, c: dict[str, int]) -> Counters:
        def engagement(kind: str) -> Engagement:
            total, machine = c[kind], c[f"machine_{kind}"]
            return Engagement(
                total=total,
                human=total - machine,
                machine=machine,
                unique=c[f"unique_{kind}"],
                unique_human=c[f"unique_human_{kind}"],
            )

        return cls(
            sent=c["sent"],
            delivered=c["sent"] - c["late_bounced"],
            deferred=c["deferred"],
            bounced=c["bounced"],
            late_bounced=c["late_bounced"],
            complained=c["complained"],
            failed=c["failed"],
            skipped=c["skipped"],
            unsubscribed=c["unsubscribed"],
            replied=c["replied"],
            opens=engagement("opens"),
            clicks=engagement("clicks"),
        )


class Rates(BaseModel):
    """Fractions (0–1). Engagement rates are over ``delivered``; ``bounce`` is over the
    messages the relay was asked to take (sent plus bounced at the relay)."""

    open: float
    human_open: float
    click: float
    human_click: float
    click_to_open: float
    unsubscribe: float
    complaint: float
    bounce: float

    @classmethod
    def of(cls, c: dict[str, int]) -> Rates:
        delivered = c["sent"] - c["late_bounced"]
        attempted = c["sent"] + c["bounced"] - c["late_bounced"]

        def ratio(n: int, d: int) -> float:
            return round(n / d, 4) if d > 0 else 0.0

        return cls(
            open=ratio(c["unique_opens"], delivered),
            human_open=ratio(c["unique_human_opens"], delivered),
            click=ratio(c["unique_clicks"], delivered),
            human_click=ratio(c["unique_human_clicks"], delivered),
            click_to_open=ratio(c["unique_clicks"], c["unique_opens"]),
            unsubscribe=ratio(c["unsubscribed"], delivered),
            complaint=ratio(c["complained"], delivered),
            bounce=ratio(c["bounced"], attempted),
        )


class HourBucket(Counters):
    hour: datetime


class DomainRow(Counters):
    domain: str


class CampaignStats(BaseModel):
    campaign_id: uuid.UUID
    totals: Counters
    rates: Rates
    hourly: list[HourBucket] = Field(description="UTC hours; unique = first seen that hour")
    domains: list[DomainRow] = Field(description="recipient domains, most sent first")


class LinkStats(BaseModel):
    link_id: str
    url: str
    clicks: int
    human_clicks: int
    machine_clicks: int
    unique_clicks: int


class LinkClicker(BaseModel):
    contact_id: uuid.UUID | None
    email: str
    clicks: int
    machine_clicks: int
    first_clicked_at: datetime
    last_clicked_at: datetime


class DaySummary(Counters):
    day: date


class WorkspaceSummary(BaseModel):
    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    totals: Counters
    rates: Rates
    days: list[DaySummary]


class EngagementEvent(BaseModel):
    id: uuid.UUID
    type: str
    occurred_at: datetime
    send_id: str | None
    data: dict[str, Any]


class ContactEngagementSummary(BaseModel):
    sent: int
    bounced: int
    complained: int
    unsubscribed: int
    replied: int
    opens: int
    clicks: int
    messages_opened: int
    messages_opened_by_person: int
    messages_clicked: int
    messages_clicked_by_person: int
    last_opened_at: datetime | None
    last_clicked_at: datetime | None


class ContactEngagement(BaseModel):
    contact_id: uuid.UUID
    summary: ContactEngagementSummary
    data: list[EngagementEvent]
    next_cursor: str | None
