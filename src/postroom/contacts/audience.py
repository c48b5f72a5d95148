"""Who a send goes to: an audience compiled to one SELECT of contact ids.

Fan-out inserts from this query in one ``INSERT … SELECT`` (in chunks by contact id for huge
audiences), so every rule of who may be mailed lives here, in SQL:

- only contacts of the workspace, with status ``subscribed`` (never ``unsubscribed``,
  ``bounced`` or ``complained``), whatever the purpose;
- never an address whose hash is suppressed: any reason for marketing mail; for
  transactional mail only ``bounce``, ``complaint`` and ``manual`` (an ``unsubscribe``
  suppression blocks marketing mail only);
- with ``lists``: subscribed (status ``subscribed``, not ``unconfirmed`` or
  ``unsubscribed``) to at least one of them;
- ``segment_id`` and ``filter`` narrow further (everything given is ANDed);
- ``exclude_lists``: not subscribed to any of them; ``exclude_segment_id``: not in it.

An audience with no lists, segment or filter is every mailable contact of the workspace.
Segments are passed in already loaded (``segment_filters``), so this module runs no query.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, and_, exists, func, not_, select
from sqlalchemy.sql.elements import ColumnElement

from postroom.contacts.segments.compiler import compile_filter
from postroom.contacts.segments.schema import FilterCondition
from postroom.errors import NotFound
from postroom.models.contacts import (
    SUPPRESSION_REASONS,
    TRANSACTIONAL_BLOCKING_REASONS,
    Contact,
    Subscription,
    Suppression,
)

Purpose = Literal["marketing", "transactional"]
MAX_AUDIENCE_LISTS = 100


class Audience(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lists: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_AUDIENCE_LISTS)
    segment_id: uuid.UUID | None = None
    filter: FilterCondition | None = None
    exclude_lists: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_AUDIENCE_LISTS)
    exclude_segment_id: uuid.UUID | None = None

    def segment_ids(self) -> set[uuid.UUID]:
        """The segments whose filters ``audience_contact_ids`` needs."""
        return {s for s in (self.segment_id, self.exclude_segment_id) if s is not None}


def audience_where(
    audience: Audience,
    *,
    workspace_id: uuid.UUID,
    now: datetime,
    dialect_name: str,
    segment_filters: Mapping[uuid.UUID, FilterCondition],
    purpose: Purpose,
) -> ColumnElement[bool]:
    """The WHERE clause over ``Contact`` selecting the audience. Raises ``NotFound`` for a
    segment missing from ``segment_filters`` and ``InvalidFilter`` for a bad filter."""
    reasons = SUPPRESSION_REASONS if purpose == "marketing" else TRANSACTIONAL_BLOCKING_REASONS
    clauses: list[ColumnElement[bool]] = [
        Contact.workspace_id == workspace_id,
        Contact.status == "subscribed",
        ~exists().where(
            Suppression.workspace_id == workspace_id,
            Suppression.email_hash == Contact.email_hash,
            Suppression.reason.in_(reasons),
        ),
    ]
    if audience.lists:
        clauses.append(_subscribed_to_any(audience.lists))
    if audience.exclude_lists:
        clauses.append(~_subscribed_to_any(audience.exclude_lists))
    for segment_id, negate in ((audience.segment_id, False), (audience.exclude_segment_id, True)):
        if segment_id is None:
            continue
        segment_filter = segment_filters.get(segment_id)
        if segment_filter is None:
            raise NotFound("segment", segment_id)
        compiled = compile_filter(segment_filter, now=now, dialect_name=dialect_name)
        clauses.append(not_(compiled) if negate else compiled)
    if audience.filter is not None:
        clauses.append(compile_filter(audience.filter, now=now, dialect_name=dialect_name))
    return and_(*clauses)


def audience_contact_ids(
    audience: Audience,
    *,
    workspace_id: uuid.UUID,
    now: datetime,
    dialect_name: str,
    segment_filters: Mapping[uuid.UUID, FilterCondition],
    purpose: Purpose,
) -> Select[uuid.UUID, str]:
    """``SELECT contacts.id, contacts.email`` of the audience, unordered: a fan-out adds
    ``order_by(Contact.id)`` and a ``Contact.id > cursor`` bound to walk it in chunks."""
    where = audience_where(
        audience,
        workspace_id=workspace_id,
        now=now,
        dialect_name=dialect_name,
        segment_filters=segment_filters,
        purpose=purpose,
    )
    return select(Contact.id, Contact.email).where(where)


def audience_count(
    audience: Audience,
    *,
    workspace_id: uuid.UUID,
    now: datetime,
    dialect_name: str,
    segment_filters: Mapping[uuid.UUID, FilterCondition],
    purpose: Purpose,
) -> Select[int]:
    """``SELECT count(*)`` of the same audience."""
    where = audience_where(
        audience,
        workspace_id=workspace_id,
        now=now,
        dialect_name=dialect_name,
        segment_filters=segment_filters,
        purpose=purpose,
    )
    return select(func.count()).select_from(Contact).where(where)


def _subscribed_to_any(list_ids: list[uuid.UUID]) -> ColumnElement[bool]:
    return exists().where(
        Subscription.contact_id == Contact.id,
        Subscription.list_id.in_(list_ids),
        Subscription.status == "subscribed",
    )
