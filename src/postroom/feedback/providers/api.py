"""Routes: ``/v1/feedback-providers[/{provider}]`` (per-workspace webhook credentials)
and the public ``POST /webhooks/{provider}/{workspace_id}`` the providers call.

The workspace is in the webhook's path because every check depends on it (its SendGrid
key, its Mailgun signing key, its Postmark password, its SNS topics) and because an SNS
subscription confirmation names no delivery. The id is not a secret: nothing is believed
before the provider's signature or credentials are checked against that workspace's.
"""

from __future__ import annotations

import uuid
from typing import Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from postroom.context import AppContext
from postroom.errors import PayloadTooLarge
from postroom.feedback.providers import ses
from postroom.feedback.providers.events import PROVIDERS, WebhookUnauthenticated
from postroom.feedback.providers.schemas import (
    ProviderCredentialsIn,
    ProviderCredentialsList,
    ProviderCredentialsOut,
    ProviderStats,
    WebhookAnswer,
)
from postroom.feedback.providers.service import (
    ProviderCredentialService,
    ProviderFeedbackService,
    provider_name,
    verify_call,
)
from postroom.http.access import public, requires
from postroom.http.deps import Ctx, Session, WorkspaceId
from postroom.http.problems import problem_response
from postroom.http.routing import ApiRoute
from postroom.logging import get_logger
from postroom.models.providers import FeedbackProvider

router = APIRouter(route_class=ApiRoute, tags=["feedback providers"])
log = get_logger(__name__)

# SendGrid posts batches of events; a few MB is far more than one batch.
MAX_WEBHOOK_BYTES: Final = 5 * 1024 * 1024


def sns_client(request: Request) -> ses.SnsClient:
    """The process's SNS client (its certificate cache lives as long as the app). Tests
    put their own on ``app.state.sns_client`` with a fetcher that never leaves the
    machine."""
    client: ses.SnsClient | None = getattr(request.app.state, "sns_client", None)
    if client is None:
        client = ses.SnsClient(ses.HttpxFetcher())
        request.app.state.sns_client = client
    return client


def webhook_url(ctx: AppContext, provider: str, workspace_id: uuid.UUID) -> str:
    return f"{ctx.settings.public_base_url}/webhooks/{provider}/{workspace_id}"


