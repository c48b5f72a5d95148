"""Request and response bodies for contacts, lists, subscriptions and suppressions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from postroom.contacts.segments.schema import FilterCondition

ContactStatus = Literal["subscribed", "unsubscribed", "bounced", "complained"]
CONTACT_STATUS_VALUES: tuple[str, ...] = get_args(ContactStatus)


class ContactWrite(BaseModel):
    """A contact as the API takes it. Values are checked by ``contact_fields`` (the same
    rules as imports), so errors name the field exactly."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320)
    external_id: str | None = Field(None, max_length=255)
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    status: ContactStatus | None = None
    subscribed: bool | None = None
    attributes: dict[str, Any] | None = None
    opt_in: bool | None = None
    consent_source: str | None = None
    consent_version: str | None = None
    lists: list[uuid.UUID] = Field(default_factory=list, max_length=100)


class ContactPatch(BaseModel):
    """Partial update: absent fields stay; ``null`` clears a field; in ``attributes`` a
    ``null`` value deletes that key."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=320)
    external_id: str | None = Field(None, max_length=255)
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    status: ContactStatus | None = None
    attributes: dict[str, Any] | None = None
    opt_in: bool | None = None
    consent_source: str | None = None
    consent_version: str | None = None

    @field_validator("status")
    @classmethod
    def _status_cannot_be_cleared(cls, value: ContactStatus | None) -> ContactStatus | None:
        # Absent leaves the status alone; an explicit null would clear a column that has
        # no "no status" (validators do not run on the default, only on a null sent).
        if value is None:
            raise ValueError("cannot be cleared; send one of " + ", ".join(CONTACT_STATUS_VALUES))
        return value


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    external_id: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    status: str
    attributes: dict[str, Any]
    opt_in: bool | None
    consent_source: str | None
    consent_version: str | None
    consent_at: datetime | None
    created_at: datetime
    updated_at: datetime


class BulkUpsert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contacts: list[dict[str, Any]] = Field(min_length=1, max_length=1000)
    lists: list[uuid.UUID] = Field(default_factory=list, max_length=100)


class BulkRowResult(BaseModel):
    index: int
    status: Literal["created", "updated", "failed"]
    id: uuid.UUID | None = None
    errors: list[dict[str, str]] | None = None


class BulkUpsertResult(BaseModel):
    created: int
    updated: int
    failed: int
    results: list[BulkRowResult]


class BulkDelete(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)


class BulkDeleteResult(BaseModel):
    deleted: int
    not_found: list[uuid.UUID]


class ListWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    double_opt_in: bool = False


class ListPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    double_opt_in: bool | None = None


class ListOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    description: str | None
    is_default: bool
    double_opt_in: bool
    subscriber_count: int = 0
    unconfirmed_count: int = 0
    unsubscribed_count: int = 0
    created_at: datetime
    updated_at: datetime


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    list_id: uuid.UUID
    contact_id: uuid.UUID
    email: str | None = None
    status: str
    source: str | None
    created_at: datetime
    updated_at: datetime
    subscribed_at: datetime | None
    unsubscribed_at: datetime | None
    confirmed_at: datetime | None


class MembershipChange(BaseModel):
    """Whom to (un)subscribe: contact ids, emails, or a filter (run as a job)."""

    model_config = ConfigDict(extra="forbid")
    contact_ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    emails: list[str] = Field(default_factory=list, max_length=1000)
    filter: FilterCondition | None = None
    source: str | None = Field(None, max_length=64)


class MembershipResult(BaseModel):
    changed: int
    unchanged: int
    not_found: list[str] = Field(default_factory=list)
    job_id: uuid.UUID | None = None


class SuppressionWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320)
    reason: Literal["bounce", "complaint", "unsubscribe", "manual"] = "manual"
    note: str | None = Field(None, max_length=2000)


class SuppressionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    email: str | None
    reason: str
    note: str | None
    created_at: datetime
