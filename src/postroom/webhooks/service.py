"""Webhook endpoint rules: target checks, event type vocabulary, secrets, test and replay."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from postroom.errors import FieldProblem, NotFound, ValidationFailed
from postroom.events.schemas import name_problem
from postroom.events.service import KNOWN_TYPES, RESERVED_PREFIXES, is_reserved
from postroom.ids import uuid7
from postroom.models.webhooks import WebhookDelivery, WebhookEndpoint
from postroom.security.secret_box import SecretBox
from postroom.webhooks import signing
from postroom.webhooks.deliveries import Attempt, ClaimedDelivery, Target
from postroom.webhooks.repository import WebhookRepository
from postroom.webhooks.ssrf import check_url

# After a rotation the old secret keeps signing (a second signature) this long, so
# receivers can switch over without dropping a delivery.
PREVIOUS_SECRET_GRACE = timedelta(hours=24)
TEST_EVENT = "webhook.test"


def event_type_problems(event_types: Sequence[str]) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    for index, name in enumerate(event_types):
        field = f"event_types.{index}"
        if name == "*":
            continue
        if name.endswith(".*"):
            prefix = name[:-2]
            if not prefix or "*" in prefix or prefix != prefix.strip() or not prefix.isprintable():
                problems.append(FieldProblem(field, f"'{name}' is not a valid pattern"))
            continue
        if "*" in name:
            problems.append(
                FieldProblem(field, "a wildcard goes only at the end, after a dot: 'email.*'")
            )
        elif is_reserved(name):
            if name not in KNOWN_TYPES:
                problems.append(
                    FieldProblem(
                        field,
                        f"unknown event type '{name}' (names starting with "
                        f"{', '.join(RESERVED_PREFIXES)} are Postroom's own)",
                        "unknown_event_type",
                    )
                )
        elif (problem := name_problem(name)) is not None:
            problems.append(FieldProblem(field, problem))
    return problems


def endpoint_values(now: datetime) -> dict[str, Any]:
    return {"created_at": now, "updated_at": now}


class WebhookService:
    def __init__(
        self,
        session: AsyncSession,
        workspace_id: uuid.UUID,
        now: datetime,
        box: SecretBox,
        *,
        allow_private: bool,
    ) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.box = box
        self.allow_private = allow_private
        self.endpoints = WebhookRepository(session, workspace_id)

    async def get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        endpoint = await self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise NotFound("webhook", endpoint_id)
        return endpoint

    async def _check(self, url: str | None, event_types: Sequence[str] | None) -> None:
        problems: list[FieldProblem] = []
        if url is not None:
            reason = await check_url(url, allow_private=self.allow_private)
            if reason:
                problems.append(FieldProblem("url", reason, "refused_target"))
        if event_types is not None:
            problems += event_type_problems(event_types)
        if problems:
            raise ValidationFailed(problems, f"{problems[0].field}: {problems[0].message}")

    async def create(
        self, *, url: str, event_types: list[str], description: str | None, enabled: bool
    ) -> tuple[WebhookEndpoint, str]:
        await self._check(url, event_types)
        secret = signing.new_secret()
        endpoint = WebhookEndpoint(
            workspace_id=self.workspace_id,
            url=url,
            description=description,
            event_types=list(dict.fromkeys(event_types)),
            enabled=enabled,
            secret=self.box.encrypt(secret),
            **endpoint_values(self.now),
        )
        await self.endpoints.add(endpoint)
        return endpoint, secret

    async def update(self, endpoint_id: uuid.UUID, changes: dict[str, Any]) -> WebhookEndpoint:
        endpoint = await self.get(endpoint_id)
        await self._check(changes.get("url"), changes.get("event_types"))
        if changes.get("url") is not None:
            endpoint.url = changes["url"]
        if "description" in changes:
            endpoint.description = changes["description"]
        if changes.get("event_types") is not None:
            endpoint.event_types = list(dict.fromkeys(changes["event_types"]))
            await self.endpoints.set_patterns(endpoint.id, endpoint.event_types)
        if changes.get("enabled") is not None:
            endpoint.enabled = changes["enabled"]
            if endpoint.enabled:
                endpoint.disabled_reason = None
                endpoint.disabled_at = None
                endpoint.failing_since = None
        endpoint.updated_at = self.now
        await self.session.flush()
        return endpoint

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        await self.endpoints.delete(await self.get(endpoint_id))

    async def rotate_secret(self, endpoint_id: uuid.UUID) -> tuple[WebhookEndpoint, str]:
        endpoint = await self.get(endpoint_id)
        secret = signing.new_secret()
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = self.now + PREVIOUS_SECRET_GRACE
        endpoint.secret = self.box.encrypt(secret)
        endpoint.updated_at = self.now
        await self.session.flush()
        return endpoint, secret

    def target(self, endpoint: WebhookEndpoint) -> Target:
        secrets = [endpoint.secret]
        expires = endpoint.previous_secret_expires_at
        if endpoint.previous_secret and expires and expires > self.now:
            secrets.append(endpoint.previous_secret)
        return Target(endpoint.url, tuple(secrets))

    def test_delivery(self, endpoint: WebhookEndpoint) -> ClaimedDelivery:
        """The row a test send posts (written once the attempt is made)."""
        return ClaimedDelivery(
            id=_delivery_id(),
            workspace_id=self.workspace_id,
            endpoint_id=endpoint.id,
            kind="test",
            event_id=None,
            event_type=TEST_EVENT,
            contact_id=None,
            contact_email=None,
            resource_type="webhook",
            resource_id=endpoint.id,
            data={"message": "a test event from Postroom"},
            occurred_at=self.now,
            attempts=1,
        )

    async def record_test(self, row: ClaimedDelivery, attempt: Attempt) -> WebhookDelivery:
        return await self.endpoints.add_delivery(
            {
                "id": row.id,
                "endpoint_id": row.endpoint_id,
                "kind": "test",
                "event_type": row.event_type,
                "resource_type": row.resource_type,
                "resource_id": row.resource_id,
                "data": row.data,
                "occurred_at": row.occurred_at,
                "status": "succeeded" if attempt.succeeded else "failed",
                "attempts": 1,
                "next_attempt_at": self.now,
                "response_status": attempt.response_status,
                "latency_ms": attempt.latency_ms,
                "error": attempt.error,
                "last_attempt_at": self.now,
                "delivered_at": self.now if attempt.succeeded else None,
                **endpoint_values(self.now),
            }
        )

    async def delivery(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery:
        row = await self.endpoints.delivery(endpoint_id, delivery_id)
        if row is None:
            raise NotFound("webhook delivery", delivery_id)
        return row

    async def replay(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery:
        """A new delivery (new ``webhook-id``) of the same payload, due now."""
        source = await self.delivery(endpoint_id, delivery_id)
        return await self.endpoints.add_delivery(
            {
                "id": _delivery_id(),
                "endpoint_id": source.endpoint_id,
                "kind": "replay",
                "event_id": source.event_id,
                "event_type": source.event_type,
                "contact_id": source.contact_id,
                "contact_email": source.contact_email,
                "resource_type": source.resource_type,
                "resource_id": source.resource_id,
                "data": source.data,
                "occurred_at": source.occurred_at,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": self.now,
                **endpoint_values(self.now),
            }
        )


def _delivery_id() -> uuid.UUID:
    return uuid7()
