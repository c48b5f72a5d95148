"""Lists, subscriptions and the suppression list."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.contacts.contact_fields import FieldError, normalize_email
from postroom.contacts.lists_repository import (
    ListRepository,
    SubscriptionRepository,
    SuppressionRepository,
)
from postroom.contacts.repository import ContactRepository
from postroom.contacts.service import field_problem
from postroom.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from postroom.events.service import record_many
from postroom.ids import uuid7
from postroom.models.contacts import ContactList, Suppression, email_hash

if TYPE_CHECKING:
    from postroom.contacts.double_opt_in import DoubleOptIn
    from postroom.context import AppContext

DEFAULT_LIST_NAME = "Newsletter"


class ListService:
    def __init__(
        self,
        session: AsyncSession,
        workspace_id: uuid.UUID,
        now: datetime,
        *,
        ctx: AppContext | None = None,
    ) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        # Needed to sign confirmation links when subscribing to a double opt-in list.
        self.ctx = ctx
        self.lists = ListRepository(session, workspace_id)
        self.subscriptions = SubscriptionRepository(session, workspace_id)

    async def get(self, list_id: uuid.UUID) -> ContactList:
        row = await self.lists.get(list_id)
        if row is None:
            raise NotFound("list", list_id)
        return row

    async def create(
        self, name: str, description: str | None, double_opt_in: bool, *, is_default: bool = False
    ) -> ContactList:
        if await self.lists.by_name(name) is not None:
            raise Conflict(f"a list named '{name}' already exists")
        row = ContactList(
            id=uuid7(),
            workspace_id=self.workspace_id,
            name=name,
            description=description,
            double_opt_in=double_opt_in,
            is_default=is_default,
            created_at=self.now,
            updated_at=self.now,
        )
        try:
            async with self.session.begin_nested():
                await self.lists.add(row)
        except IntegrityError:
            raise Conflict(f"a list named '{name}' already exists") from None
        return row

    async def ensure_default(self) -> ContactList:
        for row in await self.lists.page(None, 1000):
            if row.is_default:
                return row
        return await self.create(DEFAULT_LIST_NAME, "The default list", False, is_default=True)

    async def update(
        self,
        list_id: uuid.UUID,
        name: str | None,
        description: str | None,
        double_opt_in: bool | None,
        fields: set[str],
    ) -> ContactList:
        row = await self.get(list_id)
        if name is not None and name != row.name:
            if await self.lists.by_name(name) is not None:
                raise Conflict(f"a list named '{name}' already exists")
            row.name = name
        if "description" in fields:
            row.description = description
        if double_opt_in is not None:
            row.double_opt_in = double_opt_in
        row.updated_at = self.now
        await self.session.flush()
        return row

    async def delete(self, list_id: uuid.UUID) -> None:
        row = await self.get(list_id)
        if row.is_default:
            raise Conflict("the default list cannot be deleted")
        await self.lists.delete(row)

    async def resolve_contacts(
        self, contact_ids: Sequence[uuid.UUID], emails: Sequence[str]
    ) -> tuple[list[uuid.UUID], list[str]]:
        """Contact ids for ids and emails; returns (found ids, what was not found)."""
        contacts = ContactRepository(self.session, self.workspace_id)
        found = await contacts.existing_ids(contact_ids)
        missing = [str(c) for c in contact_ids if c not in found]
        keys: dict[str, str] = {}
        problems: list[FieldProblem] = []
        for index, email in enumerate(emails):
            try:
                keys[normalize_email(email)[1]] = email
            except FieldError as error:
                problems.append(field_problem(error, f"emails.{index}."))
        if problems:
            raise ValidationFailed(problems)
        by_key = await contacts.ids_by_email_keys(list(keys))
        missing += [email for key, email in keys.items() if key not in by_key]
        ordered = [c for c in contact_ids if c in found] + [
            i for i in by_key.values() if i not in found
        ]
        return ordered, missing

    async def subscribe(
        self, row: ContactList, contact_ids: Sequence[uuid.UUID], source: str | None
    ) -> list[uuid.UUID]:
        status = "unconfirmed" if row.double_opt_in else "subscribed"
        changed = await self.subscriptions.subscribe(
            row.id, contact_ids, status=status, now=self.now, source=source
        )
        await self._events(
            "contact.subscribed", changed, {"list_id": str(row.id), "status": status}
        )
        if row.double_opt_in and changed:
            await self.confirmations().queue(row, changed)
        return changed

    def confirmations(self) -> DoubleOptIn:
        from postroom.contacts.double_opt_in import DoubleOptIn

        if self.ctx is None:
            raise RuntimeError("subscribing to a double opt-in list needs ListService(ctx=…)")
        return DoubleOptIn(self.ctx, self.session, self.workspace_id, self.now)

    async def unsubscribe(
        self, row: ContactList, contact_ids: Sequence[uuid.UUID]
    ) -> list[uuid.UUID]:
        changed = await self.subscriptions.unsubscribe(row.id, contact_ids, self.now)
        await self._events(
            "contact.unsubscribed", changed, {"list_id": str(row.id), "scope": "list"}
        )
        return changed

    async def _events(
        self, kind: str, contact_ids: Sequence[uuid.UUID], data: dict[str, str]
    ) -> None:
        await record_many(
            self.session,
            [
                {
                    "workspace_id": self.workspace_id,
                    "type": kind,
                    "contact_id": contact_id,
                    "resource_type": "list",
                    "resource_id": uuid.UUID(data["list_id"]),
                    "data": data,
                    "occurred_at": self.now,
                }
                for contact_id in contact_ids
            ],
        )


class SuppressionService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID, now: datetime) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.repo = SuppressionRepository(session, workspace_id)

    @staticmethod
    def key_of(email: str, field: str = "email") -> tuple[str, str]:
        try:
            return normalize_email(email)
        except FieldError as error:
            raise ValidationFailed([FieldProblem(field, error.message, error.code)]) from None

    async def add(self, email: str, reason: str, note: str | None) -> Suppression:
        display, key = self.key_of(email)
        hashed = email_hash(key)
        await self.repo.add(email=display, hashed=hashed, reason=reason, note=note, now=self.now)
        rows = [r for r in await self.repo.of_hash(hashed) if r.reason == reason]
        return rows[0]

    async def of_email(self, email: str) -> list[Suppression]:
        _display, key = self.key_of(email)
        rows = await self.repo.of_hash(email_hash(key))
        if not rows:
            raise NotFound("suppression", email)
        return rows

    async def remove(self, email: str, reason: str | None) -> int:
        _display, key = self.key_of(email)
        removed = await self.repo.remove(email_hash(key), reason)
        if not removed:
            raise NotFound("suppression", email)
        return removed
