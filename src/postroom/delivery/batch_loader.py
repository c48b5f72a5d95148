"""Everything a claimed batch needs from the database, in a fixed number of queries.

Per batch: the states of its sends (always fresh, so a send paused or cancelled after the
claim is not sent), the sends not seen before (with their frozen template versions and
their DKIM signer, cached per process: a send never changes), the contacts (one query),
and the suppressions of the batch's addresses (one query over their hashes).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.delivery.compose import load_versions
from postroom.delivery.dkim import DkimSigner
from postroom.delivery.ledger import Claimed
from postroom.delivery.message import MessageBuildError, normalize_address
from postroom.domains.service import DomainService
from postroom.errors import PostroomError
from postroom.logging import get_logger
from postroom.models.contacts import (
    TRANSACTIONAL_BLOCKING_REASONS,
    Contact,
    Suppression,
    email_hash,
)
from postroom.models.delivery import Send
from postroom.models.templates import TemplateVersion
from postroom.templates.rendering import CompiledContent
from postroom.templates.variables import contact_fields

log = get_logger(__name__)

_SEND_CACHE_SIZE = 1024


@dataclass(slots=True)
class SendBundle:
    """A send and what building its messages needs, loaded once per process."""

    send: Send
    versions: dict[str, TemplateVersion]
    signer: DkimSigner | None
    message_id_domain: str | None  # None: the From address is unusable (build fails)
    # Per contact locale: the compiled content and the version it came from (the engine
    # fills it on first use; a send's content never changes).
    compiled: dict[str | None, tuple[CompiledContent, TemplateVersion | None]] = field(
        default_factory=dict
    )

    def message_id(self, delivery_id: uuid.UUID) -> str | None:
        """Derived from the delivery id, so every attempt carries the same Message-ID."""
        if self.message_id_domain is None:
            return None
        return f"<{delivery_id}@{self.message_id_domain}>"


@dataclass(slots=True)
class BatchData:
    bundles: dict[uuid.UUID, SendBundle]
    states: dict[uuid.UUID, str]  # send id -> state now (a deleted send is missing)
    contacts: dict[uuid.UUID, dict[str, Any]]
    # (workspace id, email hash) -> suppression reasons
    suppressions: dict[tuple[uuid.UUID, str], set[str]] = field(default_factory=dict)

    def blocking(self, row: Claimed, purpose: str) -> list[str]:
        """The suppression reasons that stop this delivery: any for marketing mail,
        only bounce/complaint/manual for transactional mail."""
        reasons = self.suppressions.get((row.workspace_id, email_hash(row.email)), set())
        if purpose != "marketing":
            reasons = reasons & set(TRANSACTIONAL_BLOCKING_REASONS)
        return sorted(reasons)


class BatchLoader:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._sends: OrderedDict[uuid.UUID, SendBundle] = OrderedDict()

    async def load(self, claimed: Sequence[Claimed]) -> BatchData:
        send_ids = {row.send_id for row in claimed}
        contact_ids = {row.contact_id for row in claimed if row.contact_id is not None}
        keys = {(row.workspace_id, email_hash(row.email)) for row in claimed}
        async with self.ctx.db.read_sessions() as session:
            states = await _states(session, send_ids)
            bundles = await self._bundles(session, [sid for sid in send_ids if sid in states])
            contacts = await _contacts(session, contact_ids)
            suppressions = await _suppressions(session, keys)
        return BatchData(bundles, states, contacts, suppressions)

    async def _bundles(
        self, session: AsyncSession, send_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, SendBundle]:
        found: dict[uuid.UUID, SendBundle] = {}
        missing: list[uuid.UUID] = []
        for send_id in send_ids:
            bundle = self._sends.get(send_id)
            if bundle is None:
                missing.append(send_id)
            else:
                self._sends.move_to_end(send_id)
                found[send_id] = bundle
        if missing:
            rows = await session.execute(select(Send).where(Send.id.in_(missing)))
            for send in rows.scalars():
                bundle = await self._bundle(session, send)
                self._sends[send.id] = bundle
                found[send.id] = bundle
            while len(self._sends) > _SEND_CACHE_SIZE:
                self._sends.popitem(last=False)
        return found

    async def _bundle(self, session: AsyncSession, send: Send) -> SendBundle:
        try:
            domain: str | None = normalize_address(send.from_email).rpartition("@")[2]
        except MessageBuildError:
            domain = None
        versions = await load_versions(session, send)
        signer = await self._signer(session, send, domain) if domain else None
        return SendBundle(send, versions, signer, domain)

    async def _signer(self, session: AsyncSession, send: Send, domain: str) -> DkimSigner | None:
        """The active DKIM key of the sending domain, when the workspace added one."""
        settings = self.ctx.settings
        domains = DomainService(
            session,
            send.workspace_id,
            self.ctx.clock.now(),
            self.ctx.secret_box,
            settings.effective_bounce_domain,
        )
        try:
            key = await domains.signing_key(domain)
            if key is None:
                return None
            return DkimSigner(key.domain, key.selector, key.private_key_pem)
        except PostroomError as exc:
            # An unusable key must not stop the mail: it goes out unsigned, and says so.
            log.warning("dkim_key_unusable", send_id=str(send.id), error=str(exc))
            return None


async def _states(session: AsyncSession, send_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not send_ids:
        return {}
    rows = await session.execute(select(Send.id, Send.state).where(Send.id.in_(send_ids)))
    return dict(rows.all())


async def _contacts(
    session: AsyncSession, contact_ids: set[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    if not contact_ids:
        return {}
    # Plain rows, not ORM objects: a batch of contacts is read once and never changed
    # here, and building identity-mapped instances costs more than the query. Column
    # names equal attribute names on Contact, so the rows read like contacts.
    table = cast(Table, Contact.__table__)
    rows = await session.execute(select(table).where(table.c.id.in_(contact_ids)))
    return {row.id: contact_fields(cast(Contact, row)) for row in rows}


async def _suppressions(
    session: AsyncSession, keys: set[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], set[str]]:
    if not keys:
        return {}
    workspaces = {workspace_id for workspace_id, _ in keys}
    hashes = {hashed for _, hashed in keys}
    rows = await session.execute(
        select(Suppression.workspace_id, Suppression.email_hash, Suppression.reason).where(
            Suppression.email_hash.in_(hashes), Suppression.workspace_id.in_(workspaces)
        )
    )
    found: dict[tuple[uuid.UUID, str], set[str]] = {}
    for workspace_id, hashed, reason in rows.all():
        if (workspace_id, hashed) in keys:
            found.setdefault((workspace_id, hashed), set()).add(reason)
    return found
