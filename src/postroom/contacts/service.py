"""Contact rules: upsert, patch, delete, GDPR erase, global unsubscribe."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.analytics.repository import erase_contact as erase_analytics
from postroom.contacts.contact_fields import (
    ContactInput,
    FieldError,
    contact_from_mapping,
    normalize_email,
    validate_attributes,
)
from postroom.contacts.lists_repository import SubscriptionRepository, SuppressionRepository
from postroom.contacts.repository import ContactRepository
from postroom.contacts.upsert import ContactUpserter, RowOutcome, merge_attributes
from postroom.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from postroom.events.service import record
from postroom.feedback.repository import erase_contact as erase_inbound
from postroom.models.contacts import Contact, email_hash
from postroom.models.delivery import Delivery
from postroom.webhooks.repository import erase_contact as erase_webhook_deliveries


async def delete_deliveries_of(
    session: AsyncSession, workspace_id: uuid.UUID, contact_ids: Sequence[uuid.UUID]
) -> None:
    """A contact's deliveries go with it. deliveries.contact_id has no foreign key (its
    per-row check was a third of a campaign fan-out's cost, migration 0012), so contact
    delete and GDPR erase remove them here, over ix_deliveries_contact_id."""
    if contact_ids:
        await session.execute(
            delete(Delivery)
            .where(Delivery.workspace_id == workspace_id, Delivery.contact_id.in_(contact_ids))
            .execution_options(synchronize_session=False)
        )


async def erase_deliveries(
    session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, _email_key: str
) -> None:
    await delete_deliveries_of(session, workspace_id, [contact_id])


# Other domains register what GDPR erase must also remove for a contact (deliveries,
# inbound mail, engagement…): each hook gets (session, workspace_id, contact_id, email_key).
ERASE_HOOKS: list[Any] = []
ERASE_HOOKS.append(erase_deliveries)  # the ledger rows (and, by cascade, their analytics)
ERASE_HOOKS.append(erase_analytics)  # per-recipient opens/clicks and link clickers
ERASE_HOOKS.append(erase_inbound)  # kept inbound mail and soft-bounce history
ERASE_HOOKS.append(erase_webhook_deliveries)  # webhook deliveries about the contact


def field_problem(error: FieldError, prefix: str = "") -> FieldProblem:
    return FieldProblem(prefix + error.field, error.message, error.code)


def contact_input(data: Mapping[str, object], prefix: str = "") -> ContactInput:
    try:
        return contact_from_mapping(data)
    except FieldError as error:
        problem = field_problem(error, prefix)
        raise ValidationFailed([problem], f"{problem.field}: {problem.message}") from None


@dataclass(frozen=True, slots=True)
class UpsertResult:
    contact: Contact
    created: bool


class ContactService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID, now: datetime) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.contacts = ContactRepository(session, workspace_id)

    async def get(self, contact_id: uuid.UUID) -> Contact:
        contact = await self.contacts.get(contact_id)
        if contact is None:
            raise NotFound("contact", contact_id)
        return contact

    async def lookup(self, *, email: str | None, external_id: str | None) -> Contact:
        if bool(email) == bool(external_id):
            raise ValidationFailed.single("email", "give exactly one of email or external_id")
        if email:
            try:
                _display, key = normalize_email(email)
            except FieldError as error:
                raise ValidationFailed([field_problem(error)]) from None
            contact = await self.contacts.by_email_key(key)
        else:
            contact = await self.contacts.by_external_id(external_id or "")
        if contact is None:
            raise NotFound("contact", email or external_id)
        return contact

    async def upsert(self, data: Mapping[str, object]) -> UpsertResult:
        row = contact_input(data)
        [outcome] = await ContactUpserter(self.session, self.workspace_id, self.now).upsert([row])
        if outcome.status == "failed":
            raise Conflict(outcome.message or "the contact conflicts with another one")
        assert outcome.contact_id is not None
        contact = await self.get(outcome.contact_id)
        await self.session.refresh(contact)
        return UpsertResult(contact, outcome.status == "created")

    async def bulk_upsert(self, rows: Sequence[Mapping[str, object]]) -> list[RowOutcome]:
        valid: list[ContactInput] = []
        positions: list[int] = []
        outcomes: dict[int, RowOutcome] = {}
        for index, data in enumerate(rows):
            try:
                valid.append(contact_from_mapping(data))
                positions.append(index)
            except FieldError as error:
                outcomes[index] = RowOutcome(
                    index, "failed", field=error.field, message=error.message, code=error.code
                )
        upserted = await ContactUpserter(self.session, self.workspace_id, self.now).upsert(valid)
        for position, outcome in zip(positions, upserted, strict=True):
            outcome.index = position
            outcomes[position] = outcome
        return [outcomes[i] for i in range(len(rows))]

    async def patch(self, contact_id: uuid.UUID, changes: Mapping[str, Any]) -> Contact:
        contact = await self.get(contact_id)
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "attributes":
                patch = validate_attributes_patch(value)
                values["attributes"] = merge_attributes(contact.attributes or {}, patch)
            elif name == "email":
                if value is None:
                    raise ValidationFailed.single("email", "cannot be removed")
                display, key = _email(value)
                if key != contact.email_key:
                    other = await self.contacts.by_email_key(key)
                    if other is not None:
                        raise Conflict(f"{display} already belongs to contact {other.id}")
                values.update(email=display, email_key=key, email_hash=email_hash(key))
            elif value is None:
                values[name] = None
            else:
                # Same normalisation as create/import, field by field.
                values[name] = getattr(contact_input({"email": contact.email, name: value}), name)
        if "external_id" in values and values["external_id"] is not None:
            other = await self.contacts.by_external_id(values["external_id"])
            if other is not None and other.id != contact.id:
                raise Conflict(
                    f"external_id '{values['external_id']}' already belongs to contact {other.id}"
                )
        if not values:
            return contact
        values["updated_at"] = self.now
        if "opt_in" in values or "consent_source" in values:
            values["consent_at"] = self.now
        await self.contacts.update_fields(contact.id, values)
        await record(
            self.session,
            workspace_id=self.workspace_id,
            type="contact.updated",
            occurred_at=self.now,
            contact_id=contact.id,
            resource_type="contact",
            resource_id=contact.id,
            data={"changed": sorted(k for k in values if k not in ("updated_at", "email_hash"))},
        )
        await self.session.refresh(contact)
        return contact

    async def delete(self, contact_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Delete contacts (their subscriptions go with them); returns the ids not found."""
        found = await self.contacts.existing_ids(contact_ids)
        await delete_deliveries_of(self.session, self.workspace_id, list(found))
        await self.contacts.delete_ids(list(found))
        for contact_id in found:
            await record(
                self.session,
                workspace_id=self.workspace_id,
                type="contact.deleted",
                occurred_at=self.now,
                contact_id=contact_id,
                resource_type="contact",
                resource_id=contact_id,
            )
        return [c for c in contact_ids if c not in found]

    async def erase(self, contact_id: uuid.UUID) -> None:
        """GDPR erase: the person and everything personal about them goes; a hashed
        tombstone stays in the suppression list so no later import can mail them again."""
        contact = await self.get(contact_id)
        hashed = email_hash(contact.email_key)
        for hook in ERASE_HOOKS:
            await hook(self.session, self.workspace_id, contact.id, contact.email_key)
        await self.contacts.delete_events_of(contact.id)
        suppressions = SuppressionRepository(self.session, self.workspace_id)
        await suppressions.forget_email(hashed)
        await suppressions.add(
            email=None, hashed=hashed, reason="manual", note="erased (GDPR)", now=self.now
        )
        await self.contacts.delete_ids([contact.id])
        # The deletion is told without the person: no contact id, no address.
        await record(
            self.session,
            workspace_id=self.workspace_id,
            type="contact.deleted",
            occurred_at=self.now,
            resource_type="contact",
            data={"erased": True},
        )

    async def unsubscribe_everything(self, contact: Contact, *, source: str) -> None:
        """Status ``unsubscribed``, off every list, and a marketing suppression."""
        subscriptions = SubscriptionRepository(self.session, self.workspace_id)
        await subscriptions.unsubscribe_everywhere(contact.id, self.now)
        if contact.status == "subscribed":
            await self.contacts.update_fields(
                contact.id, {"status": "unsubscribed", "updated_at": self.now}
            )
        await SuppressionRepository(self.session, self.workspace_id).add(
            email=contact.email,
            hashed=contact.email_hash,
            reason="unsubscribe",
            note=source,
            now=self.now,
        )
        await record(
            self.session,
            workspace_id=self.workspace_id,
            type="contact.unsubscribed",
            occurred_at=self.now,
            contact_id=contact.id,
            resource_type="contact",
            resource_id=contact.id,
            data={"scope": "all", "source": source},
        )


def _email(value: object) -> tuple[str, str]:
    if not isinstance(value, str):
        raise ValidationFailed.single("email", "must be a string")
    try:
        return normalize_email(value)
    except FieldError as error:
        raise ValidationFailed([field_problem(error)]) from None


def validate_attributes_patch(value: object) -> dict[str, Any]:
    """Attributes for a PATCH: ``None`` values are kept (they delete keys)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed.single("attributes", "must be a JSON object")
    deletions = {k: None for k, v in value.items() if v is None}
    try:
        kept = validate_attributes({k: v for k, v in value.items() if v is not None})
    except FieldError as error:
        raise ValidationFailed([field_problem(error)]) from None
    return {**kept, **deletions}
