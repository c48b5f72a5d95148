"""Provider webhooks: per-workspace credentials, verifying a call, and applying its
events through ``postroom.feedback.effects`` (the same effects as inbound SMTP).

A call is verified before anything is written: unsigned → 401, a wrong signature or
credentials, a stale timestamp or a replayed token → 403, a body that is not what the
provider sends → 400. Events of deliveries this workspace does not know are answered 200
(providers retry anything else for days) and counted as ``unmatched``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.config import Settings
from postroom.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from postroom.events.service import record_many
from postroom.feedback import effects
from postroom.feedback.providers import mailgun, postmark, sendgrid, ses
from postroom.feedback.providers.events import (
    PROVIDERS,
    ProviderEvent,
    WebhookRefused,
    WebhookReplayed,
    WebhookUnauthenticated,
)
from postroom.feedback.providers.repository import ProviderRepository
from postroom.feedback.providers.schemas import ProviderCredentialsIn, WebhookAnswer
from postroom.ids import uuid7
from postroom.models.delivery import Delivery
from postroom.models.providers import FeedbackProvider
from postroom.security.secret_box import SecretBox
from postroom.tracking.links import link_id

# How far a signed timestamp (SendGrid, Mailgun) may be from our clock. Replay keys are
# kept a little longer than that, after which a replay is refused as stale anyway.
TOLERANCE: Final = timedelta(minutes=15)
SIGNED_REPLAY_TTL: Final = 2 * TOLERANCE
# SNS retries a notification with the same MessageId; a week covers its retry policies.
SNS_REPLAY_TTL: Final = timedelta(days=7)

_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "ses": ("topic_arns",),
    "sendgrid": ("public_key",),
    "mailgun": ("signing_key",),
    "postmark": ("username", "password"),
}
MIN_SIGNING_KEY = 16
MIN_PASSWORD = 12


def provider_name(raw: str) -> str:
    name = raw.strip().lower()
    if name not in PROVIDERS:
        raise NotFound("feedback provider", raw)
    return name


# --- credentials -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """A provider row's values, read (and the secret decrypted) before the write
    transaction of a webhook call starts."""

    provider: str
    topic_arns: tuple[str, ...] = ()
    public_key: str | None = None
    username: str | None = None
    secret: str | None = None


class ProviderCredentialService:
    def __init__(
        self, session: AsyncSession, workspace_id: uuid.UUID, now: datetime, box: SecretBox
    ) -> None:
        self.workspace_id = workspace_id
        self.now = now
        self.box = box
        self.providers = ProviderRepository(session, workspace_id)
        self.session = session

    async def list(self) -> list[FeedbackProvider]:
        return await self.providers.all()

    async def get(self, raw: str) -> FeedbackProvider:
        row = await self.providers.get(provider_name(raw))
        if row is None:
            raise NotFound("feedback provider", raw)
        return row

    async def credentials(self, raw: str) -> Credentials | None:
        row = await self.providers.get(provider_name(raw))
        if row is None:
            return None
        return Credentials(
            provider=row.provider,
            topic_arns=tuple(row.topic_arns or ()),
            public_key=row.public_key,
            username=row.username,
            secret=self.box.decrypt(row.secret) if row.secret else None,
        )

    async def put(self, raw: str, body: ProviderCredentialsIn) -> tuple[FeedbackProvider, bool]:
        """Create or replace the provider's credentials; True when created."""
        name = provider_name(raw)
        values = _validated(name, body)
        row = await self.providers.get(name)
        created = row is None
        if row is None:
            row = FeedbackProvider(
                id=uuid7(),
                workspace_id=self.workspace_id,
                provider=name,
                topic_arns=[],
                events_received=0,
                events_applied=0,
                events_unchanged=0,
                events_unmatched=0,
                created_at=self.now,
            )
        row.topic_arns = values.get("topic_arns", [])
        row.public_key = values.get("public_key")
        row.username = values.get("username")
        secret = values.get("signing_key") or values.get("password")
        row.secret = self.box.encrypt(secret) if secret else None
        row.updated_at = self.now
        if created:
            try:
                async with self.session.begin_nested():
                    await self.providers.add(row)
            except IntegrityError:
                raise Conflict(f"{name} credentials were created concurrently; retry") from None
        else:
            await self.session.flush()
        return row, created

    async def delete(self, raw: str) -> None:
        await self.providers.delete(await self.get(raw))


