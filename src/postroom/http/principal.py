"""Authentication: turn an ``Authorization: Bearer`` header into a ``Principal``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.db.engine import Database
from postroom.errors import MissingScope, PermissionDenied, Unauthenticated
from postroom.http.access import Access
from postroom.models.workspaces import ApiKey
from postroom.security.api_keys import hash_key, key_kind, scope_granted

# last_used_at is a hint, not an audit log: write it at most this often per key.
LAST_USED_GRANULARITY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: uuid.UUID
    kind: str  # secret | public | admin
    workspace_id: uuid.UUID | None
    scopes: tuple[str, ...]

    @property
    def owner(self) -> str:
        return f"ws:{self.workspace_id}" if self.workspace_id else f"admin:{self.key_id}"

    def require_workspace(self) -> uuid.UUID:
        if self.workspace_id is None:
            raise PermissionDenied("this route needs a workspace key (sk_…), not an admin key")
        return self.workspace_id


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing Authorization header: send 'Authorization: Bearer <key>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
    return token


async def authenticate(
    session: AsyncSession, db: Database, header: str | None, now: datetime
) -> Principal:
    token = bearer_token(header)
    if key_kind(token) is None or len(token) > 200:
        raise Unauthenticated("the API key is malformed; keys start with sk_, pk_ or ak_")
    row = (
        await session.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(token)))
    ).scalar_one_or_none()
    if row is None:
        raise Unauthenticated("the API key is not valid")
    if row.revoked_at is not None:
        raise Unauthenticated("the API key has been revoked")
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_GRANULARITY:
        # A separate short write so read-only requests stay read-only.
        async with db.transaction() as writer:
            await writer.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
    return Principal(
        key_id=row.id, kind=row.kind, workspace_id=row.workspace_id, scopes=tuple(row.scopes)
    )


def require_scope(principal: Principal, scope: str) -> None:
    if not scope_granted(principal.scopes, scope):
        raise MissingScope(scope)


def authorize(principal: Principal, access: Access) -> None:
    if access.kind == "admin":
        if principal.kind != "admin":
            raise PermissionDenied("this route needs an admin key (ak_…)")
        return
    if access.kind == "events":
        if principal.kind == "public":
            return
        if principal.kind == "secret" and scope_granted(principal.scopes, "events:write"):
            return
        raise MissingScope("events:write")
    if access.kind == "workspace":
        if principal.kind != "secret":
            raise PermissionDenied("this route needs a secret workspace key (sk_…)")
        return
    if access.kind == "scope":
        assert access.scope is not None
        if principal.kind == "admin":
            raise PermissionDenied("admin keys manage workspaces only; use a workspace key (sk_…)")
        if principal.kind == "public":
            raise PermissionDenied("public keys (pk_…) may only track events")
        if not scope_granted(principal.scopes, access.scope):
            raise MissingScope(access.scope)