def credentials_out(ctx: AppContext, row: FeedbackProvider) -> ProviderCredentialsOut:
    return ProviderCredentialsOut(
        provider=row.provider,
        webhook_url=webhook_url(ctx, row.provider, row.workspace_id),
        topic_arns=list(row.topic_arns or []),
        public_key=row.public_key,
        username=row.username,
        secret_set=row.secret is not None,
        subscription_confirmed_at=row.subscription_confirmed_at,
        stats=ProviderStats(
            received=row.events_received,
            applied=row.events_applied,
            unchanged=row.events_unchanged,
            unmatched=row.events_unmatched,
            last_event_at=row.last_event_at,
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def credential_service(
    session: AsyncSession, workspace_id: uuid.UUID, ctx: AppContext
) -> ProviderCredentialService:
    return ProviderCredentialService(session, workspace_id, ctx.clock.now(), ctx.secret_box)


@router.get("/v1/feedback-providers", **requires("inbound:read"))
async def list_providers(
    session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ProviderCredentialsList:
    """The providers configured for this workspace (at most one row per provider)."""
    rows = await credential_service(session, workspace_id, ctx).list()
    return ProviderCredentialsList(data=[credentials_out(ctx, row) for row in rows])


@router.get("/v1/feedback-providers/{provider}", **requires("inbound:read"))
async def get_provider(
    provider: str, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> ProviderCredentialsOut:
    """One provider's settings, webhook URL and counters; secrets are never shown."""
    return credentials_out(ctx, await credential_service(session, workspace_id, ctx).get(provider))


@router.put(
    "/v1/feedback-providers/{provider}",
    responses={201: {"model": ProviderCredentialsOut, "description": "Credentials were added"}},
    **requires("inbound:write"),
)
async def put_provider(
    provider: str,
    body: ProviderCredentialsIn,
    session: Session,
    workspace_id: WorkspaceId,
    ctx: Ctx,
    response: Response,
) -> ProviderCredentialsOut:
    """Create (201) or replace (200) the credentials of ``provider`` (``ses``,
    ``sendgrid``, ``mailgun`` or ``postmark``); each takes its own fields (see the body
    schema). The answer's ``webhook_url`` is what to configure at the provider."""
    row, created = await credential_service(session, workspace_id, ctx).put(provider, body)
    response.status_code = 201 if created else 200
    return credentials_out(ctx, row)


@router.delete("/v1/feedback-providers/{provider}", status_code=204, **requires("inbound:write"))
async def delete_provider(
    provider: str, session: Session, workspace_id: WorkspaceId, ctx: Ctx
) -> Response:
    """Forget the credentials: the provider's calls are refused (401) from now on."""
    await credential_service(session, workspace_id, ctx).delete(provider)
    return Response(status_code=204)


@router.post(
    "/webhooks/{provider}/{workspace_id}",
    responses={200: {"model": WebhookAnswer}},
    **public(
        "provider event webhook: checked against the workspace's credentials (SNS "
        "signature + topic, SendGrid ECDSA, Mailgun HMAC, Postmark Basic)"
    ),
)
async def provider_webhook(
    provider: str, workspace_id: str, request: Request, session: Session, ctx: Ctx
) -> Response:
    """Delivery, bounce, complaint, open, click and unsubscribe events from ``ses`` (SNS),
    ``sendgrid``, ``mailgun`` or ``postmark``. 401 unsigned or unconfigured, 403 bad
    signature/credentials, stale or replayed, 400 malformed; events of unknown deliveries
    are answered 200 and counted as ``unmatched``."""
    name = provider_name(provider)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge(f"a webhook body is at most {MAX_WEBHOOK_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge(f"a webhook body is at most {MAX_WEBHOOK_BYTES} bytes")
    now = ctx.clock.now()
    try:
        workspace = uuid.UUID(workspace_id)
    except ValueError:
        workspace = None
    # Read the credentials and check the call (an SNS certificate may be fetched) before
    # the write transaction starts: on SQLite nobody waits on a network round trip.
    credentials = None
    if workspace is not None:
        async with ctx.db.read_sessions() as reader:
            credentials = await ProviderCredentialService(
                reader, workspace, now, ctx.secret_box
            ).credentials(name)
    if workspace is None or credentials is None:
        # The same answer for an unknown workspace and an unconfigured provider.
        raise WebhookUnauthenticated(f"no {name} credentials are configured for this workspace")
    try:
        call = await verify_call(credentials, request.headers, body, now, sns_client(request))
    except Exception as exc:
        log.info(
            "provider_webhook_refused",
            provider=name,
            workspace_id=str(workspace),
            reason=getattr(exc, "message", repr(exc)),
        )
        raise
    service = ProviderFeedbackService(session, workspace, now, ctx.settings)
    if call.confirm_url is not None:
        try:
            await sns_client(request).confirm(call.confirm_url)
        except ses.SubscriptionNotConfirmed as exc:
            log.warning(
                "sns_subscription_not_confirmed", workspace_id=str(workspace), error=str(exc)
            )
            return problem_response(
                502, "the SNS subscription could not be confirmed; SNS will retry"
            )
        answer = await service.confirmed(name)
    else:
        answer = await service.ingest(name, call)
    if answer.unmatched:
        log.info(
            "provider_webhook_unmatched",
            provider=name,
            workspace_id=str(workspace),
            unmatched=answer.unmatched,
        )
    return JSONResponse(answer.model_dump())


__all__ = ["PROVIDERS", "router"]