def _validated(name: str, body: ProviderCredentialsIn) -> dict[str, Any]:
    given = body.model_dump(exclude_none=True)
    wanted = _FIELDS[name]
    problems = [
        FieldProblem(key, f"not used by {name} (it takes {', '.join(wanted)})", "not_allowed")
        for key in given
        if key not in wanted
    ]
    problems += [
        FieldProblem(key, f"required for {name}", "missing") for key in wanted if key not in given
    ]
    if problems:
        raise ValidationFailed(problems, f"invalid {name} credentials")
    values: dict[str, Any] = {}
    if name == "ses":
        arns: list[str] = []
        for index, arn in enumerate(body.topic_arns or []):
            arn = arn.strip()
            if not ses.TOPIC_ARN.match(arn):
                raise ValidationFailed.single(
                    f"topic_arns.{index}",
                    "not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)",
                )
            if arn not in arns:
                arns.append(arn)
        if not arns:
            raise ValidationFailed.single("topic_arns", "at least one topic ARN", "missing")
        values["topic_arns"] = arns
    elif name == "sendgrid":
        try:
            sendgrid.load_public_key(body.public_key or "")
        except ValueError as exc:
            raise ValidationFailed.single("public_key", str(exc)) from None
        values["public_key"] = (body.public_key or "").strip()
    elif name == "mailgun":
        key = (body.signing_key or "").strip()
        if len(key) < MIN_SIGNING_KEY:
            raise ValidationFailed.single(
                "signing_key", f"Mailgun's signing key has at least {MIN_SIGNING_KEY} characters"
            )
        values["signing_key"] = key
    else:
        username, password = body.username or "", body.password or ""
        if not username or ":" in username:
            raise ValidationFailed.single("username", "1-200 characters without ':'")
        if len(password) < MIN_PASSWORD:
            raise ValidationFailed.single(
                "password", f"at least {MIN_PASSWORD} characters (generate a random one)"
            )
        values["username"], values["password"] = username, password
    return values


# --- verifying a call ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedCall:
    events: list[ProviderEvent] = field(default_factory=list)
    # Accepted once: a signature, a Mailgun token, an SNS MessageId.
    replay_token: str | None = None
    replay_ttl: timedelta = SIGNED_REPLAY_TTL
    # SNS may deliver a notification twice: answer 200 "duplicate". A signed call seen
    # before is a replay: refused.
    duplicate_is_ok: bool = False
    confirm_url: str | None = None
    status: str = "ok"


async def verify_call(
    credentials: Credentials,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    sns: ses.SnsClient,
) -> VerifiedCall:
    """Check the call against the workspace's credentials and parse it; raises
    ``WebhookUnauthenticated`` (401), ``WebhookRefused`` (403) or ``MalformedWebhook``."""
    provider = credentials.provider
    lowered = {key.lower(): value for key, value in headers.items()}
    if provider == "sendgrid":
        if not credentials.public_key:
            raise WebhookUnauthenticated("no SendGrid verification key is configured")
        signature = sendgrid.verify(credentials.public_key, lowered, body, now, TOLERANCE)
        return VerifiedCall(events=sendgrid.parse(body), replay_token=signature)
    if provider == "mailgun":
        if not credentials.secret:
            raise WebhookUnauthenticated("no Mailgun signing key is configured")
        call = mailgun.parse_and_verify(credentials.secret, body, now, TOLERANCE)
        return VerifiedCall(
            events=[call.event] if call.event else [],
            replay_token=call.token,
            status="ok" if call.event else "ignored",
        )
    if provider == "postmark":
        if not credentials.username or not credentials.secret:
            raise WebhookUnauthenticated("no Postmark credentials are configured")
        postmark.check_credentials(
            lowered.get("authorization"), credentials.username, credentials.secret
        )
        event = postmark.parse(body)
        return VerifiedCall(events=[event] if event else [], status="ok" if event else "ignored")
    # Amazon SES through SNS.
    message = ses.parse_envelope(body)
    if message["TopicArn"] not in credentials.topic_arns:
        raise WebhookRefused("this SNS topic is not in the workspace's topic_arns")
    await sns.verify(message, now)
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        url = message.get("SubscribeURL")
        if not isinstance(url, str) or not ses.is_sns_url(url):
            raise WebhookRefused("SubscribeURL is not an https URL on an SNS host")
        return VerifiedCall(confirm_url=url, status="subscription_confirmed")
    if kind == "UnsubscribeConfirmation":
        return VerifiedCall(status="ignored")
    events = ses.parse_ses_message(message.get("Message"))
    return VerifiedCall(
        events=events,
        replay_token=str(message.get("MessageId") or "") or None,
        replay_ttl=SNS_REPLAY_TTL,
        duplicate_is_ok=True,
        status="ok" if events else "ignored",
    )


# --- applying events ----------------------------------------------------------------------


