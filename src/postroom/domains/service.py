"""Sending domain rules: names, DKIM keys and their rotation, DNS checks.

Slow work (RSA key generation, DNS lookups) runs before the first statement of the
write transaction: on SQLite a write transaction holds the database's write lock from its
first statement, and nobody else should wait on a DNS timeout.
"""

from __future__ import annotations

import asyncio
import re
import string
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.delivery.dkim import generate_dkim_keypair
from postroom.delivery.rate_limits import WarmupPlan
from postroom.domains.dns import (
    DnsLookup,
    DnsRecord,
    DomainCheck,
    KeyRecordInput,
    RecordCheck,
    RecordStatus,
    check_records,
    records_to_publish,
)
from postroom.domains.repository import DomainRepository
from postroom.errors import Conflict, NotFound, ValidationFailed
from postroom.ids import uuid7
from postroom.models.domains import RECORD_STATUSES, DkimKey, SendingDomain
from postroom.security.secret_box import SecretBox

DEFAULT_KEY_BITS = 2048
RETURN_PATH_LABEL = "bounces"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def normalize_domain(raw: str, field: str = "domain") -> str:
    """A lower-case ASCII (IDNA) host name with at least two labels, or a 422."""
    name = raw.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValidationFailed.single(field, f"'{raw}' is not a valid domain name") from None
    labels = name.split(".")
    if (
        len(name) > 253
        or len(labels) < 2
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()  # an IP address, not a domain
    ):
        raise ValidationFailed.single(
            field, f"'{raw}' is not a valid domain name (like example.com)"
        )
    return name


def normalize_selector(raw: str, field: str = "selector") -> str:
    selector = raw.strip().lower()
    if not _LABEL.match(selector):
        raise ValidationFailed.single(
            field, "a selector is 1-63 letters, digits or hyphens (not first or last)"
        )
    return selector


def default_selector(now: datetime, taken: Sequence[str]) -> str:
    """``pr`` + year and month (``pr202611``), with a letter added if already used."""
    base = "pr" + now.strftime("%Y%m")
    for suffix in ["", *list(string.ascii_lowercase[1:])]:
        candidate = base + suffix
        if candidate not in taken:
            return candidate
    return f"{base}-{uuid.uuid4().hex[:8]}"


async def new_keypair(bits: int) -> tuple[str, str]:
    """RSA generation takes from 50 ms (2048 bits) to seconds (4096): off the event loop."""
    pair: tuple[str, str] = await asyncio.to_thread(generate_dkim_keypair, bits)
    return pair


def _status(value: str) -> RecordStatus:
    return value if value in RECORD_STATUSES else "unknown"  # type: ignore[return-value]


def _key_input(key: DkimKey) -> KeyRecordInput:
    return KeyRecordInput(selector=key.selector, public_key=key.public_key)


@dataclass(frozen=True, slots=True)
class DomainView:
    """A domain with its keys and the records to publish, each with its last status."""

    domain: SendingDomain
    keys: list[DkimKey]
    records: list[tuple[DnsRecord, RecordCheck]]
    today: date | None = None  # for the warm-up plan's "today"

    @property
    def active_key(self) -> DkimKey | None:
        return next((key for key in self.keys if key.active), None)


@dataclass(frozen=True, slots=True)
class SigningKey:
    domain: str
    selector: str
    private_key_pem: str
    verified: bool


