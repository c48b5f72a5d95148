"""Who may call a route. Every route declares its access in ``openapi_extra`` (so it is
also documented in the OpenAPI document); ``ApiRoute`` refuses to build a route without
one, which keeps the route classification complete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ACCESS_KEY = "x-postroom-access"

AccessKind = Literal["scope", "workspace", "admin", "events", "public"]


@dataclass(frozen=True, slots=True)
class Access:
    kind: AccessKind
    scope: str | None = None
    reason: str | None = None


def requires(scope: str) -> dict[str, Any]:
    """A secret key holding ``scope`` (``write`` implies ``read``)."""
    return {"openapi_extra": {ACCESS_KEY: {"kind": "scope", "scope": scope}}}


def workspace_key() -> dict[str, Any]:
    """Any secret workspace key; the endpoint checks a scope that depends on the row."""
    return {"openapi_extra": {ACCESS_KEY: {"kind": "workspace"}}}


def admin_only() -> dict[str, Any]:
    return {"openapi_extra": {ACCESS_KEY: {"kind": "admin"}}}


def events_key() -> dict[str, Any]:
    """A public ``pk_`` key, or a secret key with ``events:write``."""
    return {"openapi_extra": {ACCESS_KEY: {"kind": "events", "scope": "events:write"}}}


def public(reason: str) -> dict[str, Any]:
    return {"openapi_extra": {ACCESS_KEY: {"kind": "public", "reason": reason}}}


def access_of(openapi_extra: dict[str, Any] | None) -> Access | None:
    raw = (openapi_extra or {}).get(ACCESS_KEY)
    if raw is None:
        return None
    return Access(kind=raw["kind"], scope=raw.get("scope"), reason=raw.get("reason"))
