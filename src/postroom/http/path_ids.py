"""Path ids are checked before anything reads the body.

Each domain registers which model a path parameter names (``register_path_id("list_id",
ContactList)``). ``ApiRoute`` then answers 404 for an id that is malformed, unknown or in
another workspace before FastAPI validates the body, so a foreign id is a 404 even when
the body is bad, and never a 403 that would confirm the id exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.errors import NotFound
from postroom.http.principal import Principal

Resolver = Callable[[AsyncSession, Principal, str], Awaitable[bool]]

_RESOLVERS: dict[str, tuple[str, Resolver]] = {}


def register_path_id(param: str, model: Any, label: str | None = None) -> None:
    """Path parameter ``param`` names a row of ``model`` (with ``id`` and ``workspace_id``)."""

    async def exists(session: AsyncSession, principal: Principal, raw: str) -> bool:
        try:
            value = uuid.UUID(raw)
        except ValueError:
            return False
        query = select(model.id).where(model.id == value)
        if hasattr(model, "workspace_id"):
            query = query.where(model.workspace_id == principal.workspace_id)
        return (await session.execute(query.limit(1))).first() is not None

    _RESOLVERS[param] = (label or model.__name__.lower(), exists)


def register_path_resolver(param: str, label: str, resolver: Resolver) -> None:
    _RESOLVERS[param] = (label, resolver)


def registered_params() -> set[str]:
    return set(_RESOLVERS)


async def resolve_path_ids(
    session: AsyncSession, principal: Principal | None, params: dict[str, Any]
) -> None:
    for name, raw in params.items():
        entry = _RESOLVERS.get(name)
        if entry is None or principal is None:
            continue
        label, resolver = entry
        if not await resolver(session, principal, str(raw)):
            raise NotFound(label, raw)