class DomainService:
    def __init__(
        self,
        session: AsyncSession,
        workspace_id: uuid.UUID,
        now: datetime,
        box: SecretBox,
        bounce_domain: str,
    ) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.box = box
        self.bounce_domain = bounce_domain
        self.domains = DomainRepository(session, workspace_id)

    async def get(self, domain_id: uuid.UUID) -> SendingDomain:
        row = await self.domains.get(domain_id)
        if row is None:
            raise NotFound("domain", domain_id)
        return row

    async def by_name(self, domain: str) -> SendingDomain:
        row = await self.domains.by_name(normalize_domain(domain))
        if row is None:
            raise NotFound("domain", domain)
        return row

    def _key(
        self, domain_id: uuid.UUID, selector: str, pair: tuple[str, str], bits: int
    ) -> DkimKey:
        private_pem, public_b64 = pair
        return DkimKey(
            id=uuid7(),
            domain_id=domain_id,
            selector=selector,
            private_key=self.box.encrypt(private_pem),
            public_key=public_b64,
            bits=bits,
            active=False,
            status="unknown",
            created_at=self.now,
        )

    async def create(
        self, domain: str, selector: str | None = None, bits: int = DEFAULT_KEY_BITS
    ) -> SendingDomain:
        name = normalize_domain(domain)
        chosen = normalize_selector(selector) if selector else default_selector(self.now, [])
        pair = await new_keypair(bits)
        if await self.domains.by_name(name) is not None:
            raise Conflict(f"the domain {name} is already added to this workspace")
        row = SendingDomain(
            id=uuid7(),
            workspace_id=self.workspace_id,
            domain=name,
            return_path_domain=f"{RETURN_PATH_LABEL}.{name}",
            check_details={},
            created_at=self.now,
            updated_at=self.now,
        )
        key = self._key(row.id, chosen, pair, bits)
        key.active, key.activated_at = True, self.now
        try:
            async with self.session.begin_nested():
                await self.domains.add(row, key)
        except IntegrityError:
            raise Conflict(f"the domain {name} is already added to this workspace") from None
        return row

    async def add_key(
        self,
        domain_id: uuid.UUID,
        selector: str | None = None,
        bits: int = DEFAULT_KEY_BITS,
        *,
        activate: bool = False,
    ) -> DkimKey:
        """A new key under a new selector. It signs once a check has seen its DNS record
        (or at once with ``activate``); until then the current key keeps signing."""
        wanted = normalize_selector(selector) if selector else None
        pair = await new_keypair(bits)
        row = await self.get(domain_id)
        keys = (await self.domains.keys_of([row.id]))[row.id]
        taken = [key.selector for key in keys]
        if wanted in taken:
            raise Conflict(f"the selector {wanted} is already used by this domain")
        key = self._key(row.id, wanted or default_selector(self.now, taken), pair, bits)
        if activate:
            self._activate(key, keys)
            row.dkim_status = key.status
        row.updated_at = self.now
        await self.domains.add(key)
        return key

    def _activate(self, key: DkimKey, keys: Sequence[DkimKey]) -> None:
        for other in keys:
            other.active = False
        key.active, key.activated_at = True, self.now

    async def delete(self, domain_id: uuid.UUID) -> None:
        await self.domains.delete(await self.get(domain_id))

    async def view(self, row: SendingDomain) -> DomainView:
        return (await self.views([row]))[0]

    async def views(self, rows: Sequence[SendingDomain]) -> list[DomainView]:
        keys = await self.domains.keys_of([row.id for row in rows])
        return [self._view(row, keys[row.id]) for row in rows]

    def _view(self, row: SendingDomain, keys: list[DkimKey]) -> DomainView:
        records = records_to_publish(
            row.domain, row.return_path_domain, [_key_input(k) for k in keys], self.bounce_domain
        )
        details = row.check_details or {}
        statuses = {
            "spf": row.spf_status,
            "dmarc": row.dmarc_status,
            "return_path": row.return_path_status,
        }
        key_status = {key.selector: key.status for key in keys}
        paired = []
        for record in records:
            if record.purpose == "dkim":
                status = key_status.get(record.selector or "", "unknown")
                seen = details.get("dkim", {}).get(record.selector or "", {})
            else:
                status = statuses[record.purpose]
                seen = details.get(record.purpose, {})
            found = [str(value) for value in seen.get("found", [])]
            check = RecordCheck(_status(status), found, str(seen.get("detail", "")))
            paired.append((record, check))
        return DomainView(row, keys, paired, self.now.date())

    async def check(self, domain_id: uuid.UUID, result: DomainCheck) -> SendingDomain:
        """Store a check's statuses. The newest key, when its record is verified and it
        is not signing yet, becomes the signing key (the last step of a rotation)."""
        row = await self.get(domain_id)
        keys = (await self.domains.keys_of([row.id]))[row.id]
        for key in keys:
            if key.selector in result.dkim:
                key.status = result.dkim[key.selector].status
        newest = keys[-1] if keys else None
        if newest is not None and not newest.active and newest.status == "verified":
            self._activate(newest, keys)
        active = next((key for key in keys if key.active), None)
        row.spf_status = result.spf.status
        row.dmarc_status = result.dmarc.status
        row.return_path_status = result.return_path.status
        row.dkim_status = active.status if active is not None else "missing"
        row.check_details = {
            "spf": result.spf.as_json(),
            "dmarc": result.dmarc.as_json(),
            "return_path": result.return_path.as_json(),
            "dkim": {selector: check.as_json() for selector, check in result.dkim.items()},
        }
        row.checked_at = self.now
        row.updated_at = self.now
        await self.session.flush()
        return row

    # -- sending limits and warm-up (enforced by postroom.delivery.rate_limits) ------------

    async def set_limits(
        self, domain_id: uuid.UUID, changes: Mapping[str, int | None]
    ) -> SendingDomain:
        """Per-second/hour/day limits of mail from this domain; ``None`` is unlimited."""
        row = await self.get(domain_id)
        for name in ("per_second", "per_hour", "per_day"):
            if name in changes:
                setattr(row, f"rate_{name}", changes[name])
        row.updated_at = self.now
        await self.session.flush()
        return row

    async def set_warmup(self, domain_id: uuid.UUID, plan: WarmupPlan) -> SendingDomain:
        if plan.max_per_day < plan.initial_per_day:
            raise ValidationFailed.single(
                "max_per_day", "the maximum must be at least the initial daily cap"
            )
        row = await self.get(domain_id)
        row.warmup = plan.as_json()
        row.updated_at = self.now
        await self.session.flush()
        return row

    async def clear_warmup(self, domain_id: uuid.UUID) -> SendingDomain:
        row = await self.get(domain_id)
        row.warmup = None
        row.updated_at = self.now
        await self.session.flush()
        return row

    async def signing_key(self, domain: str) -> SigningKey | None:
        """The decrypted key that signs mail from ``domain`` (for the delivery layer)."""
        row = await self.domains.by_name(domain.lower())
        if row is None:
            return None
        view = await self.view(row)
        key = view.active_key
        if key is None:
            return None
        return SigningKey(
            domain=row.domain,
            selector=key.selector,
            private_key_pem=self.box.decrypt(key.private_key),
            verified=key.status == "verified",
        )


async def lookup_records(
    lookup: DnsLookup, domain: str, return_path_domain: str, keys: Sequence[DkimKey], bounce: str
) -> DomainCheck:
    """Ask DNS about every record of a domain (no database access)."""
    return await check_records(
        lookup, domain, return_path_domain, [_key_input(key) for key in keys], bounce
    )
