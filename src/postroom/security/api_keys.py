"""API key material: generation, hashing, scopes.

A key is ``<kind prefix>_<43 url-safe chars>`` (256 random bits). Only its SHA-256 is
stored; the plaintext is shown once. Scopes are ``resource:read`` / ``resource:write``;
``write`` implies ``read`` for the same resource.
"""

from __future__ import annotations

import hashlib
import secrets

KIND_PREFIX = {"secret": "sk", "public": "pk", "admin": "ak"}
PREFIX_KIND = {v: k for k, v in KIND_PREFIX.items()}

RESOURCES = (
    "api_keys",
    "contacts",
    "lists",
    "segments",
    "suppressions",
    "imports",
    "exports",
    "templates",
    "domains",
    "relays",
    "campaigns",
    "messages",
    "sequences",
    "webhooks",
    "analytics",
    "inbound",
)
ALL_SCOPES: tuple[str, ...] = (
    *(f"{resource}:{mode}" for resource in RESOURCES for mode in ("read", "write")),
    "events:write",
)
PUBLIC_KEY_SCOPES = ("events:write",)


def new_key(kind: str) -> str:
    return f"{KIND_PREFIX[kind]}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_kind(key: str) -> str | None:
    prefix, _, rest = key.partition("_")
    if not rest:
        return None
    return PREFIX_KIND.get(prefix)


def display_prefix(key: str) -> str:
    return key[:10]


def scope_granted(held: list[str] | tuple[str, ...], needed: str) -> bool:
    if needed in held:
        return True
    resource, _, mode = needed.partition(":")
    return mode == "read" and f"{resource}:write" in held


def invalid_scopes(scopes: list[str]) -> list[str]:
    known = set(ALL_SCOPES)
    return [scope for scope in scopes if scope not in known]