class ProviderFeedbackService:
    """Applies verified events of one workspace in the caller's transaction."""

    def __init__(
        self, session: AsyncSession, workspace_id: uuid.UUID, now: datetime, settings: Settings
    ) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.now = now
        self.policy = effects.SoftBouncePolicy.from_settings(settings)
        self.providers = ProviderRepository(session, workspace_id)

    async def confirmed(self, provider: str) -> WebhookAnswer:
        await self.providers.mark_subscription_confirmed(provider, self.now)
        return WebhookAnswer(status="subscription_confirmed")

    async def ingest(self, provider: str, call: VerifiedCall) -> WebhookAnswer:
        if call.replay_token is not None:
            fresh = await self.providers.remember(
                provider, call.replay_token, now=self.now, expires_at=self.now + call.replay_ttl
            )
            if not fresh:
                if call.duplicate_is_ok:
                    return WebhookAnswer(status="duplicate")
                raise WebhookReplayed("this signed call was accepted before (a replay)")
        by_ref = await self.providers.deliveries_by_id(
            event.delivery_ref for event in call.events if event.delivery_ref
        )
        by_message_id = await self.providers.deliveries_by_message_id(
            event.message_id for event in call.events if event.message_id
        )
        applied = unchanged = unmatched = 0
        engagement: list[dict[str, Any]] = []
        for event in call.events:
            delivery = (by_ref.get(event.delivery_ref) if event.delivery_ref else None) or (
                by_message_id.get(event.message_id) if event.message_id else None
            )
            if delivery is None or not _same_address(event.email, delivery.email):
                unmatched += 1
                continue
            if event.kind in ("open", "click"):
                engagement.append(self._engagement(event, delivery))
                applied += 1
            elif await self._apply(event, delivery):
                applied += 1
            else:
                unchanged += 1
        await record_many(self.session, engagement)
        if call.events:
            await self.providers.count_events(
                provider,
                received=len(call.events),
                applied=applied,
                unchanged=unchanged,
                unmatched=unmatched,
                now=self.now,
            )
        return WebhookAnswer(
            status=call.status,
            received=len(call.events),
            applied=applied,
            unchanged=unchanged,
            unmatched=unmatched,
        )

    async def _apply(self, event: ProviderEvent, delivery: Delivery) -> bool:
        detail = _detail(event)
        args = (self.session, self.workspace_id, delivery, detail)
        if event.kind == "delivered":
            return await effects.delivered(*args, now=self.now)
        if event.kind == "bounce_hard":
            # The provider says permanent; a policy refusal (5.7.x) still suppresses
            # nobody (DESIGN.md, "Outcomes").
            if detail.status and effects.bounce_kind(detail.status, detail.diagnostic) == "policy":
                return await effects.failed(*args, now=self.now)
            return await effects.hard_bounce(*args, now=self.now)
        if event.kind == "bounce_soft":
            return await effects.soft_bounce(*args, now=self.now, policy=self.policy)
        if event.kind == "complaint":
            return await effects.complaint(*args, now=self.now)
        return await effects.unsubscribe(*args, now=self.now)

    def _engagement(self, event: ProviderEvent, delivery: Delivery) -> dict[str, Any]:
        """An ``email.opened``/``email.clicked`` row shaped like the tracking endpoints'
        (so analytics counts it the same way), marked with its source."""
        data: dict[str, Any] = {
            "send_id": str(delivery.send_id),
            "source": event.provider,
            "user_agent": event.details.get("user_agent"),
            "ip": event.details.get("ip"),
        }
        if event.kind == "click" and event.details.get("url"):
            data["url"] = event.details["url"]
            data["link_id"] = link_id(event.details["url"])
        return {
            "workspace_id": self.workspace_id,
            "type": "email.opened" if event.kind == "open" else "email.clicked",
            "contact_id": delivery.contact_id,
            "resource_type": "delivery",
            "resource_id": delivery.id,
            "data": data,
            "occurred_at": self.now,
        }


def _same_address(reported: str | None, ours: str) -> bool:
    """A provider event about another address than the delivery's is not applied: the
    effect would land on the wrong person."""
    return reported is None or reported.strip().lower() == ours.strip().lower()


def _detail(event: ProviderEvent) -> effects.Detail:
    details = event.details
    data: dict[str, Any] = {
        key: details[key]
        for key in ("event_type", "bounce_type", "bounce_subtype", "feedback_type", "code")
        if key in details
    }
    if "bounce_type" in data:
        data["provider_bounce_type"] = data.pop("bounce_type")
    if event.provider_event_id:
        data["provider_event_id"] = event.provider_event_id
    if event.occurred_at is not None:
        data["reported_at"] = event.occurred_at.isoformat()
    return effects.Detail(
        source=event.provider,
        status=details.get("status"),
        diagnostic=details.get("diagnostic"),
        data=data,
    )
