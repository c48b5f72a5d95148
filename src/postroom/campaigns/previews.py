"""Before sending: the audience now (size and locale coverage) and test sends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from postroom.campaigns.content import TEST_PREFIX, ContentGone, freeze
from postroom.campaigns.schemas import MAX_TEST_RECIPIENTS, TestSendIn
from postroom.campaigns.service import CampaignService
from postroom.contacts.audience import Audience
from postroom.contacts.audience_service import AudienceService
from postroom.contacts.contact_fields import FieldError, normalize_email
from postroom.delivery.sends import Recipient, SendSpec, create_send, enqueue
from postroom.errors import FieldProblem, ValidationFailed
from postroom.models.campaigns import Campaign
from postroom.models.contacts import Contact
from postroom.models.delivery import PRIORITY_TEST
from postroom.templates.locales import pick_version
from postroom.templates.repository import TemplateRepository


@dataclass(slots=True)
class AudienceView:
    size: int
    locales: dict[str, int]
    coverage: dict[str, str | None]
    uncovered: int


async def audience_view(service: CampaignService, campaign_id: uuid.UUID) -> AudienceView:
    """Audience size now, contacts per locale, and which template locale each gets."""
    campaign = await service.get(campaign_id)
    preview = await AudienceService(service.session, service.workspace_id, service.now).preview(
        Audience.model_validate(campaign.audience)
    )
    coverage: dict[str, str | None] = {}
    uncovered = 0
    versions, default = await _published_locales(service, campaign)
    for locale, count in preview.locales.items():
        if versions is None:
            coverage[locale] = None  # inline content: one version for everybody
            continue
        contact_locale = None if locale == "unknown" else locale
        exact = pick_version(versions, contact_locale, "\x00")
        chosen = exact or pick_version(versions, None, default)
        coverage[locale] = chosen.locale if chosen else None
        if exact is None:
            uncovered += count
    return AudienceView(preview.count, preview.locales, coverage, uncovered)


async def _published_locales(
    service: CampaignService, campaign: Campaign
) -> tuple[list[Any] | None, str]:
    content = campaign.content
    if "inline" in content:
        return None, ""
    try:
        frozen = await freeze(service.session, service.workspace_id, content, None)
    except ContentGone:
        return [], "en"
    templates = TemplateRepository(service.session, service.workspace_id)
    versions = []
    for version_id in frozen["versions"].values():
        version = await templates.version(
            uuid.UUID(frozen["template_id"]), uuid.UUID(str(version_id))
        )
        if version is not None:
            versions.append(version)
    return versions, str(frozen["default_locale"])


async def send_tests(
    service: CampaignService, campaign_id: uuid.UUID, body: TestSendIn
) -> list[uuid.UUID]:
    """One send of kind ``test`` per address (priority ``test``, no campaign id, so
    never in the campaign's stats and never blocking its real send)."""
    campaign = await service.get(campaign_id)
    if not 1 <= len(body.emails) <= MAX_TEST_RECIPIENTS:
        raise ValidationFailed.single(
            "emails",
            f"give 1 to {MAX_TEST_RECIPIENTS} addresses (got {len(body.emails)})",
            "test_recipients",
        )
    problems: list[FieldProblem] = []
    emails: list[str] = []
    for i, raw in enumerate(body.emails):
        try:
            emails.append(normalize_email(raw)[0])
        except FieldError as error:
            message = str(error).removeprefix("email: ")
            problems.append(FieldProblem(f"emails.{i}", message, "invalid_email"))
    if problems:
        raise ValidationFailed(problems, "some test addresses are invalid")
    contact_id = None
    if body.contact_id is not None:
        found = await service.session.execute(
            select(Contact.id).where(
                Contact.id == body.contact_id, Contact.workspace_id == service.workspace_id
            )
        )
        if found.first() is None:
            raise ValidationFailed.single(
                "contact_id", f"no contact {body.contact_id} in this workspace", "not_found"
            )
        contact_id = body.contact_id
    content = await service.ready(campaign)
    content["subject_prefix"] = TEST_PREFIX
    send_ids = []
    for email in emails:
        send = await create_send(
            service.session,
            service.workspace_id,
            SendSpec(
                kind="test",
                content=content,
                from_email=campaign.from_email,
                from_name=campaign.from_name,
                reply_to=campaign.reply_to,
                purpose="marketing",
                priority=PRIORITY_TEST,
                track_opens=False,
                track_clicks=False,
                tags=list(campaign.tags),
                metadata={"test_of_campaign": str(campaign.id)},
            ),
            service.now,
        )
        variables = dict(body.data) if contact_id is None else None
        await enqueue(service.session, send, [Recipient(email, contact_id, variables)], service.now)
        send_ids.append(send.id)
    return send_ids
